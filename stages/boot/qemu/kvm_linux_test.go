package qemu

import (
	"os"
	"path/filepath"
	"testing"
)

func TestX86HardwareVirtReadsCPUFlags(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, cpuinfo string
		ok            bool
	}{
		{"intel", "processor\t: 0\nflags\t\t: fpu vme vmx sse2\n", true},
		{"amd", "processor\t: 0\nflags\t\t: fpu svm lm\n", true},
		// kvm_pvm sandboxes: /dev/kvm answers, the CPU has no VT.
		{"no VT", "processor\t: 0\nflags\t\t: fpu pni hypervisor\n", false},
		{"vmx only as part of a word", "flags\t\t: fpu vmxnot\n", false},
		{"no flags line", "processor\t: 0\n", false},
	} {
		path := filepath.Join(dir, tc.name)
		if err := os.WriteFile(path, []byte(tc.cpuinfo), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := x86HardwareVirt(path); (err == nil) != tc.ok {
			t.Errorf("%s: x86HardwareVirt = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

package qemu

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"syscall"
)

// ioctls of /dev/kvm (linux/kvm.h: _IO(KVMIO, n) with KVMIO 0xAE).
const (
	kvmGetAPIVersion = 0xAE00
	kvmCreateVM      = 0xAE01
	// kvmStableAPI is the only API version Linux has shipped since 2.6.22.
	kvmStableAPI = 12
)

// kvmCheck says why KVM cannot run guests here, or nil: on x86 the CPU has
// hardware virtualization, and /dev/kvm opens read-write, speaks the
// stable API and creates a VM. That cannot catch every broken setup, which
// is why AccelEnv and Config.Accel can force TCG.
func kvmCheck() error {
	if runtime.GOARCH == "amd64" || runtime.GOARCH == "386" {
		if err := x86HardwareVirt("/proc/cpuinfo"); err != nil {
			return err
		}
	}
	fd, err := syscall.Open("/dev/kvm", syscall.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open /dev/kvm: %w", err)
	}
	defer syscall.Close(fd)
	version, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), kvmGetAPIVersion, 0)
	if errno != 0 {
		return fmt.Errorf("/dev/kvm: KVM_GET_API_VERSION: %w", errno)
	}
	if version != kvmStableAPI {
		return fmt.Errorf("/dev/kvm: API version %d, want %d", version, kvmStableAPI)
	}
	vm, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), kvmCreateVM, 0)
	if errno != 0 {
		return fmt.Errorf("/dev/kvm: KVM_CREATE_VM: %w", errno)
	}
	syscall.Close(int(vm))
	return nil
}

// x86HardwareVirt checks the CPU flags for Intel VT-x (vmx) or AMD-V
// (svm), which kvm_intel and kvm_amd need. Without them a /dev/kvm that
// answers every ioctl comes from something else, such as kvm_pvm in some
// sandboxes, and it runs SeaBIOS but stalls a stock Linux kernel.
func x86HardwareVirt(cpuinfo string) error {
	f, err := os.Open(cpuinfo)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, value, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if !ok || string(bytes.TrimSpace(name)) != "flags" {
			continue
		}
		flags := bytes.Fields(value)
		if slices.ContainsFunc(flags, func(f []byte) bool { return string(f) == "vmx" || string(f) == "svm" }) {
			return nil
		}
		return errors.New("the CPU flags have neither vmx nor svm: no hardware virtualization for KVM")
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", cpuinfo, err)
	}
	return fmt.Errorf("%s has no flags line", cpuinfo)
}

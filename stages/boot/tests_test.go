package boot

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.starlark.net/starlark"

	"jetqa/schemas"
)

// tree writes files (path → content) below a fresh directory.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, content := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadTests(t *testing.T) {
	run := "def run():\n    pass\n"
	for _, tc := range []struct {
		name     string
		files    map[string]string
		settings map[string]string
		modules  []string
		errWant  string
	}{
		{
			name:     "modules in order, conditional on a setting",
			files:    map[string]string{"main.star": "loadtest('boot')\nif get_var('EXTRA'):\n    loadtest('console/extra.star')\n", "tests/boot.star": run, "tests/console/extra.star": run},
			settings: map[string]string{"EXTRA": "1"},
			modules:  []string{"boot", "extra"},
		},
		{
			name:    "setting absent",
			files:   map[string]string{"main.star": "loadtest('boot')\nif get_var('EXTRA'):\n    loadtest('extra')\n", "tests/boot.star": run},
			modules: []string{"boot"},
		},
		{name: "no main.star", files: map[string]string{"tests/boot.star": run}, errWant: "CASEDIR has no main.star"},
		{name: "syntax error in main.star", files: map[string]string{"main.star": "loadtest('boot'\n"}, errWant: "main.star:2"},
		{name: "syntax error in a module", files: map[string]string{"main.star": "loadtest('boot')\n", "tests/boot.star": "def run(:\n"}, errWant: "tests/boot.star:1"},
		{name: "unknown name in a module", files: map[string]string{"main.star": "loadtest('boot')\n", "tests/boot.star": "def run():\n    asert_screen('x')\n"}, errWant: "tests/boot.star:2:5: undefined: asert_screen"},
		{name: "module file missing", files: map[string]string{"main.star": "loadtest('nothere')\n"}, errWant: `loadtest("nothere")`},
		{name: "path leaving tests/", files: map[string]string{"main.star": "loadtest('../../etc/passwd')\n"}, errWant: "must stay inside tests/"},
		{name: "nothing scheduled", files: map[string]string{"main.star": "x = 1\n"}, errWant: "scheduled no test module"},
		{name: "a loop that never ends", files: map[string]string{"main.star": "while True:\n    pass\n"}, errWant: "main.star did not end within 10000000 steps"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tree(t, tc.files)
			mods, _, err := loadTests(context.Background(), dir, dir, tc.settings)
			if tc.errWant != "" {
				if err == nil || !strings.Contains(err.Error(), tc.errWant) {
					t.Fatalf("error %v, want one containing %q", err, tc.errWant)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, m := range mods {
				names = append(names, m.name)
			}
			if strings.Join(names, ",") != strings.Join(tc.modules, ",") {
				t.Errorf("modules %v, want %v", names, tc.modules)
			}
		})
	}
}

func TestMachineFromSettings(t *testing.T) {
	cfg := Config{QEMU: "qemu-system-x86_64", Accel: "auto", Forbidden: []string{"QEMU_APPEND"}}
	ready := func(settings, assets map[string]string) *schemas.JobReady {
		return &schemas.JobReady{Settings: settings, Assets: assets}
	}
	dir := t.TempDir()
	q, err := machineConfig(context.Background(), cfg, ready(map[string]string{"QEMURAM": "512", "QEMUCPUS": "2", "APPEND": "quiet",
		"NUMDISKS": "3", "HDDSIZEGB": "1", "HDDMODEL": "scsi-hd", "NICMODEL": "e1000", "QEMU_NO_KVM": "1", "BOOT_HDD_IMAGE": "1"},
		map[string]string{"ISO": "/c/t.iso", "HDD_1": "/c/a.qcow2", "HDD_2": "/c/b.img", "KERNEL": "/c/k"}), dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	blank := filepath.Join(dir, "blank-3.qcow2")
	if q.MemoryMiB != 512 || q.CPUs != 2 || q.ISO != "/c/t.iso" || q.Kernel != "/c/k" || q.Append != "quiet" ||
		strings.Join(q.HDDs, " ") != "/c/a.qcow2 /c/b.img "+blank || q.HDDModel != "scsi-hd" || q.NICModel != "e1000" ||
		q.Accel != "tcg" || q.BootFrom != "c" || q.CDModel != "ide-cd" {
		t.Errorf("config %+v", q)
	}
	if out, err := exec.Command("qemu-img", "info", blank).CombinedOutput(); err != nil || !strings.Contains(string(out), "virtual size: 1 GiB") {
		t.Errorf("blank disk: %v %s", err, out)
	}
	q, err = machineConfig(context.Background(), Config{}, ready(map[string]string{"QEMU_APPEND": "device virtio-rng-pci -smbios type=1,serial=x", "NICTYPE": "none"},
		map[string]string{"ISO": "/x"}), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(q.ExtraArgs, " ") != "-device virtio-rng-pci -smbios type=1,serial=x" || q.NICModel != "" || len(q.HDDs) != 1 {
		t.Errorf("QEMU_APPEND as openQA splits it, NICTYPE=none, one blank disk for an ISO: %+v", q)
	}
	for _, tc := range []struct {
		settings, assets map[string]string
		errWant          string
	}{
		{map[string]string{"QEMURAM": "lots"}, map[string]string{"ISO": "/x"}, `QEMURAM="lots": give a whole number from 64`},
		{map[string]string{"QEMUCPUS": "0"}, map[string]string{"ISO": "/x"}, `QEMUCPUS="0"`},
		{map[string]string{"QEMUCPU": "host; rm -rf /"}, map[string]string{"ISO": "/x"}, `QEMUCPU="host; rm -rf /"`},
		{map[string]string{"HDDMODEL": "floppy"}, map[string]string{"ISO": "/x"}, `HDDMODEL="floppy": use one of virtio-blk, ide-hd, scsi-hd, nvme`},
		{map[string]string{"NICTYPE": "tap"}, map[string]string{"ISO": "/x"}, `NICTYPE="tap"`},
		{map[string]string{"QEMUVGA": "matrox"}, map[string]string{"ISO": "/x"}, `QEMUVGA="matrox"`},
		{map[string]string{"ARCH": "riscv64"}, map[string]string{"ISO": "/x"}, `ARCH="riscv64"`},
		{map[string]string{"UEFI": "1", "UEFI_PFLASH_CODE": "/nonexistent/OVMF_CODE.fd", "UEFI_PFLASH_VARS": "/nonexistent/VARS.fd"}, map[string]string{"ISO": "/x"}, "UEFI_PFLASH_CODE=/nonexistent/OVMF_CODE.fd"},
		{map[string]string{"UEFI": "1", "UEFI_PFLASH_CODE": "/etc/passwd", "UEFI_PFLASH_VARS": "/etc/hostname"}, map[string]string{"ISO": "/x"}, "UEFI_PFLASH_CODE=/etc/passwd: give a firmware file of this worker's packages"},
		{map[string]string{"QEMU_APPEND": "device x"}, map[string]string{"ISO": "/x"}, "QEMU_APPEND=device x: this worker does not let jobs set QEMU_APPEND"},
		{map[string]string{"APPEND": "quiet"}, map[string]string{"ISO": "/x"}, "INITRD and APPEND need KERNEL"},
		{map[string]string{"NUMDISKS": "0"}, map[string]string{}, "nothing to boot"},
	} {
		if _, err := machineConfig(context.Background(), cfg, ready(tc.settings, tc.assets), t.TempDir(), nil); err == nil || !strings.Contains(err.Error(), tc.errWant) {
			t.Errorf("%v: error %v, want %q", tc.settings, err, tc.errWant)
		}
	}
}

func TestTimeoutsScaleWithTIMEOUT_SCALE(t *testing.T) {
	r := &runner{scale: 1.5}
	for _, tc := range []struct {
		arg  starlark.Value
		want time.Duration
	}{
		{starlark.MakeInt(10), 15 * time.Second},
		{starlark.Float(2.5), 3750 * time.Millisecond},
		{starlark.None, 45 * time.Second}, // the default, 30 s
	} {
		if got := r.timeout(tc.arg, 30); got != tc.want {
			t.Errorf("timeout(%v) = %s, want %s", tc.arg, got, tc.want)
		}
	}
	if got := seconds(starlark.MakeInt(7), 0); got != 7*time.Second {
		t.Errorf("seconds(7) = %s, unscaled", got)
	}
}

func TestMainStarStopsWithTheJob(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := tree(t, map[string]string{"main.star": "while True:\n    pass\n"})
	_, _, err := loadTests(ctx, dir, dir, nil)
	if err == nil || !strings.Contains(err.Error(), "the job was stopped") {
		t.Fatalf("main.star of a stopped job: %v", err)
	}
}

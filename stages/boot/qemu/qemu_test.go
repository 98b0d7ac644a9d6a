package qemu_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"image/png"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"jetqa/stages/boot/qemu"
)

// These tests run the real qemu-system-x86_64 under TCG. With no disk the
// machine stops in SeaBIOS at "No bootable device"; with testdata/echo.img
// it echoes keys and serial input back to the serial port, which shows
// that what we type is what the guest reads.

// testTimeout bounds each test; under TCG and -race a VM boots in ~1s.
const testTimeout = 60 * time.Second

func startVM(t *testing.T, ctx context.Context, cfg qemu.Config) *qemu.VM {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skipf("qemu-system-x86_64 is not installed: %v", err)
	}
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	cfg.Accel = "tcg"
	cfg.MemoryMiB = 128
	cfg.Log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	vm, err := qemu.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := vm.Stop(context.Background()); err != nil {
			t.Error(err)
		}
	})
	return vm
}

// echoDisk is a copy of testdata/echo.img padded to 1 MiB, which SeaBIOS
// needs to boot it from virtio-blk.
func echoDisk(t *testing.T) string {
	t.Helper()
	img, err := os.ReadFile("testdata/echo.img")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "echo.img")
	if err := os.WriteFile(path, append(img, make([]byte, 1<<20-len(img))...), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// waitDone fails the test unless the VM ends before ctx does.
func waitDone(t *testing.T, ctx context.Context, vm *qemu.VM) {
	t.Helper()
	select {
	case <-vm.Done():
	case <-ctx.Done():
		t.Fatalf("QEMU still running: %v", ctx.Err())
	}
}

// assertReaped checks that no process, not even a zombie, has QEMU's pid.
func assertReaped(t *testing.T, pid int) {
	t.Helper()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("QEMU pid %d still exists (kill -0: %v)", pid, err)
	}
}

func TestScreendumpShowsSeaBIOSTextMode(t *testing.T) {
	ctx := testContext(t)
	vm := startVM(t, ctx, qemu.Config{})
	if vm.Accel() != "tcg" {
		t.Errorf("Accel() = %q, want tcg", vm.Accel())
	}

	// Before the guest sets a mode QEMU shows a 640x480 notice; SeaBIOS
	// soon switches to 80x25 text, which QEMU renders as 720x400. No
	// event says the screen changed, so look again every 100ms.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var dumps int
	for {
		data, err := vm.Screendump(ctx)
		if err != nil {
			t.Fatal(err)
		}
		dumps++
		img, err := png.Decode(bytes.NewReader(data))
		if err != nil {
			t.Fatalf("screendump %d is no PNG: %v", dumps, err)
		}
		size := img.Bounds().Size()
		if size.X < 320 || size.Y < 200 || size.X > 4096 || size.Y > 4096 {
			t.Fatalf("screendump %d is %v, not a plausible screen", dumps, size)
		}
		if size.X == 720 && size.Y == 400 {
			t.Logf("text mode after %d screendumps", dumps)
			break
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			t.Fatalf("screen never became 720x400 text mode, last %v", size)
		}
	}

	for _, key := range []string{"esc", "ret", "spc", "tab", "backspace", "up", "f1", "alt-f2", "a", "A", "minus", "|", "shift-tab"} {
		if err := vm.SendKey(ctx, key); err != nil {
			t.Errorf("SendKey(%q): %v", key, err)
		}
	}
	if err := vm.SendKey(ctx, "hyper-x"); err == nil || !strings.Contains(err.Error(), "hyper") {
		t.Errorf(`SendKey("hyper-x") = %v, want an error naming the key`, err)
	}

	pid := vm.PID()
	if err := vm.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if !errors.Is(vm.Err(), qemu.ErrStopped) {
		t.Errorf("Err() = %v, want ErrStopped", vm.Err())
	}
	assertReaped(t, pid)
	if err := vm.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if _, err := vm.Screendump(ctx); err == nil {
		t.Error("Screendump after Stop succeeded")
	}
}

func TestTypedKeysAndSerialInputReachTheGuest(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	vm := startVM(t, ctx, qemu.Config{Dir: dir, HDDs: []string{echoDisk(t)}})
	serial := vm.Serial()

	_, end, err := serial.WaitFor(ctx, regexp.MustCompile(`jetqa echo ready\r\n`), 0)
	if err != nil {
		t.Fatal(err)
	}

	// The BIOS turns scancodes into ASCII with the US layout, so this
	// checks every shifted character of TypeString. Enter arrives as CR.
	typed := "Hello, World! |>~_:$\"'`{}[]()<>?/\\#@%^&*+=;.- 0123456789\n"
	if err := vm.TypeString(ctx, typed, 0); err != nil {
		t.Fatal(err)
	}
	want := strings.ReplaceAll(typed, "\n", "\r")
	match, end, err := serial.WaitFor(ctx, regexp.MustCompile(regexp.QuoteMeta(want)), end)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(serial.Bytes(end - int64(len(match)))); got != want {
		t.Errorf("guest echoed %q after typing, want exactly %q", got, want)
	}

	if err := vm.WriteSerial(ctx, []byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := serial.WaitFor(ctx, regexp.MustCompile(`ping\n`), end); err != nil {
		t.Fatal(err)
	}

	if err := vm.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	// QEMU's own log of the serial port has the same output.
	logged, err := os.ReadFile(filepath.Join(dir, qemu.SerialLogFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(logged, serial.Bytes(0)) {
		t.Errorf("%s = %q, SerialLog has %q", qemu.SerialLogFile, logged, serial.Bytes(0))
	}
	// A closed log answers at once instead of at the deadline.
	if _, _, err := serial.WaitFor(ctx, regexp.MustCompile(`never`), 0); !errors.Is(err, qemu.ErrSerialClosed) {
		t.Errorf("WaitFor after Stop = %v, want ErrSerialClosed", err)
	}
}

func TestGuestRebootEndsTheVM(t *testing.T) {
	ctx := testContext(t)
	vm := startVM(t, ctx, qemu.Config{HDDs: []string{echoDisk(t)}})
	if _, _, err := vm.Serial().WaitFor(ctx, regexp.MustCompile(`ready`), 0); err != nil {
		t.Fatal(err)
	}
	// SeaBIOS resets the machine on ctrl-alt-delete; -no-reboot makes
	// QEMU exit instead.
	if err := vm.SendKey(ctx, "ctrl-alt-delete"); err != nil {
		t.Fatal(err)
	}
	waitDone(t, ctx, vm)
	var exit *qemu.ExitError
	if !errors.As(vm.Err(), &exit) || exit.Shutdown != "guest-reset" || exit.Err != nil {
		t.Fatalf("Err() = %#v, want an ExitError for a guest-reset with a clean exit", vm.Err())
	}
	if _, _, err := vm.Serial().WaitFor(ctx, regexp.MustCompile(`never`), 0); !errors.Is(err, qemu.ErrSerialClosed) || !strings.Contains(err.Error(), "guest-reset") {
		t.Errorf("WaitFor after exit = %v, want ErrSerialClosed saying guest-reset", err)
	}
}

func TestCancellingStartContextKillsQEMU(t *testing.T) {
	ctx := testContext(t)
	vmCtx, cancel := context.WithCancel(ctx)
	vm := startVM(t, vmCtx, qemu.Config{})
	pid := vm.PID()
	cancel()
	waitDone(t, ctx, vm)
	if !errors.Is(vm.Err(), context.Canceled) {
		t.Errorf("Err() = %v, want context.Canceled", vm.Err())
	}
	assertReaped(t, pid)
}

func TestStartFailuresNameTheCause(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skipf("qemu-system-x86_64 is not installed: %v", err)
	}
	ctx := testContext(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.iso")
	for _, tc := range []struct {
		name string
		cfg  qemu.Config
		want string
	}{
		{"no run directory", qemu.Config{}, "Dir"},
		{"unknown accelerator", qemu.Config{Dir: dir, Accel: "xen"}, `"xen"`},
		{"binary not found", qemu.Config{Dir: dir, Binary: "qemu-system-nonesuch"}, "qemu-system-nonesuch"},
		{"ISO not found", qemu.Config{Dir: dir, ISO: missing}, missing},
		{"HDD not found", qemu.Config{Dir: dir, HDDs: []string{missing}}, missing},
		{"initrd without kernel", qemu.Config{Dir: dir, Initrd: missing}, "Kernel"},
		// QEMU exits at once; its stderr says why.
		{"QEMU rejects an option", qemu.Config{Dir: dir, ExtraArgs: []string{"-no-such-option"}}, "-no-such-option: invalid option"},
		{"QEMU cannot read the ISO", qemu.Config{Dir: dir, ISO: dir}, dir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Accel = cmp.Or(tc.cfg.Accel, "tcg")
			vm, err := qemu.Start(ctx, tc.cfg)
			if err == nil {
				vm.Stop(ctx)
				t.Fatal("Start succeeded")
			}
			t.Log(err)
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestStartGivesUpInTime(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skipf("qemu-system-x86_64 is not installed: %v", err)
	}
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := qemu.Start(cancelled, qemu.Config{Dir: t.TempDir(), Accel: "tcg"})
	t.Log(err)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Start with a cancelled context = %v, want context.Canceled", err)
	}
	_, err = qemu.Start(t.Context(), qemu.Config{Dir: t.TempDir(), Accel: "tcg", StartTimeout: time.Nanosecond})
	t.Log(err)
	if err == nil || !strings.Contains(err.Error(), "within 1ns") {
		t.Errorf("Start with a 1ns StartTimeout = %v, want an error naming the timeout", err)
	}
}

func TestKVMUsableAnswers(t *testing.T) {
	t.Logf("KVMUsable() = %v", qemu.KVMUsable())
}

// What os-autoinst's post_fail_hooks and machine controls ask for: the
// memory as an ELF core, a disk copied while the machine runs, the CPUs
// frozen and continued, the network cable pulled.
func TestMemoryDumpDiskCopyFreezeAndLink(t *testing.T) {
	ctx := testContext(t)
	disk := echoDisk(t)
	vm := startVM(t, ctx, qemu.Config{HDDs: []string{disk}, NICModel: "e1000"})
	_, end, err := vm.Serial().WaitFor(ctx, regexp.MustCompile(`jetqa echo ready\r\n`), 0)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	core := filepath.Join(dir, "memory")
	if err := vm.DumpMemory(ctx, core); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(core)
	if err != nil || !bytes.HasPrefix(data, []byte("\x7fELF")) || len(data) < 64<<20 {
		t.Errorf("memory dump: %d bytes starting %.8q, %v; want an ELF core of the guest's 128 MiB", len(data), data, err)
	}
	copied := filepath.Join(dir, "disk.qcow2")
	if err := vm.CopyDisk(ctx, 1, copied); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "compare", "-U", disk, copied).CombinedOutput(); err != nil {
		t.Errorf("qemu-img compare of the disk and its copy: %v: %s", err, out)
	}
	if err := vm.CopyDisk(ctx, 2, copied); err == nil {
		t.Error("a copy of a second disk the machine does not have: no error")
	}
	if err := vm.Freeze(ctx); err != nil {
		t.Fatal(err)
	}
	if err := vm.Continue(ctx); err != nil {
		t.Fatal(err)
	}
	if err := vm.WriteSerial(ctx, []byte("after\n")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := vm.Serial().WaitFor(ctx, regexp.MustCompile(`after\n`), end); err != nil {
		t.Fatalf("the guest after freeze and continue: %v", err)
	}
	if err := vm.SetLink(ctx, qemu.NetworkName, false); err != nil {
		t.Fatal(err)
	}
	if err := vm.SetLink(ctx, "no-such-network", true); err == nil {
		t.Error("set_link of a network the machine does not have: no error")
	}
}

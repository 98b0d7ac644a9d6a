package qemu_test

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"jetqa/stages/boot/qemu"
)

// A QEMU that stops answering (here: stopped with SIGSTOP) makes the
// command waiting on it fail with a reason after the QMP timeout, even
// with no deadline of its own, and stopping the VM still kills and reaps
// it.
func TestAHungQEMUIsToldNotWaitedFor(t *testing.T) {
	defer func(was time.Duration) { *qemu.QMPTimeout = was }(*qemu.QMPTimeout)
	*qemu.QMPTimeout = 2 * time.Second
	ctx := testContext(t)
	vm := startVM(t, ctx, qemu.Config{})
	pid := vm.PID()
	if _, err := vm.Screendump(ctx); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	_, err := vm.Screendump(context.Background())
	if err == nil || !strings.Contains(err.Error(), "QEMU did not answer screendump within 2s: it hangs") {
		t.Fatalf("screendump of a stopped QEMU: %v", err)
	}
	stop, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_ = vm.Stop(stop)
	waitDone(t, ctx, vm)
	assertReaped(t, pid)
}

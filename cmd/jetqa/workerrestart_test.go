package main

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"jetqa/schemas"
)

// A worker killed while its job runs and started again at once, long
// before the worker timeout (2 minutes here): the job ends incomplete,
// saying the instance restarted, and the instance runs the next job. The
// job must not stay running for good: the restarted instance registers
// and heartbeats, so nobody declares it offline.
func TestAWorkerRestartedMidJobEndsItsJob(t *testing.T) {
	testos := testosDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	sp := startServerProcess(t, ctx, "--matchers", "1", "--worker-timeout", "2m")
	worker := []string{"worker", "--nats", sp.natsURL, "--creds", sp.issueWorker(t, ctx, "wa"), "--host", "wa", "--data", t.TempDir(),
		"--accel", "tcg", "--heartbeat", "500ms", "--asset-paths", testosPath()}
	wa := startProcess(t, "wa", worker...)
	s := sp.s

	job := s.post(t, demoSettings(testos))
	s.waitFor(t, job, 2*time.Minute, "a module started", isKind[*schemas.ModuleStarted])
	vms := childrenNamed(wa.cmd.Process.Pid, "qemu-system")
	if err := wa.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-wa.ended
	_ = wa.cmd.Wait()
	startProcess(t, "wa again", worker...)

	fin := s.finish(t, job, 90*time.Second)
	if fin.Result != schemas.ResultIncomplete || !strings.Contains(fin.Reason, "restarted") {
		t.Fatalf("job %d: %s (%s), want incomplete because the instance restarted", job, fin.Result, fin.Reason)
	}
	for _, pid := range vms {
		if !processGone(pid) {
			t.Errorf("QEMU %d of the killed worker still runs", pid)
		}
	}
	auditJob(t, s, job)
	next := s.post(t, demoSettings(testos))
	if fin := s.finish(t, next, 5*time.Minute); fin.Result != schemas.ResultPassed {
		t.Fatalf("the next job %d: %s (%s), want passed", next, fin.Result, fin.Reason)
	}
}

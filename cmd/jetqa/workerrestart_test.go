package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// A worker killed while its job runs and started again at once, long
// before the worker timeout (2 minutes here): the job ends incomplete,
// saying the instance restarted, and the instance runs the next job. The
// job must not stay running for good: the restarted instance registers
// and heartbeats, so nobody declares it offline.
func TestAWorkerRestartedMidJobEndsItsJob(t *testing.T) {
	testos := testosDir(t)
	ports := freePorts(t, 2)
	data := t.TempDir()
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", ports[0])
	server := startProcess(t, "server", "server", "--data", data, "--listen", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--nats-port", fmt.Sprint(ports[0]), "--matchers", "1", "--worker-timeout", "2m")
	server.waitLine(t, 3*time.Minute, "jetqa server is up")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	id, err := streams.LoadIdentity(filepath.Join(data, adminCreds))
	if err != nil {
		t.Fatal(err)
	}
	admin := streams.Dial{URLs: natsURL, Identity: &id}
	bus, err := streams.ConnectTo(ctx, admin, "worker-restart-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	creds := filepath.Join(t.TempDir(), "wa.creds")
	if err := issueCredentials(ctx, bus, admin, streams.RoleWorker, "wa", 1, creds); err != nil {
		t.Fatal(err)
	}
	workerData := t.TempDir()
	worker := []string{"worker", "--nats", natsURL, "--creds", creds, "--host", "wa", "--data", workerData, "--accel", "tcg", "--heartbeat", "500ms", "--asset-paths", testosPath()}
	wa := startProcess(t, "wa", worker...)
	s := &system{api: fmt.Sprintf("http://127.0.0.1:%d", ports[1]), bus: bus}
	s.key = addAPIKey(t, bus, s.api, filepath.Join(t.TempDir(), clientConf))

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

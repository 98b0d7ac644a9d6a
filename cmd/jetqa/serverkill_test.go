package main

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// The server process is killed (SIGKILL) at several points of a job a
// worker process runs, stays down for longer than the worker timeout,
// and is started again on its data: the worker reconnects, and the job
// ends with one result, passed, with nothing lost or doubled; the worker
// is not taken for dead for the server's own outage.
func TestTheServerKilledMidJobComesBack(t *testing.T) {
	testos := testosDir(t)
	for _, point := range []struct {
		name string
		at   func(schemas.Payload) bool
	}{
		{"assigned", isKind[*schemas.JobAssigned]},
		{"module started", isKind[*schemas.ModuleStarted]},
		{"tests finished", isKind[*schemas.TestsFinished]},
	} {
		t.Run(point.name, func(t *testing.T) { killServerAt(t, testos, point.at) })
	}
}

func killServerAt(t *testing.T, testos string, at func(schemas.Payload) bool) {
	ports := freePorts(t, 2)
	data := t.TempDir()
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", ports[0])
	args := []string{"server", "--data", data, "--listen", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--nats-port", fmt.Sprint(ports[0]), "--matchers", "1", "--worker-timeout", "5s"}
	server := startProcess(t, "server", args...)
	server.waitLine(t, 3*time.Minute, "jetqa server is up")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	id, err := streams.LoadIdentity(filepath.Join(data, adminCreds))
	if err != nil {
		t.Fatal(err)
	}
	admin := streams.Dial{URLs: natsURL, Identity: &id}
	bus, err := streams.ConnectTo(ctx, admin, "server-kill-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	creds := filepath.Join(t.TempDir(), "wk.creds")
	if err := issueCredentials(ctx, bus, admin, streams.RoleWorker, "wk", 1, creds); err != nil {
		t.Fatal(err)
	}
	startProcess(t, "wk", "worker", "--nats", natsURL, "--creds", creds, "--data", t.TempDir(), "--accel", "tcg", "--heartbeat", "500ms", "--asset-paths", testosPath())
	s := &system{api: fmt.Sprintf("http://127.0.0.1:%d", ports[1]), bus: bus}
	s.key = addAPIKey(t, bus, s.api, filepath.Join(t.TempDir(), clientConf))
	job := s.post(t, demoSettings(testos))
	s.waitFor(t, job, 2*time.Minute, "the point to kill the server at", at)

	if err := server.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-server.ended
	_ = server.cmd.Wait()
	t.Log("server killed; down for 10 s, twice the worker timeout")
	down := time.NewTimer(10 * time.Second)
	select {
	case <-down.C:
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	server = startProcess(t, "server again", args...)
	server.waitLine(t, 3*time.Minute, "jetqa server is up")

	fin := s.finish(t, job, 5*time.Minute)
	if audited := auditJob(t, s, job); audited.Result != schemas.ResultPassed {
		t.Fatalf("job %d: %s (%s)", job, fin.Result, fin.Reason)
	}
}

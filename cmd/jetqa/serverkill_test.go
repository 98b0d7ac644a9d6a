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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	sp := startServerProcess(t, ctx, "--matchers", "1", "--worker-timeout", "5s")
	startProcess(t, "wk", "worker", "--nats", sp.natsURL, "--creds", sp.issueWorker(t, ctx, "wk"), "--data", t.TempDir(), "--accel", "tcg", "--heartbeat", "500ms", "--asset-paths", testosPath())
	s := sp.s
	job := s.post(t, demoSettings(testos))
	s.waitFor(t, job, 2*time.Minute, "the point to kill the server at", at)

	if err := sp.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-sp.ended
	_ = sp.cmd.Wait()
	t.Log("server killed; down for 10 s, twice the worker timeout")
	down := time.NewTimer(10 * time.Second)
	select {
	case <-down.C:
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	again := startProcess(t, "server again", sp.args...)
	again.waitLine(t, 3*time.Minute, "jetqa server is up")

	fin := s.finish(t, job, 5*time.Minute)
	if audited := auditJob(t, s, job); audited.Result != schemas.ResultPassed {
		t.Fatalf("job %d: %s (%s)", job, fin.Result, fin.Reason)
	}
}

// serverProcess is `jetqa server` run as a child process on ports of its
// own, with the operator's bus and an API key for the test.
type serverProcess struct {
	*process
	args    []string // to start it again on its data
	natsURL string
	admin   streams.Dial
	s       *system
}

// startServerProcess starts `jetqa server` with more flags and waits until
// it is up; its bus closes at the end of the test.
func startServerProcess(t *testing.T, ctx context.Context, flags ...string) *serverProcess {
	t.Helper()
	ports := freePorts(t, 2)
	data := t.TempDir()
	sp := &serverProcess{natsURL: fmt.Sprintf("nats://127.0.0.1:%d", ports[0])}
	sp.args = append([]string{"server", "--data", data, "--listen", fmt.Sprintf("127.0.0.1:%d", ports[1]), "--nats-port", fmt.Sprint(ports[0])}, flags...)
	sp.process = startProcess(t, "server", sp.args...)
	sp.waitLine(t, 3*time.Minute, "jetqa server is up")
	id, err := streams.LoadIdentity(filepath.Join(data, adminCreds))
	if err != nil {
		t.Fatal(err)
	}
	sp.admin = streams.Dial{URLs: sp.natsURL, Identity: &id}
	bus, err := streams.ConnectTo(ctx, sp.admin, t.Name(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(bus.Close)
	sp.s = &system{api: fmt.Sprintf("http://127.0.0.1:%d", ports[1]), bus: bus}
	sp.s.key = addAPIKey(t, bus, sp.s.api, filepath.Join(t.TempDir(), clientConf))
	return sp
}

// issueWorker issues credentials for worker host name, one instance, and
// returns their file.
func (sp *serverProcess) issueWorker(t *testing.T, ctx context.Context, name string) string {
	t.Helper()
	creds := filepath.Join(t.TempDir(), name+".creds")
	if err := issueCredentials(ctx, sp.s.bus, sp.admin, streams.RoleWorker, name, 1, creds); err != nil {
		t.Fatal(err)
	}
	return creds
}

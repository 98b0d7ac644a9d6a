package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// TestOneWorkerHostServesTwoServers runs one worker process for two jetqa
// servers (openQA's HOST = a b), each with its own credentials: a job
// posted to each passes, and the host's one instance runs them one after
// the other, never both at once.
func TestOneWorkerHostServesTwoServers(t *testing.T) {
	testos := testosDir(t)
	a, b := startServer(t), startServer(t)
	config := filepath.Join(t.TempDir(), "workers.ini")
	writeFile(t, config, fmt.Sprintf("[global]\nHOST = %s %s\nWORKER_CLASS = qemu_x86_64\n\n[%s]\nCREDENTIALS = %s\n\n[%s]\nCREDENTIALS = %s\n",
		a.nats, b.nats, a.nats, a.issue(t, streams.RoleWorker, "wa"), b.nats, b.issue(t, streams.RoleWorker, "wa")))
	worker := exec.Command(os.Args[0], "worker", "--config", config, "--data", t.TempDir(), "--accel", "tcg", "--heartbeat", "500ms", "--asset-paths", testosPath())
	worker.Env = append(os.Environ(), "JETQA_RUN_MAIN=1")
	worker.Stderr = systemLog(t)
	if err := worker.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = worker.Process.Kill()
		_ = worker.Wait()
	})
	ja, jb := a.post(t, demoSettings(testos)), b.post(t, demoSettings(testos))
	type run struct{ started, finished time.Time }
	runs := map[string]run{}
	for name, s := range map[string]*system{"a": a, "b": b} {
		id := map[string]int64{"a": ja, "b": jb}[name]
		fin := s.finish(t, id, 5*time.Minute)
		if fin.Result != schemas.ResultPassed {
			t.Fatalf("server %s, job %d: %s (%s)", name, id, fin.Result, fin.Reason)
		}
		agg, err := s.bus.LoadJob(t.Context(), id)
		if err != nil {
			t.Fatal(err)
		}
		if agg.Worker == nil || agg.Worker.Host != "wa" {
			t.Fatalf("server %s, job %d ran on %v", name, id, agg.Worker)
		}
		// The instance is free once the VM stopped (tests finished); the
		// results are uploaded apart from it.
		runs[name] = run{eventAt[*schemas.JobStarted](t, s, id), eventAt[*schemas.TestsFinished](t, s, id)}
	}
	if ra, rb := runs["a"], runs["b"]; ra.started.Before(rb.finished) && rb.started.Before(ra.finished) {
		t.Fatalf("instance wa:1 ran both jobs at once: a %v–%v, b %v–%v", ra.started, ra.finished, rb.started, rb.finished)
	}
}

// eventAt is when the job's first event of kind T was appended.
func eventAt[T schemas.Payload](t *testing.T, s *system, id int64) time.Time {
	t.Helper()
	var at time.Time
	err := s.bus.FollowJob(t.Context(), id, 0, func(ev schemas.Event, p schemas.Payload, _ streams.Delivery) error {
		if _, ok := p.(T); ok {
			at = ev.Time
			return streams.ErrStopWatch
		}
		return nil
	})
	if err != nil || at.IsZero() {
		var kind T
		t.Fatalf("job %d: no %T (%v)", id, kind, err)
	}
	return at
}

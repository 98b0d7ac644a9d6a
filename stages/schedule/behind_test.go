package schedule

import (
	"context"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// A scheduler that reads the worker stream behind its writers (busy
// assigning, or a fleet's heartbeats arriving faster than it folds them)
// judges silence at the time it has read up to, not at its own clock: a
// heartbeat waiting unread does not make its worker offline. Once it has
// caught up, a worker silent longer than the timeout is offline.
func TestASchedulerBehindTheWorkerStreamDeclaresNobodyOffline(t *testing.T) {
	srv := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := New(Config{WorkerTimeout: time.Minute}, srv.Bus("schedule"), natstest.Logger(t))
	s.leader = true
	ref := schemas.WorkerRef{Host: "h", Instance: 1}
	replaying := map[string]bool{}
	beat := func(at time.Time, pending uint64) {
		s.take(update{ev: schemas.Event{Time: at}, p: &schemas.WorkerHeartbeat{Worker: ref}, stream: streams.StreamWorkers, pending: pending}, replaying)
	}
	start := time.Now().Add(-3 * time.Minute)
	beat(start, 900)
	beat(start.Add(10*time.Second), 899)
	s.checkLiveness(ctx)
	if !s.workers[ref].online {
		t.Fatal("a worker whose later heartbeats are still unread was declared offline")
	}
	beat(start.Add(20*time.Second), 0)
	s.checkLiveness(ctx)
	if s.workers[ref].online {
		t.Fatal("a worker silent for over two minutes, with nothing left unread, is still online")
	}
}

// A clone is not assigned until its original names it: Bus.Restart
// creates it first, and a clone whose restart lost never runs.
func TestACloneWaitsUntilItsOriginalNamesIt(t *testing.T) {
	srv := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus := srv.Bus("schedule")
	s := New(Config{WorkerTimeout: time.Minute}, bus, natstest.Logger(t))
	s.leader = true
	replaying := map[string]bool{}
	feed := func(job int64, p schemas.Payload) {
		t.Helper()
		if _, err := bus.Append(ctx, job, p); err != nil {
			t.Fatal(err)
		}
		stream := streams.StreamJobs
		if job == 0 {
			stream = streams.StreamWorkers
		}
		s.take(update{ev: schemas.Event{Job: job, Time: time.Now()}, p: p, stream: stream}, replaying)
	}
	w := schemas.WorkerRef{Host: "h", Instance: 1}
	feed(0, &schemas.WorkerRegistered{Worker: w})
	feed(1, &schemas.JobCreated{Settings: map[string]string{"TEST": "t"}})
	feed(1, &schemas.JobFinished{Result: schemas.ResultFailed})
	feed(2, &schemas.JobCreated{Settings: map[string]string{"TEST": "t"}, CloneOf: 1})
	if err := s.assign(ctx); err != nil {
		t.Fatal(err)
	}
	if s.jobs[2].worker != nil {
		t.Fatal("a clone its original does not name was assigned")
	}
	feed(1, &schemas.JobRestarted{Clone: 2})
	if err := s.assign(ctx); err != nil {
		t.Fatal(err)
	}
	if s.jobs[2].worker == nil || *s.jobs[2].worker != w {
		t.Fatalf("the clone, named now, is not assigned: %+v", s.jobs[2])
	}
}

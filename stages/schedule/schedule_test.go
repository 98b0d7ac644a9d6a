package schedule_test

import (
	"context"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/stages/schedule"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// assignments follows the job stream and reports each assignment.
type assignment struct {
	job    int64
	worker string
	seq    uint64
}

func assignments(ctx context.Context, bus *streams.Bus) <-chan assignment {
	out := make(chan assignment, 16)
	go func() {
		_ = bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.JobEvents("assigned.>")}},
			func(ev schemas.Event, p schemas.Payload, d streams.Delivery) error {
				out <- assignment{ev.Job, p.(*schemas.JobAssigned).Worker.String(), d.Sequence}
				return nil
			})
	}()
	return out
}

func next(ctx context.Context, t *testing.T, ch <-chan assignment, wantJob int64, wantWorker string) assignment {
	t.Helper()
	select {
	case a := <-ch:
		if a.job != wantJob || a.worker != wantWorker {
			t.Fatalf("assigned job %d to %s, want job %d to %s", a.job, a.worker, wantJob, wantWorker)
		}
		return a
	case <-ctx.Done():
		t.Fatalf("job %d was not assigned to %s", wantJob, wantWorker)
	}
	return assignment{}
}

func TestAssignsByClassThenPriorityThenAge(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("test")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	append := func(job int64, p schemas.Payload) {
		t.Helper()
		if _, err := bus.Append(ctx, job, p); err != nil {
			t.Fatal(err)
		}
	}
	w1 := schemas.WorkerRef{Host: "h", Instance: 1}
	w2 := schemas.WorkerRef{Host: "h", Instance: 2}
	append(0, schemas.WorkerRegistered{Worker: w1, Classes: []string{"qemu_x86_64"}})
	append(1, schemas.JobCreated{Settings: map[string]string{"WORKER_CLASS": "qemu_x86_64,tap"}})
	append(2, schemas.JobCreated{Settings: map[string]string{"PRIORITY": "60"}})
	append(3, schemas.JobCreated{Settings: map[string]string{"PRIORITY": "10"}})
	append(4, schemas.JobCreated{Settings: map[string]string{}})

	got := assignments(ctx, bus)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- schedule.New(schedule.Config{}, srv.Bus("schedule"), natstest.Logger(t)).Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	next(ctx, t, got, 3, "h:1") // PRIORITY 10 first
	append(3, schemas.JobFinished{Result: schemas.ResultPassed})
	next(ctx, t, got, 4, "h:1") // default 50 before 60
	append(4, schemas.JobFinished{Result: schemas.ResultPassed})
	next(ctx, t, got, 2, "h:1")
	// Job 1 needs the tap class that only w2 has.
	append(0, schemas.WorkerRegistered{Worker: w2, Classes: []string{"qemu_x86_64", "tap"}})
	next(ctx, t, got, 1, "h:2")
}

// TestRestartDoesNotAssignTwice: a scheduler started on a stream that
// already holds assignments rebuilds its state before it assigns.
func TestRestartDoesNotAssignTwice(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("test")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w := schemas.WorkerRef{Host: "h", Instance: 1}
	for _, e := range []struct {
		job int64
		p   schemas.Payload
	}{
		{0, schemas.WorkerRegistered{Worker: w, Classes: []string{"qemu_x86_64"}}},
		{1, schemas.JobCreated{Settings: map[string]string{}}},
		{1, schemas.JobAssigned{Worker: w}},
		{2, schemas.JobCreated{Settings: map[string]string{}}},
	} {
		if _, err := bus.Append(ctx, e.job, e.p); err != nil {
			t.Fatal(err)
		}
	}
	got := assignments(ctx, bus)
	next(ctx, t, got, 1, "h:1") // the one already there
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- schedule.New(schedule.Config{}, srv.Bus("schedule"), natstest.Logger(t)).Run(runCtx) }()
	defer func() {
		stop()
		<-done
	}()
	// Job 2 waits for the busy worker; only finishing job 1 frees it.
	finished, err := bus.Append(ctx, 1, schemas.JobFinished{Result: schemas.ResultPassed})
	if err != nil {
		t.Fatal(err)
	}
	if a := next(ctx, t, got, 2, "h:1"); a.seq < finished {
		t.Errorf("job 2 assigned at sequence %d, before job 1 freed the worker at %d", a.seq, finished)
	}
}

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

// appender appends events for a test, failing it on error.
func appender(ctx context.Context, t *testing.T, bus *streams.Bus) func(job int64, p schemas.Payload) {
	return func(job int64, p schemas.Payload) {
		t.Helper()
		if _, err := bus.Append(ctx, job, p); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAssignsByClassThenPriorityThenAge(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("test")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	append := appender(ctx, t, bus)
	w1 := schemas.WorkerRef{Host: "h", Instance: 1}
	w2 := schemas.WorkerRef{Host: "h", Instance: 2}
	append(0, schemas.WorkerRegistered{Worker: w1, Classes: []string{"qemu_x86_64"}})
	append(1, schemas.JobCreated{Settings: map[string]string{"WORKER_CLASS": "qemu_x86_64,tap"}})
	append(2, schemas.JobCreated{Settings: map[string]string{"PRIORITY": "60"}})
	append(3, schemas.JobCreated{Settings: map[string]string{"PRIORITY": "10"}})
	append(4, schemas.JobCreated{Settings: map[string]string{}})

	got := assignments(ctx, bus)
	runSchedulerWith(ctx, t, srv, schedule.Config{})

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
	runSchedulerWith(ctx, t, srv, schedule.Config{})
	// Job 2 waits for the busy worker; only finishing job 1 frees it.
	finished, err := bus.Append(ctx, 1, schemas.JobFinished{Result: schemas.ResultPassed})
	if err != nil {
		t.Fatal(err)
	}
	if a := next(ctx, t, got, 2, "h:1"); a.seq < finished {
		t.Errorf("job 2 assigned at sequence %d, before job 1 freed the worker at %d", a.seq, finished)
	}
}

// finishes follows the job stream and reports each job's final event.
func finishes(ctx context.Context, bus *streams.Bus) <-chan map[int64]schemas.JobFinished {
	out := make(chan map[int64]schemas.JobFinished, 16)
	go func() {
		_ = bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.JobEvents("finished")}},
			func(ev schemas.Event, p schemas.Payload, d streams.Delivery) error {
				out <- map[int64]schemas.JobFinished{ev.Job: *p.(*schemas.JobFinished)}
				return nil
			})
	}()
	return out
}

// Chained children (START_AFTER_TEST) wait for their parents: they run
// after a parent passed, are skipped after it failed, and a child created
// after its parent ended (a restart) reads the parent's result.
func TestChainedChildrenWaitForTheirParents(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("test")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	append := appender(ctx, t, bus)
	w := schemas.WorkerRef{Host: "h", Instance: 1}
	append(0, schemas.WorkerRegistered{Worker: w, Classes: []string{"qemu_x86_64"}})
	// The children come first in priority: only their parents hold them.
	append(1, schemas.JobCreated{Settings: map[string]string{"_PRIORITY": "50"}})
	append(2, schemas.JobCreated{Settings: map[string]string{"_PRIORITY": "10"}, After: []int64{1}})
	append(3, schemas.JobCreated{Settings: map[string]string{"_PRIORITY": "10"}, After: []int64{1}})
	append(4, schemas.JobCreated{Settings: map[string]string{"_PRIORITY": "60"}})
	append(5, schemas.JobCreated{Settings: map[string]string{"_PRIORITY": "10"}, After: []int64{4}})

	got, ended := assignments(ctx, bus), finishes(ctx, bus)
	runSchedulerWith(ctx, t, srv, schedule.Config{})
	next(ctx, t, got, 1, "h:1")
	append(1, schemas.JobFinished{Result: schemas.ResultSoftfailed})
	<-ended
	next(ctx, t, got, 2, "h:1") // a softfailed parent lets its children run
	append(2, schemas.JobFinished{Result: schemas.ResultPassed})
	<-ended
	next(ctx, t, got, 3, "h:1")
	append(3, schemas.JobFinished{Result: schemas.ResultPassed})
	<-ended
	next(ctx, t, got, 4, "h:1")
	append(4, schemas.JobFinished{Result: schemas.ResultFailed})
	<-ended
	select {
	case f := <-ended:
		if f[5].Result != schemas.ResultSkipped || f[5].Reason != "its parent job 4 ended failed" {
			t.Fatalf("the child of a failed parent ended %v, want job 5 skipped", f)
		}
	case a := <-got:
		t.Fatalf("assigned %+v: the child of a failed parent ran", a)
	case <-ctx.Done():
		t.Fatal("the child of a failed parent was not skipped")
	}
	// A clone of a child, created after its parent passed, runs; one
	// whose parent failed is skipped.
	append(6, schemas.JobCreated{Settings: map[string]string{}, After: []int64{1}})
	next(ctx, t, got, 6, "h:1")
	append(7, schemas.JobCreated{Settings: map[string]string{}, After: []int64{4}})
	if f := <-ended; f[7].Result != schemas.ResultSkipped {
		t.Fatalf("a child created after its parent failed: %v, want job 7 skipped", f)
	}
}

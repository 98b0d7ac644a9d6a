package schedule_test

import (
	"cmp"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/stages/schedule"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// fakeWorker plays a worker instance on the streams: it registers and
// heartbeats until stopped. It is a protocol peer, not a mock: the
// scheduler sees exactly what a real worker sends.
type fakeWorker struct {
	ref  schemas.WorkerRef
	stop context.CancelFunc
	done chan struct{}
}

func startFakeWorker(ctx context.Context, t *testing.T, bus *streams.Bus, ref schemas.WorkerRef, classes ...string) *fakeWorker {
	t.Helper()
	if _, err := bus.Append(ctx, 0, schemas.WorkerRegistered{Worker: ref, Classes: classes}); err != nil {
		t.Fatal(err)
	}
	hbCtx, stop := context.WithCancel(ctx)
	w := &fakeWorker{ref: ref, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-hbCtx.Done():
				return
			case <-tick.C:
				_, _ = bus.Append(hbCtx, 0, schemas.WorkerHeartbeat{Worker: ref})
			}
		}
	}()
	return w
}

// silence stops the worker's heartbeats, as if it died.
func (w *fakeWorker) silence() {
	w.stop()
	<-w.done
}

func runScheduler(ctx context.Context, t *testing.T, srv *natstest.Server, name string) {
	t.Helper()
	runSchedulerWith(ctx, t, srv, schedule.Config{WorkerTimeout: 2 * time.Second, Name: name})
}

// runSchedulerWith runs a scheduler with cfg until the test ends.
func runSchedulerWith(ctx context.Context, t *testing.T, srv *natstest.Server, cfg schedule.Config) {
	t.Helper()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- schedule.New(cfg, srv.Bus(cmp.Or(cfg.Name, "schedule")), natstest.Logger(t)).Run(runCtx)
	}()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// waitEvent follows a job's events until want says yes.
func waitEvent(ctx context.Context, t *testing.T, bus *streams.Bus, job int64, what string, want func(schemas.Payload) bool) schemas.Payload {
	t.Helper()
	var got schemas.Payload
	err := bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.JobSubject(job) + ".>"}},
		func(_ schemas.Event, p schemas.Payload, _ streams.Delivery) error {
			if want(p) {
				got = p
				return streams.ErrStopWatch
			}
			return nil
		})
	if err != nil || got == nil {
		t.Fatalf("job %d: %s: %v", job, what, err)
	}
	return got
}

func assignedTo(ref schemas.WorkerRef) func(schemas.Payload) bool {
	return func(p schemas.Payload) bool {
		a, ok := p.(*schemas.JobAssigned)
		return ok && a.Worker == ref
	}
}

func TestJobOfAWorkerThatNeverStartedItIsReassigned(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("test")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	runScheduler(ctx, t, srv, "s1")
	ghost := startFakeWorker(ctx, t, bus, schemas.WorkerRef{Host: "ghost", Instance: 1}, "special")
	if _, err := bus.Append(ctx, 1, schemas.JobCreated{Settings: map[string]string{"WORKER_CLASS": "special"}}); err != nil {
		t.Fatal(err)
	}
	waitEvent(ctx, t, bus, 1, "assigned to ghost", assignedTo(ghost.ref))
	ghost.silence()
	un := waitEvent(ctx, t, bus, 1, "given back", func(p schemas.Payload) bool { _, ok := p.(*schemas.JobUnassigned); return ok }).(*schemas.JobUnassigned)
	if !strings.Contains(un.Reason, "ghost:1 went offline") {
		t.Errorf("reason %q", un.Reason)
	}
	other := startFakeWorker(ctx, t, bus, schemas.WorkerRef{Host: "other", Instance: 1}, "special")
	defer other.silence()
	waitEvent(ctx, t, bus, 1, "assigned to the other worker", assignedTo(other.ref))
}

func TestRunningJobOfAnOfflineWorkerEndsIncompleteAndIsClonedOnce(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("test")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	runScheduler(ctx, t, srv, "s1")
	runScheduler(ctx, t, srv, "s2") // a standby must not clone again
	w := startFakeWorker(ctx, t, bus, schemas.WorkerRef{Host: "w", Instance: 1})
	if id, err := bus.NextJobID(ctx); err != nil || id != 1 {
		t.Fatalf("job id %d, %v", id, err)
	}
	if _, err := bus.Append(ctx, 1, schemas.JobCreated{Settings: map[string]string{"TEST": "t"}}); err != nil {
		t.Fatal(err)
	}
	waitEvent(ctx, t, bus, 1, "assigned", assignedTo(w.ref))
	for _, p := range []schemas.Payload{schemas.JobReady{Worker: w.ref}, schemas.JobStarted{Worker: w.ref}} {
		if _, err := bus.Append(ctx, 1, p); err != nil {
			t.Fatal(err)
		}
	}
	w.silence()
	fin := waitEvent(ctx, t, bus, 1, "finished", func(p schemas.Payload) bool { _, ok := p.(*schemas.JobFinished); return ok }).(*schemas.JobFinished)
	if fin.Result != schemas.ResultIncomplete || !strings.Contains(fin.Reason, "worker w:1 went offline") {
		t.Errorf("finished %+v", fin)
	}
	restarted := waitEvent(ctx, t, bus, 1, "restarted", func(p schemas.Payload) bool { _, ok := p.(*schemas.JobRestarted); return ok }).(*schemas.JobRestarted)
	waitEvent(ctx, t, bus, restarted.Clone, "clone created", func(p schemas.Payload) bool { _, ok := p.(*schemas.JobCreated); return ok })
	clone, err := bus.LoadJob(ctx, restarted.Clone)
	if err != nil {
		t.Fatal(err)
	}
	if clone.CloneOf != 1 || clone.Retry != 1 || clone.Settings["TEST"] != "t" || clone.State != schemas.StateScheduled {
		t.Errorf("clone %+v", clone)
	}
	// The clone's worker dies too: the retry limit (1) stops the chain.
	w2 := startFakeWorker(ctx, t, bus, schemas.WorkerRef{Host: "w2", Instance: 1})
	waitEvent(ctx, t, bus, clone.ID, "clone assigned", assignedTo(w2.ref))
	for _, p := range []schemas.Payload{schemas.JobReady{Worker: w2.ref}, schemas.JobStarted{Worker: w2.ref}} {
		if _, err := bus.Append(ctx, clone.ID, p); err != nil {
			t.Fatal(err)
		}
	}
	w2.silence()
	waitEvent(ctx, t, bus, clone.ID, "clone finished", func(p schemas.Payload) bool { _, ok := p.(*schemas.JobFinished); return ok })
	// Every clone is a created event with CloneOf: there must be exactly one.
	last, err := bus.LastSequence(ctx, streams.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	clones := 0
	err = bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.JobEvents("created")}},
		func(_ schemas.Event, p schemas.Payload, d streams.Delivery) error {
			if p.(*schemas.JobCreated).CloneOf != 0 {
				clones++
			}
			if d.Pending == 0 || d.Sequence >= last {
				return streams.ErrStopWatch
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if clones != 1 {
		t.Errorf("%d clones, want 1", clones)
	}
}

// TestTwoSchedulersNeverDoubleAssign runs two schedulers on the same
// streams while fake workers run jobs as fast as they are assigned.
func TestTwoSchedulersNeverDoubleAssign(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("test")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const jobs = 40
	var workers []*fakeWorker
	for i := 1; i <= 3; i++ {
		workers = append(workers, startFakeWorker(ctx, t, bus, schemas.WorkerRef{Host: "w", Instance: i}))
	}
	defer func() {
		for _, w := range workers {
			w.silence()
		}
	}()
	runScheduler(ctx, t, srv, "s1")
	runScheduler(ctx, t, srv, "s2")
	for id := int64(1); id <= jobs; id++ {
		if _, err := bus.Append(ctx, id, schemas.JobCreated{Settings: map[string]string{}}); err != nil {
			t.Fatal(err)
		}
	}
	// Play the workers: finish each job as soon as it is assigned. Check,
	// in stream order, that no job is assigned twice and no worker gets a
	// job while it has one.
	var mu sync.Mutex
	assigned := map[int64]int{}
	busy := map[schemas.WorkerRef]int64{}
	finished := 0
	err := bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.JobEvents("assigned.>"), streams.JobEvents("finished")}},
		func(ev schemas.Event, p schemas.Payload, _ streams.Delivery) error {
			mu.Lock()
			defer mu.Unlock()
			switch p := p.(type) {
			case *schemas.JobAssigned:
				assigned[ev.Job]++
				if assigned[ev.Job] > 1 {
					t.Errorf("job %d assigned %d times", ev.Job, assigned[ev.Job])
				}
				if other := busy[p.Worker]; other != 0 {
					t.Errorf("job %d assigned to %s while it runs job %d", ev.Job, p.Worker, other)
				}
				busy[p.Worker] = ev.Job
				go func() {
					_, _ = bus.Append(ctx, ev.Job, schemas.JobFinished{Result: schemas.ResultPassed})
				}()
			case *schemas.JobFinished:
				for w, j := range busy {
					if j == ev.Job {
						busy[w] = 0
					}
				}
				if finished++; finished == jobs {
					return streams.ErrStopWatch
				}
			}
			return nil
		})
	if err != nil {
		t.Fatalf("%d of %d jobs finished: %v", finished, jobs, err)
	}
}

package schedule_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"jetqa/schemas"
	"jetqa/stages/schedule"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// beatWithClock sends heartbeats of ref every interval, stamped by a
// clock skew off, until ctx ends, and returns when the last was stored.
func beatWithClock(ctx context.Context, t *testing.T, bus *streams.Bus, ref schemas.WorkerRef, skew time.Duration) <-chan time.Time {
	t.Helper()
	last := make(chan time.Time, 1)
	go func() {
		var stored time.Time
		defer func() { last <- stored }()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			ev, err := schemas.NewEvent(0, "worker@"+ref.Host, schemas.WorkerHeartbeat{Worker: ref})
			if err != nil {
				t.Error(err)
				return
			}
			ev.Time = ev.Time.Add(skew)
			data, err := ev.Marshal()
			if err != nil {
				t.Error(err)
				return
			}
			msg := nats.NewMsg("jetqa.worker." + streams.WorkerToken(ref) + ".heartbeat")
			msg.Data = data
			msg.Header.Set(streams.HeaderKind, ev.Kind)
			if _, err := bus.JS.PublishMsg(ctx, msg); err == nil {
				stored = time.Now()
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return last
}

func startJob(ctx context.Context, t *testing.T, bus *streams.Bus, id int64, ref schemas.WorkerRef, class string) {
	t.Helper()
	add := appender(ctx, t, bus)
	add(id, schemas.JobCreated{Settings: map[string]string{"WORKER_CLASS": class}})
	waitEvent(ctx, t, bus, id, "assigned", assignedTo(ref))
	add(id, schemas.JobReady{Worker: ref})
	add(id, schemas.JobStarted{Worker: ref})
}

// A worker whose clock is an hour behind is online while its heartbeats
// arrive: liveness counts from when NATS stored them. It goes offline
// only once they stop.
func TestAWorkersClockDoesNotDecideItsLiveness(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("test")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const timeout = time.Second
	runSchedulerWith(ctx, t, srv, schedule.Config{WorkerTimeout: timeout, Name: "s1"})
	ref := schemas.WorkerRef{Host: "late", Instance: 1}
	appender(ctx, t, bus)(0, schemas.WorkerRegistered{Worker: ref, Classes: []string{"late"}})
	beats, silence := context.WithCancel(ctx)
	last := beatWithClock(beats, t, bus, ref, -time.Hour)
	startJob(ctx, t, bus, 1, ref, "late")
	// The job runs for three times the timeout, with heartbeats.
	waitFor := time.NewTimer(3 * timeout)
	select {
	case <-waitFor.C:
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	silence()
	silentFrom := <-last
	fin := waitEvent(ctx, t, bus, 1, "finished", func(p schemas.Payload) bool { _, ok := p.(*schemas.JobFinished); return ok }).(*schemas.JobFinished)
	if fin.Result != schemas.ResultIncomplete {
		t.Fatalf("finished %+v", fin)
	}
	var off *schemas.WorkerOffline
	err := bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamWorkers, Filters: []string{"jetqa.worker.*.*.offline"}}, func(_ schemas.Event, p schemas.Payload, _ streams.Delivery) error {
		off = p.(*schemas.WorkerOffline)
		return streams.ErrStopWatch
	})
	if err != nil || off == nil {
		t.Fatalf("no offline event: %v", err)
	}
	if off.LastSeen.Before(silentFrom.Add(-time.Second)) {
		t.Errorf("declared offline with last seen %s, while its heartbeats went on until %s", off.LastSeen.Format(time.RFC3339Nano), silentFrom.Format(time.RFC3339Nano))
	}
}

// The server is down (no scheduler, no heartbeats stored) for longer
// than the worker timeout. When it comes back, the worker that kept its
// job running gets a whole timeout to be heard again: its job ends as
// the worker reports, not incomplete.
func TestAnOutageLongerThanTheWorkerTimeoutEndsNoJob(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("test")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const timeout = 2 * time.Second
	cfg := schedule.Config{WorkerTimeout: timeout, Name: "before"}
	before, stopBefore := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- schedule.New(cfg, srv.Bus("before"), natstest.Logger(t)).Run(before) }()
	w := startFakeWorker(ctx, t, bus, schemas.WorkerRef{Host: "w", Instance: 1}, "c")
	startJob(ctx, t, bus, 1, w.ref, "c")

	// The outage: the scheduler stops and nothing of the worker is stored.
	stopBefore()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	w.silence()
	outage := time.NewTimer(3 * timeout)
	select {
	case <-outage.C:
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}

	// Back: a scheduler starts, and proves it acts by assigning another
	// worker a job; the worker of job 1 reconnects a moment later, as
	// workers do after the server restarts, and its job runs on.
	runSchedulerWith(ctx, t, srv, schedule.Config{WorkerTimeout: timeout, Name: "after"})
	other := startFakeWorker(ctx, t, bus, schemas.WorkerRef{Host: "other", Instance: 1}, "d")
	defer other.silence()
	appender(ctx, t, bus)(2, schemas.JobCreated{Settings: map[string]string{"WORKER_CLASS": "d"}})
	waitEvent(ctx, t, bus, 2, "assigned after the outage", assignedTo(other.ref))
	beats, stopBeats := context.WithCancel(ctx)
	defer stopBeats()
	beatWithClock(beats, t, bus, w.ref, 0)
	runs := time.NewTimer(2 * timeout)
	select {
	case <-runs.C:
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	_, err := bus.Append(ctx, 1, schemas.JobFinished{Result: schemas.ResultPassed})
	if errors.Is(err, schemas.ErrTransition) {
		agg, _ := bus.LoadJob(ctx, 1)
		t.Fatalf("the job of a worker that was silent only during the outage was ended: %s (%s)", agg.Result, agg.Reason)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// A worker's fetch stage gives up on a job's assignment (its message is
// dead-lettered): the job ends incomplete with the stage's reason, and
// the worker instance takes the next job. Another host's stage giving up
// on a job that is not its own ends nothing.
func TestAJobAStageGaveUpOnEndsWithItsReason(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("test")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	runSchedulerWith(ctx, t, srv, schedule.Config{WorkerTimeout: 4 * time.Second, Name: "s1"})
	w := startFakeWorker(ctx, t, bus, schemas.WorkerRef{Host: "w", Instance: 1}, "c")
	defer w.silence()

	// A stranger's fetch stage consumes job 1's assignment and gives up.
	stranger, stopStranger := context.WithCancel(ctx)
	gaveUp := make(chan struct{})
	go func() {
		_ = srv.Bus("stranger").Consume(stranger, streams.ConsumerConfig{Stream: streams.StreamJobs, Durable: streams.FetchDurable("stranger"), Filters: []string{streams.AssignedTo("w")}},
			func(context.Context, schemas.Event, schemas.Payload, streams.Delivery) error {
				defer close(gaveUp)
				return fmt.Errorf("%w: not mine", streams.ErrGiveUp)
			})
	}()
	appender(ctx, t, bus)(1, schemas.JobCreated{Settings: map[string]string{"WORKER_CLASS": "c"}})
	waitEvent(ctx, t, bus, 1, "assigned", assignedTo(w.ref))
	<-gaveUp
	stopStranger()

	// The worker's own fetch stage gives up on it.
	fetch, stopFetch := context.WithCancel(ctx)
	defer stopFetch()
	go func() {
		_ = srv.Bus("fetch@w").Consume(fetch, streams.ConsumerConfig{Stream: streams.StreamJobs, Durable: streams.FetchDurable("w"), Filters: []string{streams.AssignedTo("w")}},
			func(_ context.Context, ev schemas.Event, _ schemas.Payload, _ streams.Delivery) error {
				if ev.Job == 1 {
					return fmt.Errorf("%w: the cache directory is not writable", streams.ErrGiveUp)
				}
				return nil
			})
	}()
	fin := waitEvent(ctx, t, bus, 1, "finished", func(p schemas.Payload) bool { _, ok := p.(*schemas.JobFinished); return ok }).(*schemas.JobFinished)
	if fin.Result != schemas.ResultIncomplete || !strings.Contains(fin.Reason, "the fetch stage of worker w:1 gave up on the job") || !strings.Contains(fin.Reason, "the cache directory is not writable") {
		t.Errorf("finished %+v", fin)
	}
	appender(ctx, t, bus)(2, schemas.JobCreated{Settings: map[string]string{"WORKER_CLASS": "c"}})
	waitEvent(ctx, t, bus, 2, "the next job assigned to the freed instance", assignedTo(w.ref))
}

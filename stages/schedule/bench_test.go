package schedule_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"jetqa/internal/fleetsim"
	"jetqa/schemas"
	"jetqa/stages/schedule"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// BenchmarkAssign measures how long a posted job waits for a free worker
// instance: from just before the API would append JobCreated to the moment
// a watcher sees the JobAssigned, through a running scheduler, one job at
// a time. The reference is the same trip for a plain JetStream message on
// the same server: a synchronous publish, seen by an ordered consumer.
//
// p50-ms and p99-ms are the latencies; x-ref-p50 and x-ref-p99 divide
// them by the reference's, measured just before.
func BenchmarkAssign(b *testing.B) {
	srv := natstest.Start(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var ref fleetsim.Latencies
	b.Run("publish-receive", func(b *testing.B) {
		bus := srv.Bus("reference")
		const stream, subject = "BENCH_LATENCY", "bench.latency"
		s, err := bus.JS.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{subject}, Storage: jetstream.FileStorage})
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = bus.JS.DeleteStream(ctx, stream) }()
		cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverNewPolicy})
		if err != nil {
			b.Fatal(err)
		}
		msgs, err := cons.Messages()
		if err != nil {
			b.Fatal(err)
		}
		defer msgs.Stop()
		ref = nil
		for b.Loop() {
			start := time.Now()
			if _, err := bus.JS.Publish(ctx, subject, []byte("ping")); err != nil {
				b.Fatal(err)
			}
			if _, err := msgs.Next(); err != nil {
				b.Fatal(err)
			}
			ref = append(ref, time.Since(start))
		}
		reportLatencies(b, ref, nil)
	})

	b.Run("post-assigned", func(b *testing.B) {
		bus := srv.Bus("api")
		// Two instances: while the scheduler has yet to see the previous
		// job finish, the next one still finds a free worker.
		w := startQuickWorker(ctx, b, srv, "worker-01", 2)
		defer w.stop()
		runCtx, stopScheduler := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			done <- schedule.New(schedule.Config{WorkerTimeout: time.Hour, Name: "bench"}, srv.Bus("schedule"), log).Run(runCtx)
		}()
		defer func() {
			stopScheduler()
			if err := <-done; err != nil {
				b.Error(err)
			}
		}()

		post := func() time.Duration {
			id, err := bus.NextJobID(ctx)
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if _, err := bus.Append(ctx, id, schemas.JobCreated{Settings: map[string]string{"DISTRI": "opensuse", "TEST": "textmode", "WORKER_CLASS": "qemu_x86_64"}}); err != nil {
				b.Fatal(err)
			}
			select {
			case a := <-w.assigned:
				if a.job != id {
					b.Fatalf("job %d assigned while waiting for job %d", a.job, id)
				}
				// The worker has finished the job before the next is posted.
				if err := <-w.finished; err != nil {
					b.Fatal(err)
				}
				return a.seen.Sub(start)
			case <-ctx.Done():
				b.Fatal(ctx.Err())
			}
			return 0
		}
		// The scheduler assigns only once it holds its lease.
		post()

		var lat fleetsim.Latencies
		for b.Loop() {
			lat = append(lat, post())
		}
		reportLatencies(b, lat, ref)
	})
}

// reportLatencies reports p50-ms and p99-ms of l and, given a reference
// from the same run, their ratios to it.
func reportLatencies(b *testing.B, l, ref fleetsim.Latencies) {
	if len(l) == 0 {
		return
	}
	b.ReportMetric(fleetsim.MS(l.Quantile(0.5)), "p50-ms")
	b.ReportMetric(fleetsim.MS(l.Quantile(0.99)), "p99-ms")
	if len(ref) > 0 {
		b.ReportMetric(float64(l.Quantile(0.5))/float64(ref.Quantile(0.5)), "x-ref-p50")
		b.ReportMetric(float64(l.Quantile(0.99))/float64(ref.Quantile(0.99)), "x-ref-p99")
	}
}

// quickWorker plays the instances of one worker host on the streams: each
// registers, heartbeats, and finishes every job it is assigned at once.
// Like fakeWorker it is a protocol peer, not a mock.
type quickWorker struct {
	assigned chan seenAssignment
	finished chan error
	stop     func()
}

type seenAssignment struct {
	job  int64
	seen time.Time
}

func startQuickWorker(ctx context.Context, b *testing.B, srv *natstest.Server, host string, instances int) *quickWorker {
	b.Helper()
	bus := srv.Bus(host)
	for i := 1; i <= instances; i++ {
		ref := schemas.WorkerRef{Host: host, Instance: i}
		if _, err := bus.Append(ctx, 0, schemas.WorkerRegistered{Worker: ref, Classes: []string{"qemu_x86_64"}}); err != nil {
			b.Fatal(err)
		}
	}
	// Watch from here on, not from when the watch happens to start.
	last, err := bus.LastSequence(ctx, streams.StreamJobs)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &quickWorker{assigned: make(chan seenAssignment, 1), finished: make(chan error, 1)}
	heartbeats, watch := make(chan struct{}), make(chan error, 1)
	w.stop = func() {
		cancel()
		<-heartbeats
		if err := <-watch; err != nil && !errors.Is(err, context.Canceled) {
			b.Error(err)
		}
	}
	go func() {
		defer close(heartbeats)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				for i := 1; i <= instances; i++ {
					_, _ = bus.Append(ctx, 0, schemas.WorkerHeartbeat{Worker: schemas.WorkerRef{Host: host, Instance: i}})
				}
			}
		}
	}()
	go func() {
		watch <- bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, From: last + 1, Filters: []string{streams.AssignedTo(host)}},
			func(ev schemas.Event, _ schemas.Payload, _ streams.Delivery) error {
				seen := time.Now()
				_, err := bus.Append(ctx, ev.Job, schemas.JobFinished{Result: schemas.ResultPassed})
				if err != nil {
					err = fmt.Errorf("finish job %d: %w", ev.Job, err)
				}
				select {
				case w.assigned <- seenAssignment{job: ev.Job, seen: seen}:
				case <-ctx.Done():
					return nil
				}
				w.finished <- err
				return nil
			})
	}()
	return w
}

package match_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/stages/match"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// BenchmarkRequestLatency compares a match request sent through JetStream
// (the work queue, a matcher, the answer on the worker's subject: what the
// boot stage does) with the same request matched by a direct call in the
// same process. Both match a real testos screen against its three needles
// near their place, one request at a time; the difference is what the
// trip through the streams costs.
func BenchmarkRequestLatency(b *testing.B) {
	srv := natstest.Start(b)
	bus := srv.Bus("boot")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	refs := []schemas.NeedleRef{testosNeedle(b, ctx, bus, "hello-output"), testosNeedle(b, ctx, bus, "testos-shell"), testosNeedle(b, ctx, bus, "graphical-desktop")}
	worker := schemas.WorkerRef{Host: "bench", Instance: 1}
	req := schemas.MatchRequested{ReplyTo: worker, Screen: screen(b, "hello-output"), Needles: refs, Ratio: 0.02}

	pool := match.New(match.Config{Name: "m1", Workers: 1}, srv.Bus("m1"), natstest.Logger(b))
	poolCtx, stopPool := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- pool.Run(poolCtx) }()
	defer func() {
		stopPool()
		<-stopped
	}()
	answers := make(chan schemas.MatchResolved, 1)
	go func() {
		_ = bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamMatchResults, Filters: []string{streams.MatchResolvedFor(worker)}, New: true},
			func(_ schemas.Event, p schemas.Payload, _ streams.Delivery) error {
				answers <- *p.(*schemas.MatchResolved)
				return nil
			})
	}()

	var direct, through []time.Duration
	b.Run("direct", func(b *testing.B) {
		for b.Loop() {
			start := time.Now()
			if res := pool.Match(ctx, &req); !res.Matched {
				b.Fatalf("%+v", res)
			}
			direct = append(direct, time.Since(start))
		}
		report(b, direct, nil)
	})
	b.Run("jetstream", func(b *testing.B) {
		i := 0
		for b.Loop() {
			i++
			req.ID = fmt.Sprint(i)
			start := time.Now()
			if _, err := bus.Append(ctx, 1, req); err != nil {
				b.Fatal(err)
			}
			select {
			case res := <-answers:
				if res.ID != req.ID || !res.Matched {
					b.Fatalf("%+v", res)
				}
			case <-ctx.Done():
				b.Fatal("no answer")
			}
			through = append(through, time.Since(start))
		}
		report(b, through, direct)
	})
}

// report prints the median and 99th percentile, and against a reference
// the median's difference and ratio.
func report(b *testing.B, ds, ref []time.Duration) {
	p := func(ds []time.Duration, q float64) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[int(q*float64(len(s)-1))]
	}
	b.ReportMetric(float64(p(ds, 0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p(ds, 0.99).Microseconds())/1000, "p99-ms")
	if len(ref) > 0 {
		b.ReportMetric(float64((p(ds, 0.5)-p(ref, 0.5)).Microseconds())/1000, "extra-p50-ms")
		b.ReportMetric(float64(p(ds, 0.5))/float64(p(ref, 0.5)), "x-direct")
	}
}

package streams_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"

	"jetqa/internal/benchdata"
	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// Job id ranges of the sub-benchmarks, far apart so that each starts on
// jobs nobody has written to.
const (
	rawJobs    = 1_000_000_000
	appendJobs = 1
	apartJobs  = 2_000_000_000
	sameJobs   = 3_000_000_000
	inFlight   = 64 // jobs whose events interleave in the stream, as on a busy server
	writerJobs = 16 // running jobs each pair of writers appends modules to
)

// BenchmarkAppend compares Append — check the event against the job's
// aggregate, publish it with the expected last sequence of the job's
// subjects and a message id, wait for the acknowledgement — with the bare
// synchronous JetStream publish it is built on, on one embedded server.
//
//   - raw: JS.Publish of a JobCreated envelope's bytes to jetqa.job.<n>.created.
//   - append: the eight events of a job's life (created … finished), 64 jobs
//     interleaved, a new job every eighth append.
//   - two-writers-apart: two buses, in lockstep, appending modules to
//     different running jobs: the reference for the next one.
//   - two-writers-same-jobs: the same, on the same job at the same moment,
//     so nearly every round one append loses the race, re-reads and retries.
//
// msgs/s is stored events per second; x-of-raw is that as a fraction of
// raw's, measured just before; retries/op counts publishes the stream
// refused for a stale expected sequence, per stored event.
func BenchmarkAppend(b *testing.B) {
	srv := natstest.Start(b)
	ctx := context.Background()
	w := schemas.WorkerRef{Host: "worker-01.example", Instance: 7}
	life := benchdata.Life(w, 1)

	var raw float64 // msgs/s
	b.Run("raw", func(b *testing.B) {
		bus := srv.Bus("raw")
		ev, err := schemas.NewEvent(rawJobs, bus.Source(), life[0])
		if err != nil {
			b.Fatal(err)
		}
		data, err := ev.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		i := 0
		for b.Loop() {
			subj := streams.JobSubject(rawJobs+int64(i/len(life))) + ".created"
			if _, err := bus.JS.Publish(ctx, subj, data); err != nil {
				b.Fatal(err)
			}
			i++
		}
		raw = perSecond(b, 1)
		b.ReportMetric(raw, "msgs/s")
		b.ReportMetric(float64(len(data)), "B/msg")
	})

	b.Run("append", func(b *testing.B) {
		appendLives(ctx, b, srv.Bus("append"), life)
		reportRate(b, perSecond(b, 1), raw)
	})

	var apart float64
	b.Run("two-writers-apart", func(b *testing.B) {
		apart = twoWriters(b, srv, w, func(writer, i int) int64 { return apartJobs + int64(writer*writerJobs+i%writerJobs) })
		reportRate(b, apart, raw)
	})

	b.Run("two-writers-same-jobs", func(b *testing.B) {
		same := twoWriters(b, srv, w, func(_, i int) int64 { return sameJobs + int64(i%writerJobs) })
		reportRate(b, same, raw)
		if apart > 0 {
			b.ReportMetric(same/apart, "x-of-apart")
		}
	})
}

// twoWriters runs two buses in lockstep: each round both append one
// module event, writer 0 and 1 to jobOf(writer, round), at the same
// moment. It returns stored events per second and reports retries/op.
func twoWriters(b *testing.B, srv *natstest.Server, w schemas.WorkerRef, jobOf func(writer, round int) int64) float64 {
	ctx := context.Background()
	setup := srv.Bus("setup")
	for writer := range 2 {
		for i := range writerJobs {
			job := jobOf(writer, i)
			if agg, err := setup.LoadJob(ctx, job); err == nil && agg.State == schemas.StateRunning {
				continue // a second run of this benchmark, or the other writer's job
			}
			for _, p := range benchdata.Life(w, 1)[:4] { // created, assigned, ready, started
				if _, err := setup.Append(ctx, job, p); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
	writers := []*streams.Bus{srv.Bus("writer0"), srv.Bus("writer1")}

	// Count every publish to a job subject, stored or refused, with a
	// plain subscription: the client has no other way to see retries.
	counter := srv.Bus("counter")
	sub, err := counter.NC.Subscribe(streams.SubjectJobs, func(*nats.Msg) {})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := counter.NC.Flush(); err != nil {
		b.Fatal(err)
	}
	before := counter.NC.Stats().InMsgs

	write := func(writer, round int) error {
		name := fmt.Sprintf("w%d-%d", writer, round/2)
		var p schemas.Payload = schemas.ModuleStarted{Module: name}
		if round%2 == 1 {
			p = schemas.ModuleFinished{ModuleResult: schemas.ModuleResult{Name: name, Result: schemas.ResultPassed}}
		}
		_, err := writers[writer].Append(ctx, jobOf(writer, round), p)
		return err
	}
	rounds := make(chan int)
	errs := make(chan error)
	go func() {
		for round := range rounds {
			errs <- write(1, round)
		}
	}()
	defer close(rounds)
	round := 0
	for b.Loop() {
		rounds <- round
		err0 := write(0, round)
		if err1 := <-errs; err1 != nil {
			b.Fatal(err1)
		}
		if err0 != nil {
			b.Fatal(err0)
		}
		round++
	}
	rate := perSecond(b, 2)

	// A publish's acknowledgement comes after the server queued the
	// message to the subscription; the flush's PONG comes after it.
	if err := counter.NC.Flush(); err != nil {
		b.Fatal(err)
	}
	stored := float64(2 * b.N)
	b.ReportMetric((float64(counter.NC.Stats().InMsgs-before)-stored)/stored, "retries/op")
	return rate
}

// perSecond is the benchmark's throughput with msgsPerOp messages per
// iteration.
func perSecond(b *testing.B, msgsPerOp int) float64 {
	return float64(b.N*msgsPerOp) / b.Elapsed().Seconds()
}

// reportRate reports msgs/s and, when raw ran before in the same run (it
// does not under a -bench pattern that skips it), the fraction of raw's.
func reportRate(b *testing.B, rate, raw float64) {
	b.ReportMetric(rate, "msgs/s")
	if raw > 0 {
		b.ReportMetric(rate/raw, "x-of-raw")
	}
}

// BenchmarkSyncPolicy appends the events of jobs' lives on an embedded
// server with JetStream's default sync (fsync every two minutes) and on
// one that syncs every message before acknowledging it (SyncAlways), in
// the same run: x-of-interval is the second's rate over the first's.
func BenchmarkSyncPolicy(b *testing.B) {
	ctx := context.Background()
	life := benchdata.Life(schemas.WorkerRef{Host: "worker-01.example", Instance: 7}, 1)
	var interval float64
	for _, always := range []bool{false, true} {
		name := map[bool]string{false: "interval", true: "always"}[always]
		b.Run(name, func(b *testing.B) {
			ns, err := streams.StartServer(streams.ServerConfig{Port: -1, DataDir: b.TempDir(), SyncAlways: always})
			if err != nil {
				b.Fatal(err)
			}
			defer ns.Shutdown()
			bus, err := streams.Connect(ctx, ns.ClientURL(), name, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer bus.Close()
			if err := bus.Setup(ctx); err != nil {
				b.Fatal(err)
			}
			appendLives(ctx, b, bus, life)
			rate := perSecond(b, 1)
			b.ReportMetric(rate, "msgs/s")
			if always {
				b.ReportMetric(rate/interval, "x-of-interval")
			} else {
				interval = rate
			}
		})
	}
}

// appendLives appends, once per b.Loop, the next event of the lives of
// inFlight jobs at a time, interleaved as on a busy server.
func appendLives(ctx context.Context, b *testing.B, bus *streams.Bus, life []schemas.Payload) {
	i := 0
	for b.Loop() {
		round, slot := i/inFlight, i%inFlight
		job := appendJobs + int64(round/len(life)*inFlight+slot)
		if _, err := bus.Append(ctx, job, life[round%len(life)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

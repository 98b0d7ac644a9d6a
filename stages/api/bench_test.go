package api

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"jetqa/internal/benchdata"
	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// BenchmarkRebuild times how long the API needs after a restart to fold
// the whole job stream into a fresh read model, on two shapes of jobs,
// stored beforehand with asynchronous publishes:
//   - 100 000 jobs of eight events each (created … finished, one module):
//     about as many as a busy openQA instance keeps, and the worst case,
//     as most of the events carry the job's settings or results;
//   - 20 000 jobs of 20 modules each (46 events): a job as openQA's
//     distributions run them, where module events are most of the stream.
//
// Every twentieth job ends incomplete without a module list and the last
// half percent still run: no job.finished replaces their module events.
//
// The NATS server runs in a process of its own, as `jetqa admin rebuild`
// meets it; the benchmark's process is the command's. The reference is an
// ordered consumer reading the same messages without decoding them,
// measured just before on the same server: x-bare-read is Rebuild's time
// divided by its.
func BenchmarkRebuild(b *testing.B) {
	for _, shape := range []struct {
		name          string
		jobs, modules int
	}{
		{"100k-jobs-1-module", 100_000, 1},
		{"20k-jobs-20-modules", 20_000, 20},
	} {
		b.Run(shape.name, func(b *testing.B) { benchmarkRebuild(b, shape.jobs, shape.modules) })
	}
}

func benchmarkRebuild(b *testing.B, jobs, modules int) {
	srv := natstest.StartProcess(b)
	bus := srv.Bus("bench")
	ctx := context.Background()
	start := time.Now()
	events := storeJobHistories(ctx, b, bus, jobs, modules)
	last, err := bus.LastSequence(ctx, streams.StreamJobs)
	if err != nil {
		b.Fatal(err)
	}
	if last != uint64(events) {
		b.Fatalf("stream ends at %d, stored %d events", last, events)
	}
	b.Logf("stored %d events of %d jobs in %v", events, jobs, time.Since(start).Round(time.Millisecond))

	var bare time.Duration // per read
	b.Run("bare-read", func(b *testing.B) {
		for b.Loop() {
			cons, err := bus.JS.OrderedConsumer(ctx, streams.StreamJobs, jetstream.OrderedConsumerConfig{FilterSubjects: []string{streams.SubjectJobs}})
			if err != nil {
				b.Fatal(err)
			}
			msgs, err := cons.Messages()
			if err != nil {
				b.Fatal(err)
			}
			for read := 0; ; read++ {
				msg, err := msgs.Next()
				if err != nil {
					b.Fatalf("after %d messages: %v", read, err)
				}
				meta, err := msg.Metadata()
				if err != nil {
					b.Fatal(err)
				}
				if meta.Sequence.Stream >= last {
					break
				}
			}
			msgs.Stop()
		}
		bare = b.Elapsed() / time.Duration(b.N)
		reportRebuild(b, events, 0)
	})

	b.Run("projection", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			views, seen, err := Rebuild(ctx, bus)
			if err != nil {
				b.Fatal(err)
			}
			if seen != last || len(views) != jobs {
				b.Fatalf("folded %d jobs up to sequence %d, want %d up to %d", len(views), seen, jobs, last)
			}
		}
		reportRebuild(b, events, bare)
	})
}

// reportRebuild reports the seconds one fold of the stream takes, events
// per second, how many events that is, and the ratio to ref when given.
func reportRebuild(b *testing.B, events int, ref time.Duration) {
	per := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(per.Seconds(), "s/rebuild")
	b.ReportMetric(float64(events)/per.Seconds(), "events/s")
	b.ReportMetric(float64(events), "events")
	if ref > 0 {
		b.ReportMetric(float64(per)/float64(ref), "x-bare-read")
	}
}

// storeJobHistories stores the whole life of jobs 1…n, each running
// modules modules, with the subjects and headers Append gives them, 500
// jobs at a time with their events interleaved as on a busy server. It
// returns how many events it stored.
func storeJobHistories(ctx context.Context, b *testing.B, bus *streams.Bus, n, modules int) int {
	b.Helper()
	const perBatch = 500
	w := schemas.WorkerRef{Host: "worker-01.example", Instance: 3}
	host := "." + streams.WorkerToken(w)
	benchSettings := benchdata.Settings()
	type lifeStep struct {
		token string
		p     schemas.Payload
	}
	life := []lifeStep{
		{"created", schemas.JobCreated{Settings: benchSettings}},
		{"assigned" + host, schemas.JobAssigned{Worker: w}},
		{"ready" + host, schemas.JobReady{Worker: w, Settings: benchSettings, Assets: map[string]string{"ISO": "/var/lib/jetqa/cache/" + benchSettings["ISO"]},
			CaseDir: "/var/lib/jetqa/tests/opensuse", NeedlesDir: "/var/lib/jetqa/tests/opensuse/products/opensuse/needles", JobDir: "/var/lib/jetqa/pool/3"}},
		{"started", schemas.JobStarted{Worker: w, Accel: "kvm"}},
	}
	results := make([]schemas.ModuleResult, modules)
	for i := range modules {
		m := benchdata.Module(fmt.Sprintf("boot_to_desktop_%d", i+1))
		results[i] = m
		life = append(life, lifeStep{"module", schemas.ModuleStarted{Module: m.Name}}, lifeStep{"module", schemas.ModuleFinished{ModuleResult: m}})
	}
	life = append(life, []lifeStep{
		{"tests_finished" + host, schemas.TestsFinished{Worker: w, Result: schemas.ResultPassed, Modules: results, ResultsDir: "/var/lib/jetqa/pool/3/results"}},
		{"finished", schemas.JobFinished{Result: schemas.ResultPassed, Modules: results, Files: map[string]string{"autoinst-log.txt": "jobs/1/autoinst-log.txt"}}},
	}...)
	// As on a real instance, not every job ends passed with its modules:
	// every twentieth ends incomplete without them, as when its worker went
	// away, and the last half percent still run.
	incomplete := schemas.JobFinished{Result: schemas.ResultIncomplete, Reason: "worker worker-01.example:3 went offline"}
	running := int64(n - n/200)
	stored := 0
	var acks []jetstream.PubAckFuture
	for first := 1; first <= n; first += perBatch {
		acks = acks[:0]
		for _, step := range life {
			for job := int64(first); job < int64(min(first+perBatch, n+1)); job++ {
				p := step.p
				_, tested := p.(schemas.TestsFinished)
				_, end := p.(schemas.JobFinished)
				switch {
				case job > running && (tested || end), job%20 == 0 && tested:
					continue
				case job%20 == 0 && end:
					p = incomplete
				}
				ev, err := schemas.NewEvent(job, bus.Source(), p)
				if err != nil {
					b.Fatal(err)
				}
				data, err := ev.Marshal()
				if err != nil {
					b.Fatal(err)
				}
				msg := nats.NewMsg(streams.JobSubject(job) + "." + step.token)
				msg.Data = data
				msg.Header.Set(streams.HeaderKind, ev.Kind)
				ack, err := bus.JS.PublishMsgAsync(msg)
				if err != nil {
					b.Fatal(err)
				}
				acks = append(acks, ack)
			}
		}
		select {
		case <-bus.JS.PublishAsyncComplete():
		case <-time.After(time.Minute):
			b.Fatal("stream did not acknowledge a batch within a minute")
		}
		for _, ack := range acks {
			select {
			case err := <-ack.Err():
				b.Fatal(err)
			case <-ack.Ok():
			}
		}
		stored += len(acks)
	}
	return stored
}

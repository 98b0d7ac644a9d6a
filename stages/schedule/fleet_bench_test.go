//go:build unix

package schedule_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"jetqa/internal/fleetsim"
	"jetqa/schemas"
	"jetqa/stages/authority"
	"jetqa/stages/schedule"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// Fleet size: worker hosts (one instance each) from JETQA_FLEET_WORKERS,
// jobs from -benchtime (20000x: 20 000 jobs). The run of docs/scale.md:
//
//	JETQA_FLEET_WORKERS=1000 \
//	  go test -run '^$' -bench Fleet -benchtime 20000x -timeout 60m ./stages/schedule
const defaultFleetHosts = 100

// fleetIdle is how long the idle fleet is measured.
const fleetIdle = 15 * time.Second

// BenchmarkFleet runs a fleet of simulated worker hosts — each with the
// connections, durable consumers and reports of a real one, but no VM —
// against a three-node cluster on loopback with three authorities (one
// per node) and a scheduler, and posts b.N jobs through it. Posters keep
// at most two unfinished jobs per worker instance, so the queue holds
// about one job per instance: the fleet runs flat out, and what limits
// it is the server side.
//
// Figures; latencies come from the events' own times:
//   - start-s: until every host's consumers exist; idle-cpu-cores: the
//     CPU the idle fleet keeps busy (heartbeats, pulls, Raft).
//   - assign-p50-ms, assign-p99-ms: JobCreated to JobAssigned, the wait in
//     the queue included.
//   - dispatch-p50-ms, dispatch-p99-ms: from the moment the job could have
//     been assigned (created, and its worker's previous job finished) to
//     JobAssigned: how long the scheduler takes to act. assign-gap-p50-ms:
//     between one JobAssigned and the next, what one assignment costs the
//     scheduler while jobs wait.
//   - fetch-, boot-, run-, upload-p50-ms: assigned to ready, ready to
//     started, started to tests finished (three reports), tests finished
//     to finished.
//   - job-p50-ms, job-p99-ms: JobCreated to JobFinished.
//   - jobs/s, events/s, events/job: throughput of the job stream.
//   - cpu-ms/job, cpu-cores: CPU time of the whole process (three NATS
//     nodes, server stages and the simulated fleet) per job, and how many
//     cores that kept busy.
//   - heap-MiB-idle, heap-KiB/host, heap-KiB/host-busy: heap in use after
//     GC of the whole process with the cluster and the server stages only,
//     then per host (both ends of its connections and its consumers' three
//     replicas) idle, and right after the jobs.
//   - store-MiB, store-B/job: JetStream bytes of all streams and of the
//     job stream per job, one replica (the disk holds three).
//   - x-ref-dispatch-p50: dispatch-p50 divided by the reference measured
//     before on the same cluster: a publish to a three-replica stream seen
//     by an ordered consumer (ref-p50-ms).
//   - not-passed, retries, restarts, refused, stale-reads: what went wrong
//     on the way; all 0 in a clean run but stale-reads (see current).
//
// ns/op is the time to post one job, which the posters' limit paces to
// the fleet's throughput.
func BenchmarkFleet(b *testing.B) {
	hosts := defaultFleetHosts
	if v := os.Getenv("JETQA_FLEET_WORKERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("JETQA_FLEET_WORKERS=%q: want a number of worker hosts", v)
		}
		hosts = n
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, urls := natstest.StartCluster(b)
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ref := fleetReference(ctx, b, srv.Bus("reference"), 200)

	// The server side: an authority on every node, as three `jetqa server`
	// processes have, and one scheduler (the lease holder; standbys only
	// follow the streams).
	serverCtx, stopServer := context.WithCancel(ctx)
	server, serverCtx := errgroup.WithContext(serverCtx)
	for i, url := range urls {
		bus := fleetDial(ctx, b, url, fmt.Sprintf("authority@n%d", i+1), log)
		server.Go(func() error {
			return authority.New(authority.Config{}, bus, log).Run(serverCtx)
		})
	}
	schedBus := fleetDial(ctx, b, urls[0], "schedule@n1", log)
	server.Go(func() error {
		return schedule.New(schedule.Config{Name: "bench"}, schedBus, log).Run(serverCtx)
	})
	// After the fleet's own cleanup (startFleet), which comes later.
	b.Cleanup(func() {
		stopServer()
		if err := server.Wait(); err != nil && !errors.Is(err, context.Canceled) {
			b.Error(err)
		}
	})
	api := fleetDial(ctx, b, urls[0], "api@n1", log)
	heapIdle := fleetsim.HeapInUse()

	// The fleet: hosts spread over the three nodes.
	start := time.Now()
	f := fleetsim.Start(ctx, b, fleetsim.Config{Hosts: hosts, Log: log,
		Dial: func(ctx context.Context, i int, stage string, w schemas.WorkerRef) (*streams.Bus, error) {
			return streams.Connect(ctx, urls[i%len(urls)], stage+"@"+w.String(), log)
		}}, api)
	started := time.Since(start)
	// What the fleet costs while it has nothing to do: a while of
	// heartbeats, pull requests and Raft, measured, not waited for.
	cpuIdle := fleetsim.CPUTime()
	idle := time.NewTimer(fleetIdle)
	<-idle.C
	cpuIdle = fleetsim.CPUTime() - cpuIdle
	heapFleet := fleetsim.HeapInUse()

	// Posters and the watcher that keeps their limit and the record.
	seqBefore, err := api.LastSequence(ctx, streams.StreamJobs)
	if err != nil {
		b.Fatal(err)
	}
	rec := fleetsim.NewRecord(2 * hosts)
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan error, 1)
	go func() {
		watched <- api.Watch(watchCtx, streams.WatchConfig{
			Stream: streams.StreamJobs, From: seqBefore + 1,
			Filters: []string{streams.SubjectJobs},
		}, func(ev schemas.Event, p schemas.Payload, _ streams.Delivery) error {
			rec.See(ev, p)
			return nil
		})
	}()
	defer func() {
		stopWatch()
		if err := <-watched; err != nil && !errors.Is(err, context.Canceled) {
			b.Error(err)
		}
	}()
	settings := map[string]string{
		"DISTRI": "opensuse", "VERSION": "Tumbleweed", "FLAVOR": "DVD", "ARCH": "x86_64",
		"BUILD": "20260101", "MACHINE": "64bit", "TEST": "textmode", "WORKER_CLASS": fleetsim.Class,
		"ISO": "openSUSE-Tumbleweed-DVD-x86_64-Snapshot20260101-Media.iso", "HDDSIZEGB": "20", "QEMURAM": "2048",
	}
	todo := make(chan struct{})
	posters, postCtx := errgroup.WithContext(ctx)
	var posted atomic.Int64
	for range 4 {
		posters.Go(func() error {
			for range todo {
				id, err := api.NextJobID(postCtx)
				if err != nil {
					return err
				}
				if _, err := api.Append(postCtx, id, schemas.JobCreated{Settings: settings}); err != nil {
					return err
				}
				posted.Add(1)
			}
			return nil
		})
	}
	cpuStart, wallStart := fleetsim.CPUTime(), time.Now()
	for b.Loop() {
		select {
		case rec.Slots <- struct{}{}:
		case err := <-watched:
			b.Fatalf("watching the job stream: %v", err)
		}
		select {
		case todo <- struct{}{}:
		case <-postCtx.Done():
			b.Fatalf("posting jobs: %v", posters.Wait())
		}
	}
	close(todo)
	if err := posters.Wait(); err != nil {
		b.Fatalf("posting jobs: %v", err)
	}
	rec.WaitFinished(b, int(posted.Load()), api)
	cpu, wall := fleetsim.CPUTime()-cpuStart, time.Since(wallStart)
	seqAfter, err := api.LastSequence(ctx, streams.StreamJobs)
	if err != nil {
		b.Fatal(err)
	}
	heapBusy := fleetsim.HeapInUse()
	storeAll, storeJobs := fleetStore(ctx, b, api)

	fig := rec.Figures(start.Add(started))
	seen, _ := rec.Jobs()
	n, span := float64(seen), fig.Last.Sub(fig.First).Seconds()
	for _, m := range []struct {
		value float64
		unit  string
	}{
		{float64(hosts), "hosts"},
		{started.Seconds(), "start-s"},
		{cpuIdle.Seconds() / fleetIdle.Seconds(), "idle-cpu-cores"},
		{fleetsim.MS(fig.Assign.Quantile(0.5)), "assign-p50-ms"},
		{fleetsim.MS(fig.Assign.Quantile(0.99)), "assign-p99-ms"},
		{fleetsim.MS(fig.Dispatch.Quantile(0.5)), "dispatch-p50-ms"},
		{fleetsim.MS(fig.Dispatch.Quantile(0.99)), "dispatch-p99-ms"},
		{fleetsim.MS(fig.Gaps.Quantile(0.5)), "assign-gap-p50-ms"},
		{fleetsim.MS(fig.Fetch.Quantile(0.5)), "fetch-p50-ms"},
		{fleetsim.MS(fig.Boot.Quantile(0.5)), "boot-p50-ms"},
		{fleetsim.MS(fig.Run.Quantile(0.5)), "run-p50-ms"},
		{fleetsim.MS(fig.Upload.Quantile(0.5)), "upload-p50-ms"},
		{fleetsim.MS(fig.Whole.Quantile(0.5)), "job-p50-ms"},
		{fleetsim.MS(fig.Whole.Quantile(0.99)), "job-p99-ms"},
		{fleetsim.MS(ref.Quantile(0.5)), "ref-p50-ms"},
		{float64(fig.Dispatch.Quantile(0.5)) / float64(ref.Quantile(0.5)), "x-ref-dispatch-p50"},
		{n / span, "jobs/s"},
		{float64(seqAfter-seqBefore) / span, "events/s"},
		{float64(seqAfter-seqBefore) / n, "events/job"},
		{float64(fig.NotPassed), "not-passed"},
		{float64(f.Retries.Load()), "retries"},
		{float64(f.Restarts.Load()), "restarts"},
		{float64(f.Refused.Load()), "refused"},
		{float64(f.Stale.Load()), "stale-reads"},
		{float64(cpu.Milliseconds()) / n, "cpu-ms/job"},
		{cpu.Seconds() / wall.Seconds(), "cpu-cores"},
		{float64(heapIdle) / (1 << 20), "heap-MiB-idle"},
		{(float64(heapFleet) - float64(heapIdle)) / 1024 / float64(hosts), "heap-KiB/host"},
		{(float64(heapBusy) - float64(heapIdle)) / 1024 / float64(hosts), "heap-KiB/host-busy"},
		{float64(storeAll) / (1 << 20), "store-MiB"},
		{float64(storeJobs) / n, "store-B/job"},
	} {
		b.ReportMetric(m.value, m.unit)
	}
}

// fleetDial connects a bus that lives as long as the benchmark.
func fleetDial(ctx context.Context, b *testing.B, url, name string, log *slog.Logger) *streams.Bus {
	b.Helper()
	bus, err := streams.Connect(ctx, url, name, log)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(bus.Close)
	return bus
}

// fleetReference is the latency of a publish to a three-replica stream
// until an ordered consumer sees it, n times.
func fleetReference(ctx context.Context, b *testing.B, bus *streams.Bus, n int) fleetsim.Latencies {
	b.Helper()
	const stream, subject = "BENCH_FLEET_REF", "bench.fleet.ref"
	s, err := bus.JS.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{subject}, Storage: jetstream.FileStorage, Replicas: 3})
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
	var ref fleetsim.Latencies
	for range n {
		start := time.Now()
		if _, err := bus.JS.Publish(ctx, subject, []byte("ping")); err != nil {
			b.Fatal(err)
		}
		if _, err := msgs.Next(jetstream.NextMaxWait(10 * time.Second)); err != nil {
			b.Fatal(err)
		}
		ref = append(ref, time.Since(start))
	}
	return ref
}

// fleetStore is the bytes of every stream and of the job stream, one
// replica.
func fleetStore(ctx context.Context, b *testing.B, bus *streams.Bus) (all, jobs uint64) {
	b.Helper()
	list := bus.JS.ListStreams(ctx)
	for info := range list.Info() {
		all += info.State.Bytes
		if info.Config.Name == streams.StreamJobs {
			jobs = info.State.Bytes
		}
	}
	if err := list.Err(); err != nil {
		b.Fatal(err)
	}
	return all, jobs
}

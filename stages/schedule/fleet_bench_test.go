//go:build unix

package schedule_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

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

// How the simulated hosts behave: as `jetqa worker` does by default.
const (
	fleetHeartbeat = 10 * time.Second // boot.Config's default
	fleetRestart   = 5 * time.Second  // RestartSec of deploy/systemd/jetqa-worker@.service
	fleetIdle      = 15 * time.Second // how long the idle fleet is measured
	fleetClass     = "qemu_x86_64"
)

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
	heapIdle := heapInUse()

	// The fleet: hosts spread over the three nodes.
	start := time.Now()
	f := startFleet(ctx, b, urls, hosts, log, api)
	started := time.Since(start)
	// What the fleet costs while it has nothing to do: a while of
	// heartbeats, pull requests and Raft, measured, not waited for.
	cpuIdle := cpuTime()
	idle := time.NewTimer(fleetIdle)
	<-idle.C
	cpuIdle = cpuTime() - cpuIdle
	heapFleet := heapInUse()

	// Posters and the watcher that keeps their limit and the record.
	seqBefore, err := api.LastSequence(ctx, streams.StreamJobs)
	if err != nil {
		b.Fatal(err)
	}
	rec := newFleetRecord(2 * hosts)
	watchCtx, stopWatch := context.WithCancel(ctx)
	watched := make(chan error, 1)
	go func() {
		watched <- api.Watch(watchCtx, streams.WatchConfig{
			Stream: streams.StreamJobs, From: seqBefore + 1,
			Filters: []string{streams.SubjectJobs},
		}, func(ev schemas.Event, p schemas.Payload, _ streams.Delivery) error {
			rec.see(ev, p)
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
		"BUILD": "20260101", "MACHINE": "64bit", "TEST": "textmode", "WORKER_CLASS": fleetClass,
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
	cpuStart, wallStart := cpuTime(), time.Now()
	for b.Loop() {
		select {
		case rec.slots <- struct{}{}:
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
	rec.waitFinished(b, int(posted.Load()), api)
	cpu, wall := cpuTime()-cpuStart, time.Since(wallStart)
	seqAfter, err := api.LastSequence(ctx, streams.StreamJobs)
	if err != nil {
		b.Fatal(err)
	}
	heapBusy := heapInUse()
	storeAll, storeJobs := fleetStore(ctx, b, api)

	fig := rec.figures(start.Add(started))
	n, span := float64(len(rec.jobs)), fig.last.Sub(fig.first).Seconds()
	for _, m := range []struct {
		value float64
		unit  string
	}{
		{float64(hosts), "hosts"},
		{started.Seconds(), "start-s"},
		{cpuIdle.Seconds() / fleetIdle.Seconds(), "idle-cpu-cores"},
		{ms(fig.assign.quantile(0.5)), "assign-p50-ms"},
		{ms(fig.assign.quantile(0.99)), "assign-p99-ms"},
		{ms(fig.dispatch.quantile(0.5)), "dispatch-p50-ms"},
		{ms(fig.dispatch.quantile(0.99)), "dispatch-p99-ms"},
		{ms(fig.gaps.quantile(0.5)), "assign-gap-p50-ms"},
		{ms(fig.fetch.quantile(0.5)), "fetch-p50-ms"},
		{ms(fig.boot.quantile(0.5)), "boot-p50-ms"},
		{ms(fig.run.quantile(0.5)), "run-p50-ms"},
		{ms(fig.upload.quantile(0.5)), "upload-p50-ms"},
		{ms(fig.whole.quantile(0.5)), "job-p50-ms"},
		{ms(fig.whole.quantile(0.99)), "job-p99-ms"},
		{ms(ref.quantile(0.5)), "ref-p50-ms"},
		{float64(fig.dispatch.quantile(0.5)) / float64(ref.quantile(0.5)), "x-ref-dispatch-p50"},
		{n / span, "jobs/s"},
		{float64(seqAfter-seqBefore) / span, "events/s"},
		{float64(seqAfter-seqBefore) / n, "events/job"},
		{float64(fig.notPassed), "not-passed"},
		{float64(f.retries.Load()), "retries"},
		{float64(f.restarts.Load()), "restarts"},
		{float64(f.refused.Load()), "refused"},
		{float64(f.stale.Load()), "stale-reads"},
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
func fleetReference(ctx context.Context, b *testing.B, bus *streams.Bus, n int) latencies {
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
	var ref latencies
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

// fleetConsumers counts the consumers of the job and the worker stream.
func fleetConsumers(ctx context.Context, b *testing.B, bus *streams.Bus) int {
	n := 0
	for _, name := range []string{streams.StreamJobs, streams.StreamWorkers} {
		s, err := bus.JS.Stream(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		n += info.State.Consumers
	}
	return n
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

// heapInUse is the process's heap in use after collecting.
func heapInUse() uint64 {
	// Twice: what sync.Pools hold survives one collection.
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// cpuTime is the CPU time the process used so far, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// fleet is the simulated worker hosts.
type fleet struct {
	hosts    []*simHost
	cancel   context.CancelFunc
	run      *errgroup.Group
	restarts atomic.Int64 // stages that stopped with an error and were started again
	lastErr  atomic.Pointer[error]
	retries  atomic.Int64 // handler errors, retried by the consumers
	refused  atomic.Int64 // module reports the authority refused
	stale    atomic.Int64 // deliveries whose job read lagged behind (current)
}

// startFleet connects hosts simulated worker hosts, host i to node i%3,
// starts them and waits until all their durable consumers exist.
//
// Hosts start a few at a time: each asks for four consumers, and a
// hundred hosts asking at once kept the cluster's meta leader busy past
// the JetStream API's timeout of 5 s here.
func startFleet(ctx context.Context, b *testing.B, urls []string, hosts int, log *slog.Logger, bus *streams.Bus) *fleet {
	b.Helper()
	ctx, cancel := context.WithCancel(ctx)
	f := &fleet{hosts: make([]*simHost, hosts), cancel: cancel, run: &errgroup.Group{}}
	b.Cleanup(func() { f.stop(b) })
	var dial errgroup.Group
	dial.SetLimit(2 * runtime.NumCPU())
	for i := range hosts {
		dial.Go(func() error {
			h, err := dialHost(ctx, urls[i%len(urls)], fmt.Sprintf("w%04d", i+1), log)
			f.hosts[i] = h
			return err
		})
	}
	if err := dial.Wait(); err != nil {
		b.Fatal(err)
	}
	// fetch, upload, boot on the job stream; prefetch on the workers'.
	const perHost, startingAtOnce = 4, 8
	before := fleetConsumers(ctx, b, bus)
	waitCtx, cancelWait := context.WithTimeout(ctx, 30*time.Minute)
	defer cancelWait()
	created := func(want int) func() error {
		return func() error {
			// A stage that fails to start now will fail again: its
			// consumer was refused.
			if err := f.lastErr.Load(); err != nil {
				b.Fatalf("fleet of %d hosts did not start: %v", hosts, *err)
			}
			if n := fleetConsumers(ctx, b, bus) - before; n < want {
				return fmt.Errorf("fleet not up: %d of %d consumers of %d hosts created (%d restarts)", n, perHost*hosts, hosts, f.restarts.Load())
			}
			return nil
		}
	}
	for i, h := range f.hosts {
		if i >= startingAtOnce {
			natstest.WaitUntil(b, waitCtx, created(perHost*(i-startingAtOnce)))
		}
		// Heartbeats spread over the interval, as hosts started at random
		// moments would send them.
		h.start(ctx, f, time.Duration(i)*fleetHeartbeat/time.Duration(hosts))
	}
	natstest.WaitUntil(b, waitCtx, created(perHost*hosts))
	return f
}

// stop stops the hosts' stages, then closes their connections.
func (f *fleet) stop(b *testing.B) {
	f.cancel()
	if err := f.run.Wait(); err != nil && !errors.Is(err, context.Canceled) {
		b.Error(err)
	}
	var closing sync.WaitGroup
	for _, h := range f.hosts {
		if h == nil {
			continue
		}
		for _, bus := range []*streams.Bus{h.fetch, h.upload, h.boot} {
			if bus != nil {
				closing.Go(bus.Close)
			}
		}
	}
	closing.Wait()
}

// simHost is one worker host with one instance, on the streams exactly as
// `jetqa worker` is: a connection for fetch, one for upload (both speak
// for the host, instance 0) and one for the instance's boot stage; the
// same durable consumers, requested from the authority; the same reports.
// Where the real stages download assets, check out tests or run a VM, it
// does nothing.
type simHost struct {
	ref                 schemas.WorkerRef // the one instance
	fetch, upload, boot *streams.Bus
	running             atomic.Int64 // the job the instance runs, for heartbeats
	fleet               *fleet
}

func dialHost(ctx context.Context, url, name string, log *slog.Logger) (*simHost, error) {
	h := &simHost{ref: schemas.WorkerRef{Host: name, Instance: 1}}
	var err error
	dial := func(stage string, w schemas.WorkerRef) *streams.Bus {
		if err != nil {
			return nil
		}
		var bus *streams.Bus
		if bus, err = streams.Connect(ctx, url, stage+"@"+w.String(), log); err == nil {
			bus.AsWorker(w)
		}
		return bus
	}
	host := schemas.WorkerRef{Host: name}
	h.fetch, h.upload, h.boot = dial("fetch", host), dial("upload", host), dial("boot", h.ref)
	if err != nil {
		for _, bus := range []*streams.Bus{h.fetch, h.upload, h.boot} {
			if bus != nil {
				bus.Close()
			}
		}
		return nil, err
	}
	return h, nil
}

// start runs the host's stages until ctx ends; the first heartbeat is
// sent after offset.
func (h *simHost) start(ctx context.Context, f *fleet, offset time.Duration) {
	h.fleet = f
	// A stage that stops with an error starts again after a while, as
	// systemd restarts jetqa-worker (deploy/systemd: RestartSec=5).
	run := func(stage func(context.Context) error) {
		f.run.Go(func() error {
			for {
				err := stage(ctx)
				if ctx.Err() != nil {
					return nil
				}
				f.restarts.Add(1)
				f.lastErr.Store(&err)
				slog.Warn("simulated stage stopped, starting it again", "host", h.ref.Host, "err", err)
				again := time.NewTimer(fleetRestart)
				select {
				case <-ctx.Done():
					again.Stop()
					return nil
				case <-again.C:
				}
			}
		})
	}
	counted := func(handle streams.Handler) streams.Handler {
		return func(ctx context.Context, ev schemas.Event, p schemas.Payload, d streams.Delivery) error {
			err := handle(ctx, ev, p, d)
			if err != nil && ctx.Err() == nil {
				f.retries.Add(1)
			}
			return err
		}
	}
	name := h.ref.Host
	// fetch: the host's assignments and its prefetch requests; the end of
	// each job it set up is followed by setUp (to release cache entries).
	run(func(ctx context.Context) error {
		return h.fetch.Consume(ctx, streams.ConsumerConfig{
			Stream: streams.StreamJobs, Durable: streams.FetchDurable(name), Filters: []string{streams.AssignedTo(name)},
		}, counted(h.setUp))
	})
	run(func(ctx context.Context) error {
		return h.fetch.Consume(ctx, streams.ConsumerConfig{
			Stream: streams.StreamWorkers, Durable: streams.PrefetchDurable(name), Filters: []string{streams.PrefetchFor(name)},
			AckWait: time.Minute,
		}, func(context.Context, schemas.Event, schemas.Payload, streams.Delivery) error { return nil })
	})
	// upload: the host's finished test runs.
	run(func(ctx context.Context) error {
		return h.upload.Consume(ctx, streams.ConsumerConfig{
			Stream: streams.StreamJobs, Durable: streams.UploadDurable(name), Filters: []string{streams.TestsFinishedOn(name)},
		}, counted(h.finish))
	})
	// boot: register, heartbeat, run what is ready.
	run(func(ctx context.Context) error {
		if _, err := h.boot.Append(ctx, 0, schemas.WorkerRegistered{Worker: h.ref, Classes: []string{fleetClass}, Arch: "x86_64", CPUs: 8, MemoryMiB: 16384}); err != nil {
			return fmt.Errorf("register: %w", err)
		}
		f.run.Go(func() error { h.heartbeat(ctx, offset); return nil })
		return h.boot.Consume(ctx, streams.ConsumerConfig{
			Stream: streams.StreamJobs, Durable: streams.BootDurable(h.ref), Filters: []string{streams.ReadyFor(h.ref)},
			AckWait: time.Minute, MaxDeliver: 2,
		}, counted(h.runJob))
	})
}

func (h *simHost) heartbeat(ctx context.Context, offset time.Duration) {
	first := time.NewTimer(offset)
	defer first.Stop()
	select {
	case <-ctx.Done():
		return
	case <-first.C:
	}
	tick := time.NewTicker(fleetHeartbeat)
	defer tick.Stop()
	for {
		_, _ = h.boot.Append(ctx, 0, schemas.WorkerHeartbeat{Worker: h.ref, Job: h.running.Load()})
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// current loads a job as of the event just delivered at seq, at least,
// and says whether it is still the instance's to work on.
//
// A read can miss an event the consumer has already delivered: reads go
// to the stream's leader, which may store a message after a replica
// whose consumer delivers it. Taken as it is, such a read says the job
// is not assigned (yet), and the job would be skipped and stay assigned
// for good; so it is read again. stale counts the deliveries that had to.
func (h *simHost) current(ctx context.Context, bus *streams.Bus, job int64, seq uint64, w schemas.WorkerRef) (*schemas.JobAggregate, bool, error) {
	for try := 0; ; try++ {
		agg, err := bus.LoadJob(ctx, job)
		if err != nil {
			return nil, false, err
		}
		if agg.Seq >= seq {
			return agg, !agg.Final() && !agg.Started && agg.Worker != nil && *agg.Worker == w, nil
		}
		if try == 0 {
			h.fleet.stale.Add(1)
		}
		if try == 100 {
			return nil, false, fmt.Errorf("job %d still read at sequence %d, before the event delivered at %d", job, agg.Seq, seq)
		}
	}
}

// setUp is fetch's part: a job assigned to the host is ready at once.
func (h *simHost) setUp(ctx context.Context, ev schemas.Event, p schemas.Payload, d streams.Delivery) error {
	a, ok := p.(*schemas.JobAssigned)
	if !ok {
		return nil
	}
	agg, mine, err := h.current(ctx, h.fetch, ev.Job, d.Sequence, a.Worker)
	if err != nil || !mine {
		return err
	}
	// As the fetch stage holds the job's cache entries until its end.
	held, release := context.WithCancel(ctx)
	go func() { _ = h.fetch.OnJobEvent(held, ev.Job, "finished", release) }()
	_, err = h.fetch.Append(ctx, ev.Job, schemas.JobReady{Worker: a.Worker, Settings: agg.Settings, Assets: map[string]string{}})
	return ignoreMovedOn(err)
}

// runJob is boot's part: one module that passes, without a VM.
func (h *simHost) runJob(ctx context.Context, ev schemas.Event, p schemas.Payload, d streams.Delivery) error {
	if _, ok := p.(*schemas.JobReady); !ok {
		return nil
	}
	_, mine, err := h.current(ctx, h.boot, ev.Job, d.Sequence, h.ref)
	if err != nil || !mine {
		return err
	}
	h.running.Store(ev.Job)
	defer h.running.Store(0)
	if _, err := h.boot.Append(ctx, ev.Job, schemas.JobStarted{Worker: h.ref, Accel: "tcg"}); err != nil {
		return ignoreMovedOn(err)
	}
	// As the real runner: a module whose report is refused is incomplete,
	// and the tests still finish.
	module := schemas.ModuleResult{Name: "boot", Result: schemas.ResultPassed}
	if _, err := h.boot.Append(ctx, ev.Job, schemas.ModuleStarted{Module: module.Name}); err != nil {
		h.fleet.refused.Add(1)
		module.Result, module.Reason = schemas.ResultIncomplete, err.Error()
	}
	if _, err := h.boot.Append(ctx, ev.Job, schemas.ModuleFinished{ModuleResult: module}); err != nil {
		h.fleet.refused.Add(1)
	}
	_, err = h.boot.Append(ctx, ev.Job, schemas.TestsFinished{Worker: h.ref, Result: module.Result, Modules: []schemas.ModuleResult{module}})
	return ignoreMovedOn(err)
}

// finish is upload's part: nothing to store, the job ends as the tests did.
func (h *simHost) finish(ctx context.Context, ev schemas.Event, p schemas.Payload, _ streams.Delivery) error {
	tf, ok := p.(*schemas.TestsFinished)
	if !ok {
		return nil
	}
	_, err := h.upload.Append(ctx, ev.Job, schemas.JobFinished{Result: tf.Result, Modules: tf.Modules})
	return ignoreMovedOn(err)
}

// ignoreMovedOn: a job cancelled or given away meanwhile is not an error
// of the stage, as in the real ones.
func ignoreMovedOn(err error) error {
	if errors.Is(err, schemas.ErrTransition) {
		return nil
	}
	return err
}

// fleetRecord keeps the times of every job's events as the watcher sees
// them, and the posters' limit of unfinished jobs.
type fleetRecord struct {
	slots    chan struct{} // one per unfinished job
	finished chan struct{} // a job finished

	mu   sync.Mutex
	jobs map[int64]*jobTimes
	done int
}

type jobTimes struct {
	created, assigned, finished time.Time
	ready, started, tests       time.Time
	worker                      schemas.WorkerRef
	result                      string
}

func newFleetRecord(limit int) *fleetRecord {
	return &fleetRecord{slots: make(chan struct{}, limit), finished: make(chan struct{}, 1), jobs: map[int64]*jobTimes{}}
}

func (r *fleetRecord) see(ev schemas.Event, p schemas.Payload) {
	r.mu.Lock()
	defer r.mu.Unlock()
	j := r.jobs[ev.Job]
	if j == nil {
		j = &jobTimes{}
		r.jobs[ev.Job] = j
	}
	switch p := p.(type) {
	case *schemas.JobCreated:
		j.created = ev.Time
	case *schemas.JobReady:
		j.ready = ev.Time
	case *schemas.JobStarted:
		j.started = ev.Time
	case *schemas.TestsFinished:
		j.tests = ev.Time
	case *schemas.JobAssigned:
		j.assigned, j.worker = ev.Time, p.Worker
	case *schemas.JobFinished:
		j.finished, j.result = ev.Time, p.Result
		r.done++
		<-r.slots
		select {
		case r.finished <- struct{}{}:
		default:
		}
	}
}

// waitFinished waits until n jobs finished. It fails the benchmark when
// none finishes for two minutes: the fleet is stuck, which is a bug, not
// a slow run.
func (r *fleetRecord) waitFinished(b *testing.B, n int, bus *streams.Bus) {
	b.Helper()
	stuck := time.NewTimer(2 * time.Minute)
	defer stuck.Stop()
	for {
		r.mu.Lock()
		done := r.done
		r.mu.Unlock()
		if done >= n {
			return
		}
		select {
		case <-r.finished:
			stuck.Reset(2 * time.Minute)
		case <-stuck.C:
			b.Fatalf("no job finished for 2 minutes: %d of %d done; %s", done, n, r.unfinished(bus))
		}
	}
}

// unfinished says where the jobs not finished yet are, at most ten.
func (r *fleetRecord) unfinished(bus *streams.Bus) string {
	r.mu.Lock()
	var ids []int64
	for id, j := range r.jobs {
		if j.finished.IsZero() {
			ids = append(ids, id)
		}
	}
	r.mu.Unlock()
	slices.Sort(ids)
	var out []string
	for _, id := range ids[:min(len(ids), 10)] {
		agg, err := bus.LoadJob(context.Background(), id)
		if err != nil {
			out = append(out, fmt.Sprintf("job %d: %v", id, err))
			continue
		}
		out = append(out, fmt.Sprintf("job %d: %s on %v (seq %d)", id, agg.State, agg.Worker, agg.Seq))
	}
	return fmt.Sprintf("%d unfinished: %s", len(ids), strings.Join(out, ", "))
}

// fleetFigures are the latencies of the jobs recorded.
type fleetFigures struct {
	assign, dispatch, whole  latencies
	gaps                     latencies // between one assignment and the next
	fetch, boot, run, upload latencies // between a job's events
	first, last              time.Time // the first created, the last finished
	notPassed                int
}

// figures computes the figures from the record; fleetUp is when the
// fleet was ready, the moment every instance was free.
func (r *fleetRecord) figures(fleetUp time.Time) fleetFigures {
	r.mu.Lock()
	defer r.mu.Unlock()
	var fig fleetFigures
	byWorker := map[schemas.WorkerRef][]*jobTimes{}
	for _, j := range r.jobs {
		fig.assign = append(fig.assign, j.assigned.Sub(j.created))
		fig.fetch = append(fig.fetch, j.ready.Sub(j.assigned))
		fig.boot = append(fig.boot, j.started.Sub(j.ready))
		fig.run = append(fig.run, j.tests.Sub(j.started))
		fig.upload = append(fig.upload, j.finished.Sub(j.tests))
		fig.whole = append(fig.whole, j.finished.Sub(j.created))
		if fig.first.IsZero() || j.created.Before(fig.first) {
			fig.first = j.created
		}
		if j.finished.After(fig.last) {
			fig.last = j.finished
		}
		if j.result != schemas.ResultPassed {
			fig.notPassed++
		}
		byWorker[j.worker] = append(byWorker[j.worker], j)
	}
	var assigned []time.Time
	for _, j := range r.jobs {
		assigned = append(assigned, j.assigned)
	}
	slices.SortFunc(assigned, time.Time.Compare)
	for i := 1; i < len(assigned); i++ {
		fig.gaps = append(fig.gaps, assigned[i].Sub(assigned[i-1]))
	}
	for _, js := range byWorker {
		slices.SortFunc(js, func(a, b *jobTimes) int { return a.assigned.Compare(b.assigned) })
		free := fleetUp
		for _, j := range js {
			ready := j.created
			if free.After(ready) {
				ready = free
			}
			fig.dispatch = append(fig.dispatch, j.assigned.Sub(ready))
			free = j.finished
		}
	}
	return fig
}

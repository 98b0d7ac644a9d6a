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
// jobs from -benchtime (20000x: 20 000 jobs). docs/scale.md has the
// 1 000-host run:
//
//	JETQA_FLEET_WORKERS=1000 go test -run '^$' -bench Fleet -benchtime 20000x -timeout 60m ./stages/schedule
const defaultFleetHosts = 100

// How the simulated hosts behave: as `jetqa worker` does by default.
const (
	fleetHeartbeat = 10 * time.Second // boot.Config's default
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
// Figures, all from the events' own times:
//   - assign-p50-ms, assign-p99-ms: JobCreated to JobAssigned, the wait in
//     the queue included.
//   - dispatch-p50-ms, dispatch-p99-ms: from the moment the job could have
//     been assigned (created, and its worker's previous job finished) to
//     JobAssigned: how long the scheduler takes to act.
//   - job-p50-ms, job-p99-ms: JobCreated to JobFinished.
//   - jobs/s, events/s, events/job: throughput of the job stream.
//   - cpu-ms/job, cpu-cores: CPU time of the whole process (three NATS
//     nodes, server stages and the simulated fleet) per job, and how many
//     cores that kept busy.
//   - heap-MiB-idle, heap-KiB/host, heap-B/job: heap in use after GC of
//     the whole process: with the cluster and the server stages only, then
//     per connected host (both ends of its connections), then per job
//     posted (what stays after the jobs ended).
//   - store-MiB, store-B/job: JetStream bytes of all streams and of the
//     job stream per job, one replica (the disk holds three).
//   - x-ref-dispatch-p50: dispatch-p50 divided by the reference measured
//     before on the same cluster: a publish to a three-replica stream seen
//     by an ordered consumer (ref-p50-ms).
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
		server.Go(func() error { return authority.New(authority.Config{}, bus, log).Run(serverCtx) })
	}
	schedBus := fleetDial(ctx, b, urls[0], "schedule@n1", log)
	server.Go(func() error {
		return schedule.New(schedule.Config{Name: "bench"}, schedBus, log).Run(serverCtx)
	})
	defer func() {
		stopServer()
		if err := server.Wait(); err != nil && !errors.Is(err, context.Canceled) {
			b.Error(err)
		}
	}()
	api := fleetDial(ctx, b, urls[0], "api@n1", log)
	heapIdle := heapInUse()

	// The fleet: hosts spread over the three nodes.
	before := fleetConsumers(ctx, b, api)
	start := time.Now()
	f := startFleet(ctx, b, urls, hosts, log)
	defer f.stop(b)
	waitCtx, cancelWait := context.WithTimeout(ctx, 30*time.Minute)
	natstest.WaitUntil(b, waitCtx, func() error {
		if err := f.err(); err != nil {
			b.Fatal(err)
		}
		now := fleetConsumers(ctx, b, api)
		// fetch, upload, boot on the job stream; prefetch on the workers'.
		if jobs, workers := now[0]-before[0], now[1]-before[1]; jobs < 3*hosts || workers < hosts {
			return fmt.Errorf("fleet not up: %d of %d job stream consumers, %d of %d worker stream consumers", jobs, 3*hosts, workers, hosts)
		}
		return nil
	})
	cancelWait()
	started := time.Since(start)
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
			Filters: []string{streams.JobEvents("created"), streams.JobEvents("assigned.>"), streams.JobEvents("finished")},
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
	rec.waitFinished(b, int(posted.Load()), f)
	cpu, wall := cpuTime()-cpuStart, time.Since(wallStart)
	seqAfter, err := api.LastSequence(ctx, streams.StreamJobs)
	if err != nil {
		b.Fatal(err)
	}
	heapEnd := heapInUse()
	storeAll, storeJobs := fleetStore(ctx, b, api)

	n := len(rec.jobs)
	assign, dispatch, whole, first, last, notPassed := rec.latencies(start.Add(started))
	span := last.Sub(first).Seconds()
	b.ReportMetric(float64(hosts), "hosts")
	b.ReportMetric(started.Seconds(), "start-s")
	b.ReportMetric(ms(assign.quantile(0.5)), "assign-p50-ms")
	b.ReportMetric(ms(assign.quantile(0.99)), "assign-p99-ms")
	b.ReportMetric(ms(dispatch.quantile(0.5)), "dispatch-p50-ms")
	b.ReportMetric(ms(dispatch.quantile(0.99)), "dispatch-p99-ms")
	b.ReportMetric(ms(whole.quantile(0.5)), "job-p50-ms")
	b.ReportMetric(ms(whole.quantile(0.99)), "job-p99-ms")
	b.ReportMetric(ms(ref.quantile(0.5)), "ref-p50-ms")
	b.ReportMetric(float64(dispatch.quantile(0.5))/float64(ref.quantile(0.5)), "x-ref-dispatch-p50")
	b.ReportMetric(float64(n)/span, "jobs/s")
	b.ReportMetric(float64(seqAfter-seqBefore)/span, "events/s")
	b.ReportMetric(float64(seqAfter-seqBefore)/float64(n), "events/job")
	b.ReportMetric(float64(notPassed), "not-passed")
	b.ReportMetric(float64(f.retries.Load()), "retries")
	b.ReportMetric(float64(f.refused.Load()), "refused")
	b.ReportMetric(float64(cpu.Milliseconds())/float64(n), "cpu-ms/job")
	b.ReportMetric(cpu.Seconds()/wall.Seconds(), "cpu-cores")
	b.ReportMetric(float64(heapIdle)/(1<<20), "heap-MiB-idle")
	b.ReportMetric((float64(heapFleet)-float64(heapIdle))/1024/float64(hosts), "heap-KiB/host")
	b.ReportMetric((float64(heapEnd)-float64(heapFleet))/float64(n), "heap-B/job")
	b.ReportMetric(float64(storeAll)/(1<<20), "store-MiB")
	b.ReportMetric(float64(storeJobs)/float64(n), "store-B/job")
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
		if _, err := msgs.Next(); err != nil {
			b.Fatal(err)
		}
		ref = append(ref, time.Since(start))
	}
	return ref
}

// fleetConsumers counts the consumers of the job and the worker stream.
func fleetConsumers(ctx context.Context, b *testing.B, bus *streams.Bus) [2]int {
	var n [2]int
	for i, name := range []string{streams.StreamJobs, streams.StreamWorkers} {
		s, err := bus.JS.Stream(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		n[i] = info.State.Consumers
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

// heapInUse is the process's heap in use after a collection.
func heapInUse() uint64 {
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
	hosts   []*simHost
	cancel  context.CancelFunc
	run     *errgroup.Group
	failed  atomic.Pointer[error]
	retries atomic.Int64 // handler errors, retried by the consumers
	refused atomic.Int64 // module reports the authority refused
}

// startFleet connects hosts simulated worker hosts, host i to node i%3,
// and starts them.
func startFleet(ctx context.Context, b *testing.B, urls []string, hosts int, log *slog.Logger) *fleet {
	b.Helper()
	ctx, cancel := context.WithCancel(ctx)
	f := &fleet{hosts: make([]*simHost, hosts), cancel: cancel, run: &errgroup.Group{}}
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
		f.stop(b)
		b.Fatal(err)
	}
	for i, h := range f.hosts {
		// Heartbeats spread over the interval, as hosts started at random
		// moments would send them.
		h.start(ctx, f, time.Duration(i)*fleetHeartbeat/time.Duration(hosts))
	}
	return f
}

// err is the first error a host stopped with, if any.
func (f *fleet) err() error {
	if err := f.failed.Load(); err != nil {
		return *err
	}
	return nil
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
	refused             *atomic.Int64
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
	h.refused = &f.refused
	run := func(stage func(context.Context) error) {
		f.run.Go(func() error {
			err := stage(ctx)
			if err != nil && ctx.Err() == nil {
				err = fmt.Errorf("%s: %w", h.ref.Host, err)
				f.failed.CompareAndSwap(nil, &err)
				return err
			}
			return nil
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
	// fetch: the host's assignments, its prefetch requests, and the end of
	// every job (to release cache entries).
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
	run(func(ctx context.Context) error { return h.fetch.OnJobEvent(ctx, "finished", func(int64) {}) })
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

// current loads a job and says whether it is still the instance's to work on.
func current(ctx context.Context, bus *streams.Bus, job int64, w schemas.WorkerRef) (*schemas.JobAggregate, bool, error) {
	agg, err := bus.LoadJob(ctx, job)
	if err != nil {
		return nil, false, err
	}
	return agg, !agg.Final() && !agg.Started && agg.Worker != nil && *agg.Worker == w, nil
}

// setUp is fetch's part: a job assigned to the host is ready at once.
func (h *simHost) setUp(ctx context.Context, ev schemas.Event, p schemas.Payload, _ streams.Delivery) error {
	a, ok := p.(*schemas.JobAssigned)
	if !ok {
		return nil
	}
	agg, mine, err := current(ctx, h.fetch, ev.Job, a.Worker)
	if err != nil || !mine {
		return err
	}
	_, err = h.fetch.Append(ctx, ev.Job, schemas.JobReady{Worker: a.Worker, Settings: agg.Settings, Assets: map[string]string{}})
	return ignoreMovedOn(err)
}

// runJob is boot's part: one module that passes, without a VM.
func (h *simHost) runJob(ctx context.Context, ev schemas.Event, p schemas.Payload, _ streams.Delivery) error {
	if _, ok := p.(*schemas.JobReady); !ok {
		return nil
	}
	_, mine, err := current(ctx, h.boot, ev.Job, h.ref)
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
		h.refused.Add(1)
		module.Result, module.Reason = schemas.ResultIncomplete, err.Error()
	}
	if _, err := h.boot.Append(ctx, ev.Job, schemas.ModuleFinished{ModuleResult: module}); err != nil {
		h.refused.Add(1)
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
// none finishes for two minutes or a host fails: the fleet is stuck, which
// is a bug, not a slow run.
func (r *fleetRecord) waitFinished(b *testing.B, n int, f *fleet) {
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
		if err := f.err(); err != nil {
			b.Fatal(err)
		}
		select {
		case <-r.finished:
			stuck.Reset(2 * time.Minute)
		case <-stuck.C:
			b.Fatalf("no job finished for 2 minutes: %d of %d done", done, n)
		}
	}
}

// latencies computes the figures from the record; fleetUp is when the
// fleet was ready, the moment every instance was free.
func (r *fleetRecord) latencies(fleetUp time.Time) (assign, dispatch, whole latencies, first, last time.Time, notPassed int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	byWorker := map[schemas.WorkerRef][]*jobTimes{}
	for _, j := range r.jobs {
		assign = append(assign, j.assigned.Sub(j.created))
		whole = append(whole, j.finished.Sub(j.created))
		if first.IsZero() || j.created.Before(first) {
			first = j.created
		}
		if j.finished.After(last) {
			last = j.finished
		}
		if j.result != schemas.ResultPassed {
			notPassed++
		}
		byWorker[j.worker] = append(byWorker[j.worker], j)
	}
	for _, js := range byWorker {
		slices.SortFunc(js, func(a, b *jobTimes) int { return a.assigned.Compare(b.assigned) })
		free := fleetUp
		for _, j := range js {
			ready := j.created
			if free.After(ready) {
				ready = free
			}
			dispatch = append(dispatch, j.assigned.Sub(ready))
			free = j.finished
		}
	}
	return assign, dispatch, whole, first, last, notPassed
}

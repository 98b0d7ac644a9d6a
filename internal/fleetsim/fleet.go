// Package fleetsim simulates worker hosts for load tests and benchmarks:
// each host has the connections, durable consumers and reports of a real
// `jetqa worker` (one instance), and asks the matcher pool once per job as
// an assert_screen does, but runs no VM. Its hosts are protocol peers on
// real NATS against the real server stages, not mocks.
package fleetsim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// How the simulated hosts behave: as `jetqa worker` does by default.
const (
	Heartbeat = 10 * time.Second // boot.Config's default, of Config.Heartbeat
	Restart   = 5 * time.Second  // RestartSec of deploy/systemd/jetqa-worker@.service
	Class     = "qemu_x86_64"
)

// Config describes a fleet.
type Config struct {
	Hosts int
	// Dial connects one stage's bus of host i as worker w (w.Instance 0:
	// the host's own stages); the fleet makes it speak as w.
	Dial func(ctx context.Context, i int, stage string, w schemas.WorkerRef) (*streams.Bus, error)
	// Match, when it has a screen, is asked of the matcher pool once in
	// each job's module, with its ID and ReplyTo set per job; nil asks
	// nothing.
	Match *schemas.MatchRequested
	// Heartbeat is how often each instance reports it is alive (0:
	// Heartbeat).
	Heartbeat time.Duration
	Log       *slog.Logger
}

// Fleet is the simulated worker hosts.
type Fleet struct {
	cfg       Config
	ctx       context.Context // the fleet's; each host's is a child
	cancel    context.CancelFunc
	mu        sync.Mutex   // hosts
	hosts     []*host      // nil: killed
	Restarts  atomic.Int64 // stages that stopped with an error and were started again
	lastErr   atomic.Pointer[error]
	Retries   atomic.Int64 // handler errors, retried by the consumers
	Refused   atomic.Int64 // module reports the authority refused
	Stale     atomic.Int64 // deliveries whose job read lagged behind (current)
	Matched   atomic.Int64 // match requests answered
	Unmatched atomic.Int64 // match requests answered with an error
}

// Start connects the hosts, starts them and waits until all their durable
// consumers exist, as admin (a bus that may read stream info) counts them.
//
// Hosts start a few at a time: each asks for four consumers, and a
// hundred hosts asking at once kept a cluster's meta leader busy past the
// JetStream API's timeout of 5 s.
func Start(ctx context.Context, tb testing.TB, cfg Config, admin *streams.Bus) *Fleet {
	tb.Helper()
	ctx, cancel := context.WithCancel(ctx)
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = Heartbeat
	}
	f := &Fleet{cfg: cfg, ctx: ctx, hosts: make([]*host, cfg.Hosts), cancel: cancel}
	tb.Cleanup(func() { f.Stop(tb) })
	var dial errgroup.Group
	dial.SetLimit(2 * runtime.NumCPU())
	for i := range cfg.Hosts {
		dial.Go(func() error {
			h, err := f.dialHost(i)
			f.hosts[i] = h
			return err
		})
	}
	if err := dial.Wait(); err != nil {
		tb.Fatal(err)
	}
	// fetch, upload, boot on the job stream; prefetch on the workers'.
	const perHost, startingAtOnce = 4, 8
	before := Consumers(ctx, tb, admin)
	waitCtx, cancelWait := context.WithTimeout(ctx, 30*time.Minute)
	defer cancelWait()
	created := func(want int) func() error {
		return func() error {
			// A stage that fails to start now will fail again: its
			// consumer was refused.
			if err := f.lastErr.Load(); err != nil {
				tb.Fatalf("fleet of %d hosts did not start: %v", cfg.Hosts, *err)
			}
			if n := Consumers(ctx, tb, admin) - before; n < want {
				return fmt.Errorf("fleet not up: %d of %d consumers of %d hosts created (%d restarts)", n, perHost*cfg.Hosts, cfg.Hosts, f.Restarts.Load())
			}
			return nil
		}
	}
	for i, h := range f.hosts {
		if i >= startingAtOnce {
			natstest.WaitUntil(tb, waitCtx, created(perHost*(i-startingAtOnce)))
		}
		// Heartbeats spread over the interval, as hosts started at random
		// moments would send them.
		h.start(time.Duration(i) * cfg.Heartbeat / time.Duration(cfg.Hosts))
	}
	natstest.WaitUntil(tb, waitCtx, created(perHost*cfg.Hosts))
	return f
}

// Stop stops the hosts' stages, then closes their connections; once is
// enough, more do nothing.
func (f *Fleet) Stop(tb testing.TB) {
	f.cancel()
	f.mu.Lock()
	hosts := f.hosts
	f.hosts = make([]*host, len(hosts))
	f.mu.Unlock()
	var stopping sync.WaitGroup
	for _, h := range hosts {
		if h != nil {
			stopping.Go(func() {
				if err := h.stop(false); err != nil {
					tb.Error(err)
				}
			})
		}
	}
	stopping.Wait()
}

// Kill stops host i as a crash would: its connections close at once,
// whatever its stages were doing, and nothing of it runs after. It says
// whether the host ran.
func (f *Fleet) Kill(i int) bool {
	f.mu.Lock()
	h := f.hosts[i]
	f.hosts[i] = nil
	f.mu.Unlock()
	if h == nil {
		return false
	}
	_ = h.stop(true)
	return true
}

// Revive starts host i again, as its service manager would after a
// crash: new connections, the same durable consumers, a registration.
func (f *Fleet) Revive(i int) error {
	h, err := f.dialHost(i)
	if err != nil {
		return err
	}
	f.mu.Lock()
	if f.hosts[i] != nil || f.ctx.Err() != nil {
		f.mu.Unlock()
		_ = h.stop(true)
		return fmt.Errorf("host %d runs already, or the fleet stopped", i)
	}
	f.hosts[i] = h
	f.mu.Unlock()
	h.start(0)
	return nil
}

// Consumers counts the consumers of the job and the worker stream.
func Consumers(ctx context.Context, tb testing.TB, bus *streams.Bus) int {
	n := 0
	for _, name := range []string{streams.StreamJobs, streams.StreamWorkers} {
		s, err := bus.JS.Stream(ctx, name)
		if err != nil {
			tb.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			tb.Fatal(err)
		}
		n += info.State.Consumers
	}
	return n
}

// host is one worker host with one instance, on the streams exactly as
// `jetqa worker` is: a connection for fetch, one for upload (both speak
// for the host, instance 0) and one for the instance's boot stage; the
// same durable consumers, requested from the authority; the same reports.
// Where the real stages download assets, check out tests or run a VM, it
// does nothing.
type host struct {
	ref                 schemas.WorkerRef // the one instance
	fetch, upload, boot *streams.Bus
	running             atomic.Int64 // the job the instance runs, for heartbeats
	fleet               *Fleet
	ctx                 context.Context
	cancel              context.CancelFunc
	run                 errgroup.Group

	mu      sync.Mutex
	answers map[string]chan *schemas.MatchResolved // match requests waiting
}

func (f *Fleet) dialHost(i int) (*host, error) {
	name := fmt.Sprintf("w%04d", i+1)
	ctx, cancel := context.WithCancel(f.ctx)
	h := &host{ref: schemas.WorkerRef{Host: name, Instance: 1}, fleet: f, ctx: ctx, cancel: cancel, answers: map[string]chan *schemas.MatchResolved{}}
	var err error
	dial := func(stage string, w schemas.WorkerRef) *streams.Bus {
		if err != nil {
			return nil
		}
		var bus *streams.Bus
		if bus, err = f.cfg.Dial(ctx, i, stage, w); err == nil {
			bus.AsWorker(w)
		}
		return bus
	}
	hostRef := schemas.WorkerRef{Host: name}
	h.fetch, h.upload, h.boot = dial("fetch", hostRef), dial("upload", hostRef), dial("boot", h.ref)
	if err != nil {
		_ = h.stop(true)
		return nil, err
	}
	return h, nil
}

// stop ends the host's stages and closes its connections; on a crash at
// once, without waiting for the stages, as a killed process's close.
func (h *host) stop(crash bool) error {
	closeAll := func() {
		for _, bus := range []*streams.Bus{h.fetch, h.upload, h.boot} {
			if bus != nil {
				bus.Close()
			}
		}
	}
	h.cancel()
	if crash {
		closeAll()
	}
	err := h.run.Wait()
	if !crash {
		closeAll()
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// start runs the host's stages until it stops; the first heartbeat is
// sent after offset.
func (h *host) start(offset time.Duration) {
	f, ctx := h.fleet, h.ctx
	// A stage that stops with an error starts again after a while, as
	// systemd restarts jetqa-worker (deploy/systemd: RestartSec=5).
	run := func(stage func(context.Context) error) {
		h.run.Go(func() error {
			for {
				err := stage(ctx)
				if ctx.Err() != nil {
					return nil
				}
				f.Restarts.Add(1)
				f.lastErr.Store(&err)
				f.cfg.Log.Warn("simulated stage stopped, starting it again", "host", h.ref.Host, "err", err)
				again := time.NewTimer(Restart)
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
				f.Retries.Add(1)
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
	// boot: the answers to its match requests, as the boot stage follows
	// them; register, heartbeat, run what is ready.
	if f.cfg.Match != nil {
		run(func(ctx context.Context) error {
			return h.boot.Watch(ctx, streams.WatchConfig{Stream: streams.StreamMatchResults, Filters: []string{streams.MatchResolvedFor(h.ref)}, New: true},
				func(_ schemas.Event, p schemas.Payload, _ streams.Delivery) error {
					if r, ok := p.(*schemas.MatchResolved); ok {
						h.mu.Lock()
						ch := h.answers[r.ID]
						h.mu.Unlock()
						if ch != nil {
							select {
							case ch <- r:
							default:
							}
						}
					}
					return nil
				})
		})
	}
	run(func(ctx context.Context) error {
		if _, err := h.boot.Append(ctx, 0, schemas.WorkerRegistered{Worker: h.ref, Classes: []string{Class}, Arch: "x86_64", CPUs: 8, MemoryMiB: 16384}); err != nil {
			return fmt.Errorf("register: %w", err)
		}
		h.run.Go(func() error { h.heartbeat(ctx, offset); return nil })
		return h.boot.Consume(ctx, streams.ConsumerConfig{
			Stream: streams.StreamJobs, Durable: streams.BootDurable(h.ref), Filters: []string{streams.ReadyFor(h.ref)},
			AckWait: time.Minute, MaxDeliver: 2,
		}, counted(h.runJob))
	})
}

func (h *host) heartbeat(ctx context.Context, offset time.Duration) {
	first := time.NewTimer(offset)
	defer first.Stop()
	select {
	case <-ctx.Done():
		return
	case <-first.C:
	}
	tick := time.NewTicker(h.fleet.cfg.Heartbeat)
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

// readAt loads a job as of the event just delivered at seq, at least.
//
// A read can miss an event the consumer has already delivered: reads go
// to the stream's leader, which may store a message after a replica
// whose consumer delivers it. Taken as it is, such a read says the job
// is not assigned (yet), and the job would be skipped and stay assigned
// for good; so it is read again. Stale counts the deliveries that had to.
func (h *host) readAt(ctx context.Context, bus *streams.Bus, job int64, seq uint64) (*schemas.JobAggregate, error) {
	for try := 0; ; try++ {
		agg, err := bus.LoadJob(ctx, job)
		if err != nil || agg.Seq >= seq {
			return agg, err
		}
		if try == 0 {
			h.fleet.Stale.Add(1)
		}
		if try == 100 {
			return nil, fmt.Errorf("job %d still read at sequence %d, before the event delivered at %d", job, agg.Seq, seq)
		}
	}
}

// current says whether a job is still instance w's to set up.
func (h *host) current(ctx context.Context, bus *streams.Bus, job int64, seq uint64, w schemas.WorkerRef) (*schemas.JobAggregate, bool, error) {
	agg, err := h.readAt(ctx, bus, job, seq)
	if err != nil {
		return nil, false, err
	}
	return agg, !agg.Final() && !agg.Started && agg.Worker != nil && *agg.Worker == w, nil
}

// bootable returns a job when it is the instance's and not over, started
// or not, and not run by this host now; nil when not.
func (h *host) bootable(ctx context.Context, job int64, seq uint64) (*schemas.JobAggregate, error) {
	agg, err := h.readAt(ctx, h.boot, job, seq)
	if err != nil || agg.Final() || agg.Worker == nil || *agg.Worker != h.ref || agg.Started && h.running.Load() == job {
		return nil, err
	}
	return agg, nil
}

// setUp is fetch's part: a job assigned to the host is ready at once.
func (h *host) setUp(ctx context.Context, ev schemas.Event, p schemas.Payload, d streams.Delivery) error {
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

// runJob is boot's part: one module that passes, without a VM, which asks
// the matcher pool once when the fleet is to.
func (h *host) runJob(ctx context.Context, ev schemas.Event, p schemas.Payload, d streams.Delivery) error {
	if _, ok := p.(*schemas.JobReady); !ok {
		return nil
	}
	agg, err := h.bootable(ctx, ev.Job, d.Sequence)
	if err != nil || agg == nil {
		return err
	}
	if agg.Started || d.Redelivery > 0 {
		// As the real boot stage: the instance stopped while it ran the
		// job and was started again.
		_, err = h.boot.Append(ctx, ev.Job, schemas.TestsFinished{Worker: h.ref, Result: schemas.ResultIncomplete, Reason: "the worker instance restarted while running the job"})
		return ignoreMovedOn(err)
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
		h.fleet.Refused.Add(1)
		module.Result, module.Reason = schemas.ResultIncomplete, err.Error()
	}
	if h.fleet.cfg.Match != nil {
		if err := h.match(ctx, ev.Job); err != nil {
			h.fleet.Unmatched.Add(1)
			module.Result, module.Reason = schemas.ResultFailed, err.Error()
		}
	}
	if _, err := h.boot.Append(ctx, ev.Job, schemas.ModuleFinished{ModuleResult: module}); err != nil {
		h.fleet.Refused.Add(1)
	}
	_, err = h.boot.Append(ctx, ev.Job, schemas.TestsFinished{Worker: h.ref, Result: module.Result, Reason: module.Reason, Modules: []schemas.ModuleResult{module}})
	return ignoreMovedOn(err)
}

// match asks the pool the fleet's request for the job and waits for every
// part of its answer, at most a minute.
func (h *host) match(ctx context.Context, job int64) error {
	req := *h.fleet.cfg.Match
	req.ID, req.ReplyTo = fmt.Sprintf("%d-1", job), h.ref
	ch := make(chan *schemas.MatchResolved, 64)
	h.mu.Lock()
	h.answers[req.ID] = ch
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.answers, req.ID)
		h.mu.Unlock()
	}()
	if _, err := h.boot.Append(ctx, job, req); err != nil {
		return fmt.Errorf("ask the matchers: %w", err)
	}
	late := time.NewTimer(time.Minute)
	defer late.Stop()
	for parts := 0; ; {
		select {
		case r := <-ch:
			if r.Error != "" {
				return fmt.Errorf("matcher %s: %s", r.Matcher, r.Error)
			}
			parts++
			if r.Part == nil || parts == r.Part.Count {
				h.fleet.Matched.Add(1)
				return nil
			}
		case <-late.C:
			return fmt.Errorf("match request %s unanswered after a minute", req.ID)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// finish is upload's part: nothing to store, the job ends as the tests did.
func (h *host) finish(ctx context.Context, ev schemas.Event, p schemas.Payload, _ streams.Delivery) error {
	tf, ok := p.(*schemas.TestsFinished)
	if !ok {
		return nil
	}
	_, err := h.upload.Append(ctx, ev.Job, schemas.JobFinished{Result: tf.Result, Reason: tf.Reason, Modules: tf.Modules})
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

// Package schedule is the scheduler stage: it folds job and worker events
// into the set of scheduled jobs and live worker instances, assigns a job
// the moment a worker instance whose WORKER_CLASS covers it is free, and
// notices within seconds when a worker instance goes silent: its job goes
// back to the queue or, once started, ends incomplete and is cloned.
package schedule

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// Config of the scheduler.
type Config struct {
	// WorkerTimeout is how long a worker instance may be silent before it
	// counts as offline; default 60 s.
	WorkerTimeout time.Duration
	// CloneLimit is how many automatic clones in a row a job whose worker
	// went offline gets; default 1.
	CloneLimit int
	// Name identifies this scheduler among several; default host:pid.
	Name string
}

func (c Config) withDefaults() Config {
	if c.WorkerTimeout <= 0 {
		c.WorkerTimeout = 60 * time.Second
	}
	if c.CloneLimit == 0 {
		c.CloneLimit = 1
	}
	if c.Name == "" {
		h, _ := os.Hostname()
		c.Name = fmt.Sprintf("schedule@%s:%d", h, os.Getpid())
	}
	return c
}

// Bus is what the scheduler needs of the event streams.
type Bus interface {
	Append(ctx context.Context, job int64, p schemas.Payload) (uint64, error)
	Watch(ctx context.Context, cfg streams.WatchConfig, fn func(schemas.Event, schemas.Payload, streams.Delivery) error) error
	WatchDeadLetters(ctx context.Context, fn func(streams.DeadLetter, streams.Delivery) error) error
	LastSequence(ctx context.Context, stream string) (uint64, error)
	LoadJob(ctx context.Context, job int64) (*schemas.JobAggregate, error)
	NextJobID(ctx context.Context) (int64, error)
	Restart(ctx context.Context, agg *schemas.JobAggregate, by string, retry int) (int64, error)
	Lease(name, holder string) *streams.Lease
}

// Scheduler assigns jobs to worker instances. Several may run at once:
// one holds the scheduler lease and acts, the others follow the streams
// and take over when it stops.
type Scheduler struct {
	cfg Config
	bus Bus
	log *slog.Logger

	jobs    map[int64]*job
	workers map[schemas.WorkerRef]*worker
	leader  bool
	// named are clones an original named before their creation was seen
	// (the order of restarts before Bus.Restart).
	named map[int64]bool
	// waiters are the jobs waiting for each unfinished parent (JobCreated.After).
	waiters map[int64][]*job
	// How far the worker stream has been read: the newest event time seen
	// on it, and whether events were still waiting after the last one.
	// Liveness is judged at that time, not now, while the scheduler is
	// behind: a worker whose heartbeat waits unread is not silent.
	workersSeen   time.Time
	workersBehind bool
	// watchingSince is when this scheduler last began to see the streams
	// whole: when it took the lease, or its lease could be held again
	// after NATS could not be reached. A worker's silence counts from no
	// earlier, so an outage of the server or of NATS ends nobody's jobs.
	watchingSince time.Time
	// blind: the last try to hold the lease failed.
	blind bool
	// stuck are the jobs a stage of their worker gave up on (a dead
	// letter), to be ended.
	stuck map[int64][]deadLetter
}

type deadLetter struct {
	streams.DeadLetter
	stored time.Time
}

type job struct {
	id       int64
	priority int
	classes  []string
	worker   *schemas.WorkerRef
	assigned time.Time // when its assignment was stored
	// held: a clone whose original does not name it yet (Bus.Restart
	// creates the clone first); it is not assigned until it does.
	held bool
	// after are the parents it still waits for; unknown are parents that
	// had finished before this scheduler saw it, their results to read.
	after, unknown []int64
	// skip says why it will not run: a parent did not pass.
	skip string
}

type worker struct {
	ref        schemas.WorkerRef
	registered bool
	classes    []string
	busy       int64     // job id, 0 when free
	busySince  time.Time // when its assignment was stored
	elsewhere  bool      // running another server's job (WorkerHeartbeat.BusyElsewhere)
	lastSeen   time.Time
	online     bool
}

// New returns a scheduler.
func New(cfg Config, bus Bus, log *slog.Logger) *Scheduler {
	return &Scheduler{cfg: cfg.withDefaults(), bus: bus, log: log, jobs: map[int64]*job{}, workers: map[schemas.WorkerRef]*worker{}, named: map[int64]bool{}, waiters: map[int64][]*job{}, stuck: map[int64][]deadLetter{}}
}

type update struct {
	ev       schemas.Event
	p        schemas.Payload
	stream   string
	caughtUp bool   // this stream has no older events left to replay
	pending  uint64 // events of the stream left after this one
	stored   time.Time
	dead     *streams.DeadLetter
}

// Run replays the job and worker streams to rebuild its state, then acts
// on events as they arrive, until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	updates := make(chan update, 256)
	errs := make(chan error, 3)
	watches := []struct {
		stream  string
		filters []string
	}{
		{streams.StreamJobs, []string{
			streams.JobEvents("created"), streams.JobEvents("assigned.>"), streams.JobEvents("unassigned"), streams.JobEvents("finished"), streams.JobEvents("restarted"),
		}},
		{streams.StreamWorkers, []string{"jetqa.worker.>"}},
	}
	replaying := map[string]bool{}
	for _, w := range watches {
		last, err := s.bus.LastSequence(ctx, w.stream)
		if err != nil {
			return err
		}
		replaying[w.stream] = last > 0
		go func() {
			errs <- s.bus.Watch(ctx, streams.WatchConfig{Stream: w.stream, Filters: w.filters}, func(ev schemas.Event, p schemas.Payload, d streams.Delivery) error {
				select {
				case updates <- update{ev: ev, p: p, stream: w.stream, caughtUp: d.Sequence >= last || d.Pending == 0, pending: d.Pending, stored: d.Stored}:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
		}()
	}
	go func() {
		errs <- s.bus.WatchDeadLetters(ctx, func(d streams.DeadLetter, del streams.Delivery) error {
			if d.Job == 0 {
				return nil
			}
			select {
			case updates <- update{dead: &d, stream: streams.StreamDead, stored: del.Stored}:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	lease := s.bus.Lease("scheduler", s.cfg.Name)
	defer lease.Release(context.WithoutCancel(ctx))
	every := min(s.cfg.WorkerTimeout/4, streams.LeaseTTL/5)
	tick := time.NewTicker(every)
	defer tick.Stop()
	var lastHold time.Time
	// pending says something happened that may let a job be assigned; a
	// heartbeat of a worker already known to be online does not.
	pending := true
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errs:
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("scheduler: %w", err)
		case u := <-updates:
			// Everything that has arrived, before acting: assigning takes a
			// round trip per job, and heartbeats must not wait behind it.
			for more := true; more; {
				if s.take(u, replaying) {
					pending = true
				}
				select {
				case u = <-updates:
				default:
					more = false
				}
			}
		case <-tick.C:
			pending = true
		}
		if replaying[streams.StreamJobs] || replaying[streams.StreamWorkers] {
			continue // never act on a half-rebuilt state
		}
		if time.Since(lastHold) >= every {
			lastHold = time.Now()
			s.holdLease(ctx, lease)
			pending = true // the lease may just have come to this scheduler
			if s.leader {
				s.checkLiveness(ctx)
				s.endStuck(ctx)
			}
		}
		if s.leader && pending {
			pending = false
			if err := s.assign(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				// A stream leader lost with its node answers nobody until
				// another is elected: try again at the next tick, do not
				// take the server down.
				s.log.Warn("assigning jobs failed; trying again", "err", err)
			}
		}
	}
}

// take folds one update into the state and says whether it may change
// which jobs can be assigned.
func (s *Scheduler) take(u update, replaying map[string]bool) bool {
	if u.caughtUp {
		replaying[u.stream] = false
	}
	// Events count at the time NATS stored them, one clock for both
	// streams: a worker's own clock may be off by any amount.
	if !u.stored.IsZero() {
		u.ev.Time = u.stored
	}
	if u.dead != nil {
		s.stuck[u.dead.Job] = append(s.stuck[u.dead.Job], deadLetter{*u.dead, u.stored})
		return false
	}
	if u.stream == streams.StreamWorkers {
		s.workersSeen = later(s.workersSeen, u.ev.Time)
		s.workersBehind = u.pending > 0
	}
	return s.apply(u.ev, u.p)
}

// holdLease takes or renews the scheduler lease; only its holder acts.
func (s *Scheduler) holdLease(ctx context.Context, lease *streams.Lease) {
	held, err := lease.Hold(ctx)
	if err != nil && ctx.Err() == nil {
		s.log.Warn("scheduler lease", "err", err)
	}
	switch {
	case err != nil:
		s.blind = true
	case s.blind || held && !s.leader:
		s.blind = false
		s.watchingSince = time.Now()
	}
	if held != s.leader {
		s.log.Info("scheduler lease", "active", held, "name", s.cfg.Name)
		s.leader = held
	}
}

// apply folds one event into the scheduler's state and says whether it may
// change which jobs can be assigned.
func (s *Scheduler) apply(ev schemas.Event, p schemas.Payload) bool {
	switch p := p.(type) {
	case *schemas.JobCreated:
		j := &job{id: ev.Job, priority: schemas.Priority(p.Settings), classes: schemas.WorkerClasses(p.Settings["WORKER_CLASS"]), held: p.CloneOf != 0 && !s.named[ev.Job]}
		for _, parent := range p.After {
			if s.jobs[parent] != nil {
				j.after = append(j.after, parent)
				s.waiters[parent] = append(s.waiters[parent], j)
			} else {
				j.unknown = append(j.unknown, parent)
			}
		}
		s.jobs[ev.Job] = j
		delete(s.named, ev.Job)
	case *schemas.JobRestarted:
		if j := s.jobs[p.Clone]; j != nil {
			j.held = false
		} else {
			s.named[p.Clone] = true
		}
	case *schemas.JobAssigned:
		if j := s.jobs[ev.Job]; j != nil {
			ref := p.Worker
			j.worker, j.assigned = &ref, ev.Time
		}
		w := s.worker(p.Worker)
		w.busy, w.busySince = ev.Job, ev.Time
	case *schemas.JobUnassigned:
		if j := s.jobs[ev.Job]; j != nil {
			j.worker = nil
		}
		if w := s.workers[p.Worker]; w != nil && w.busy == ev.Job {
			w.busy = 0
		}
	case *schemas.JobFinished:
		if j := s.jobs[ev.Job]; j != nil && j.worker != nil {
			if w := s.workers[*j.worker]; w != nil && w.busy == ev.Job {
				w.busy = 0
			}
		}
		delete(s.jobs, ev.Job)
		delete(s.stuck, ev.Job)
		for _, child := range s.waiters[ev.Job] {
			child.after = slices.DeleteFunc(child.after, func(id int64) bool { return id == ev.Job })
			if !passed(p.Result) && child.skip == "" {
				child.skip = fmt.Sprintf("its parent job %d ended %s", ev.Job, p.Result)
			}
		}
		delete(s.waiters, ev.Job)
	case *schemas.WorkerRegistered:
		// A worker instance registers when it starts: it runs nothing.
		// The two streams are replayed side by side, so a registration
		// may come after an assignment that was stored later.
		w := s.worker(p.Worker)
		w.registered, w.classes, w.online, w.lastSeen = true, p.Classes, true, later(w.lastSeen, ev.Time)
		if !w.busySince.After(ev.Time) {
			w.busy = 0
		}
	case *schemas.WorkerHeartbeat:
		w := s.worker(p.Worker)
		wasOnline, wasElsewhere := w.online, w.elsewhere
		w.online, w.lastSeen = true, later(w.lastSeen, ev.Time)
		w.elsewhere = p.BusyElsewhere
		return !wasOnline || wasElsewhere && !w.elsewhere
	case *schemas.WorkerOffline:
		if w := s.workers[p.Worker]; w != nil && !w.lastSeen.After(p.LastSeen) {
			w.online = false
		}
	}
	return true
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func (s *Scheduler) worker(ref schemas.WorkerRef) *worker {
	w := s.workers[ref]
	if w == nil {
		w = &worker{ref: ref}
		s.workers[ref] = w
	}
	return w
}

// passed says a parent's result lets its children run, as openQA's
// chained dependencies.
func passed(result string) bool {
	return result == schemas.ResultPassed || result == schemas.ResultSoftfailed
}

// readParents reads the results of parents that had finished before this
// scheduler saw the job (a child restarted later).
func (s *Scheduler) readParents(ctx context.Context, j *job) {
	for len(j.unknown) > 0 {
		parent := j.unknown[0]
		agg, err := s.bus.LoadJob(ctx, parent)
		switch {
		case errors.Is(err, streams.ErrNoJob):
			j.skip = fmt.Sprintf("its parent job %d does not exist", parent)
		case err != nil:
			s.log.Warn("reading a parent job failed; trying again", "job", j.id, "parent", parent, "err", err)
			return
		case !agg.Final():
			// Unfinished, yet not seen: wait for its events.
			j.after = append(j.after, parent)
			s.waiters[parent] = append(s.waiters[parent], j)
		case !passed(agg.Result) && j.skip == "":
			j.skip = fmt.Sprintf("its parent job %d ended %s", parent, agg.Result)
		}
		j.unknown = j.unknown[1:]
	}
}

// skipJob ends a job whose parent did not pass, as openQA skips the
// chained children of a failed job.
func (s *Scheduler) skipJob(ctx context.Context, j *job) {
	_, err := s.bus.Append(ctx, j.id, schemas.JobFinished{Result: schemas.ResultSkipped, Reason: j.skip})
	switch {
	case err == nil, errors.Is(err, schemas.ErrTransition):
		s.log.Info("job skipped", "job", j.id, "why", j.skip)
		delete(s.jobs, j.id)
	default:
		s.log.Warn("skipping a job failed; trying again", "job", j.id, "err", err)
	}
}

// assign gives every scheduled job it can a free worker: lower PRIORITY
// first, then older.
func (s *Scheduler) assign(ctx context.Context) error {
	var queue []*job
	for _, j := range s.jobs {
		if j.worker != nil || j.held {
			continue
		}
		if len(j.unknown) > 0 {
			s.readParents(ctx, j)
		}
		if j.skip != "" {
			s.skipJob(ctx, j)
			continue
		}
		if len(j.after) == 0 && len(j.unknown) == 0 {
			queue = append(queue, j)
		}
	}
	sort.Slice(queue, func(a, b int) bool {
		if queue[a].priority != queue[b].priority {
			return queue[a].priority < queue[b].priority
		}
		return queue[a].id < queue[b].id
	})
	for _, j := range queue {
		w := s.freeWorkerFor(j)
		if w == nil {
			continue
		}
		_, err := s.bus.Append(ctx, j.id, schemas.JobAssigned{Worker: w.ref})
		switch {
		case errors.Is(err, schemas.ErrTransition):
			// Another scheduler, a cancel or a restart got there first;
			// the job's events will tell this one what happened.
			s.log.Info("job not assigned", "job", j.id, "why", err)
			delete(s.jobs, j.id)
			continue
		case ctx.Err() != nil:
			return nil
		case err != nil:
			return fmt.Errorf("assign job %d: %w", j.id, err)
		}
		s.log.Info("job assigned", "job", j.id, "worker", w.ref.String())
		ref := w.ref
		j.worker = &ref
		w.busy = j.id
	}
	return nil
}

func (s *Scheduler) freeWorkerFor(j *job) *worker {
	var free []*worker
	for _, w := range s.workers {
		if w.registered && w.online && w.busy == 0 && !w.elsewhere && covers(w.classes, j.classes) {
			free = append(free, w)
		}
	}
	if len(free) == 0 {
		return nil
	}
	// Stable choice: the same state always gives the same worker.
	sort.Slice(free, func(a, b int) bool {
		if free[a].ref.Host != free[b].ref.Host {
			return free[a].ref.Host < free[b].ref.Host
		}
		return free[a].ref.Instance < free[b].ref.Instance
	})
	return free[0]
}

// covers says whether a worker's classes contain every class the job asks for.
func covers(worker, job []string) bool {
	for _, c := range job {
		if !slices.Contains(worker, c) {
			return false
		}
	}
	return true
}

// checkLiveness declares silent worker instances offline and deals with
// the job each had.
func (s *Scheduler) checkLiveness(ctx context.Context) {
	now := time.Now()
	if s.workersBehind {
		now = s.workersSeen
	}
	for _, w := range s.workers {
		if !w.online || now.Sub(later(w.lastSeen, s.watchingSince)) <= s.cfg.WorkerTimeout {
			continue
		}
		s.log.Warn("worker went offline", "worker", w.ref.String(), "last_seen", w.lastSeen, "job", w.busy)
		if _, err := s.bus.Append(ctx, 0, schemas.WorkerOffline{Worker: w.ref, LastSeen: w.lastSeen}); err != nil {
			s.log.Error("worker offline not recorded", "worker", w.ref.String(), "err", err)
			continue
		}
		w.online = false
		if w.busy != 0 {
			if err := s.recoverJob(ctx, w.busy, w.ref); err != nil {
				s.log.Error("job of an offline worker", "job", w.busy, "err", err)
			}
		}
	}
}

// endStuck ends, incomplete, each job a stage of its worker gave up on
// since it was assigned: with nothing left to take its next step, it
// would wait for good, and its worker instance with it.
func (s *Scheduler) endStuck(ctx context.Context) {
	for id, letters := range s.stuck {
		j := s.jobs[id]
		i := -1
		if j != nil && j.worker != nil {
			i = slices.IndexFunc(letters, func(d deadLetter) bool { return !d.stored.Before(j.assigned) && d.StopsJobOf(*j.worker) })
		}
		if i < 0 {
			delete(s.stuck, id) // finished, given back, or not its worker's
			continue
		}
		d := letters[i]
		reason := fmt.Sprintf("the %s stage of worker %s gave up on the job: %s", d.Stage(), j.worker, d.Reason)
		_, err := s.bus.Append(ctx, id, schemas.JobFinished{Result: schemas.ResultIncomplete, Reason: reason})
		if err != nil && !errors.Is(err, schemas.ErrTransition) {
			s.log.Error("job left stuck by a dead letter not ended", "job", id, "err", err)
			continue
		}
		s.log.Warn("job ended: a stage gave up on it", "job", id, "why", reason)
		delete(s.stuck, id)
	}
}

// recoverJob gives a job of an offline worker back to the queue when it
// had not started, or ends it incomplete and schedules a clone.
func (s *Scheduler) recoverJob(ctx context.Context, id int64, ref schemas.WorkerRef) error {
	agg, err := s.bus.LoadJob(ctx, id)
	if err != nil {
		return err
	}
	if agg.Final() || agg.Worker == nil || *agg.Worker != ref {
		return nil
	}
	if !agg.Started {
		_, err := s.bus.Append(ctx, id, schemas.JobUnassigned{Worker: ref, Reason: fmt.Sprintf("worker %s went offline before starting the job", ref)})
		if err == nil {
			s.log.Info("job back in the queue", "job", id, "worker", ref.String())
		}
		return ignoreTransition(err)
	}
	_, err = s.bus.Append(ctx, id, schemas.JobFinished{Result: schemas.ResultIncomplete, Reason: fmt.Sprintf("worker %s went offline", ref)})
	if err != nil {
		return ignoreTransition(err)
	}
	if agg.Retry >= s.cfg.CloneLimit {
		s.log.Info("job not cloned: retry limit reached", "job", id, "retry", agg.Retry)
		return nil
	}
	// The original names one clone only, even with several schedulers or
	// a retry after a crash: another's clone wins, this one is obsoleted.
	clone, err := s.bus.Restart(ctx, agg, "auto", agg.Retry+1)
	if err != nil {
		return ignoreTransition(err)
	}
	s.log.Info("job cloned", "job", id, "clone", clone, "why", "worker went offline")
	return nil
}

func ignoreTransition(err error) error {
	if errors.Is(err, schemas.ErrTransition) {
		return nil
	}
	return err
}

// Package schedule is the scheduler stage: it folds job and worker events
// into the set of scheduled jobs and free worker instances, and assigns a
// job the moment a worker instance whose WORKER_CLASS covers it is free.
package schedule

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strconv"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// Config of the scheduler.
type Config struct{}

// Bus is what the scheduler needs of the event streams.
type Bus interface {
	Append(ctx context.Context, job int64, p schemas.Payload) (uint64, error)
	Watch(ctx context.Context, cfg streams.WatchConfig, fn func(schemas.Event, schemas.Payload, streams.Delivery) error) error
	LastSequence(ctx context.Context, stream string) (uint64, error)
}

// Scheduler assigns jobs to worker instances.
type Scheduler struct {
	bus Bus
	log *slog.Logger

	jobs    map[int64]*job
	workers map[schemas.WorkerRef]*worker
}

type job struct {
	id       int64
	created  time.Time
	priority int
	classes  []string
	assigned bool
}

type worker struct {
	ref     schemas.WorkerRef
	classes []string
	busy    int64 // job id, 0 when free
}

// New returns a scheduler.
func New(_ Config, bus Bus, log *slog.Logger) *Scheduler {
	return &Scheduler{bus: bus, log: log, jobs: map[int64]*job{}, workers: map[schemas.WorkerRef]*worker{}}
}

type update struct {
	ev schemas.Event
	p  schemas.Payload
	// caughtUp says this update's stream has no older events left to replay.
	caughtUp bool
	stream   string
}

// Run replays the job and worker streams to rebuild its state, then
// assigns jobs as events arrive, until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	updates := make(chan update, 256)
	errs := make(chan error, 2)
	watches := []struct {
		stream  string
		filters []string
	}{
		{streams.StreamJobs, []string{streams.JobEvents("created"), streams.JobEvents("assigned.>"), streams.JobEvents("finished")}},
		{streams.StreamWorkers, []string{"jetqa.worker.>"}},
	}
	replaying := map[string]uint64{}
	for _, w := range watches {
		last, err := s.bus.LastSequence(ctx, w.stream)
		if err != nil {
			return err
		}
		if last > 0 {
			replaying[w.stream] = last
		}
		go func() {
			errs <- s.bus.Watch(ctx, streams.WatchConfig{Stream: w.stream, Filters: w.filters}, func(ev schemas.Event, p schemas.Payload, d streams.Delivery) error {
				select {
				case updates <- update{ev: ev, p: p, stream: w.stream, caughtUp: d.Sequence >= last || d.Pending == 0}:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
		}()
	}
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
			s.apply(u.ev, u.p)
			if u.caughtUp {
				delete(replaying, u.stream)
			}
			if len(replaying) == 0 {
				if err := s.assign(ctx); err != nil {
					return err
				}
			}
		}
	}
}

func (s *Scheduler) apply(ev schemas.Event, p schemas.Payload) {
	switch p := p.(type) {
	case *schemas.JobCreated:
		prio, err := strconv.Atoi(p.Settings["PRIORITY"])
		if err != nil {
			prio = 50
		}
		s.jobs[ev.Job] = &job{id: ev.Job, created: ev.Time, priority: prio, classes: schemas.WorkerClasses(p.Settings["WORKER_CLASS"])}
	case *schemas.JobAssigned:
		if j := s.jobs[ev.Job]; j != nil {
			j.assigned = true
		}
		w := s.worker(p.Worker)
		w.busy = ev.Job
	case *schemas.JobFinished:
		delete(s.jobs, ev.Job)
		for _, w := range s.workers {
			if w.busy == ev.Job {
				w.busy = 0
			}
		}
	case *schemas.WorkerRegistered:
		// A worker instance registers when it starts: it runs nothing.
		w := s.worker(p.Worker)
		w.classes = p.Classes
		w.busy = 0
	}
}

func (s *Scheduler) worker(ref schemas.WorkerRef) *worker {
	w := s.workers[ref]
	if w == nil {
		w = &worker{ref: ref}
		s.workers[ref] = w
	}
	return w
}

// assign gives every scheduled job it can a free worker: lower PRIORITY
// first, then older.
func (s *Scheduler) assign(ctx context.Context) error {
	var queue []*job
	for _, j := range s.jobs {
		if !j.assigned {
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
		if _, err := s.bus.Append(ctx, j.id, schemas.JobAssigned{Worker: w.ref}); err != nil {
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return fmt.Errorf("assign job %d: %w", j.id, err)
		}
		s.log.Info("job assigned", "job", j.id, "worker", w.ref.String())
		j.assigned = true
		w.busy = j.id
	}
	return nil
}

func (s *Scheduler) freeWorkerFor(j *job) *worker {
	var free []*worker
	for _, w := range s.workers {
		if w.busy == 0 && w.classes != nil && covers(w.classes, j.classes) {
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

// Package authority is the server stage that stands between workers and
// the job stream: workers send reports about the jobs they run, and the
// authority appends an event only when the job is assigned to the sender
// and the job's state allows it. It also creates the durable consumers a
// worker may read from.
package authority

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"

	"golang.org/x/sync/errgroup"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/blobs"
)

// Config of the authority.
type Config struct {
	// Workers is how many reports are decided at once.
	Workers int
}

func (c Config) withDefaults() Config {
	if c.Workers <= 0 {
		c.Workers = max(4, 2*runtime.NumCPU())
	}
	return c
}

// Bus is what the authority needs of the event streams.
type Bus interface {
	ServeReports(ctx context.Context, cfg streams.AuthorityConfig) error
	Results() blobs.Store
}

// Stage is the authority.
type Stage struct {
	cfg Config
	bus Bus
	log *slog.Logger
}

// New returns the authority.
func New(cfg Config, bus Bus, log *slog.Logger) *Stage {
	return &Stage{cfg: cfg.withDefaults(), bus: bus, log: log}
}

// Run decides reports until ctx ends.
func (s *Stage) Run(ctx context.Context) error {
	s.log.Info("deciding workers' reports", "at-once", s.cfg.Workers)
	return s.bus.ServeReports(ctx, streams.AuthorityConfig{Decide: s.decide, Workers: s.cfg.Workers})
}

// decide is Decide, and for a finished job also that every file it lists
// is stored, whole: a job is done only when its results are.
func (s *Stage) decide(ctx context.Context, agg *schemas.JobAggregate, r streams.Report) error {
	if err := Decide(agg, r); err != nil {
		return err
	}
	fin, ok := r.Payload.(*schemas.JobFinished)
	if !ok {
		return nil
	}
	results := s.bus.Results()
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for name, key := range fin.Files {
		g.Go(func() error {
			sum := blobs.ContentSum(key)
			if sum == "" {
				return fmt.Errorf("%w: job %d's file %s is not stored by its content (%s)", streams.ErrRefused, agg.ID, name, key)
			}
			info, err := results.Stat(ctx, key)
			if errors.Is(err, blobs.ErrNotFound) {
				return fmt.Errorf("%w: job %d's file %s (%s) is not in %s", streams.ErrRefused, agg.ID, name, key, results.Describe())
			}
			if err != nil {
				return fmt.Errorf("job %d's file %s: %w", agg.ID, name, err)
			}
			if info.SHA256 != "" && info.SHA256 != sum {
				return fmt.Errorf("%w: job %d's file %s (%s) holds content hashing to %s", streams.ErrRefused, agg.ID, name, key, info.SHA256)
			}
			return nil
		})
	}
	return g.Wait()
}

// reportable are the job events a worker may report: what happens on the
// worker host between the assignment and the end of the job. Creating,
// assigning, cancelling and restarting jobs is the server's alone.
var reportable = map[string]bool{
	schemas.AssetFetched{}.Kind():   true,
	schemas.RepoCheckedOut{}.Kind(): true,
	schemas.JobReady{}.Kind():       true,
	schemas.JobStarted{}.Kind():     true,
	schemas.ModuleStarted{}.Kind():  true,
	schemas.ModuleFinished{}.Kind(): true,
	schemas.TestsFinished{}.Kind():  true,
	schemas.JobFinished{}.Kind():    true,
	schemas.JobPaused{}.Kind():      true,
	schemas.JobResumed{}.Kind():     true,
}

// Decide says whether a worker may report what it reports about a job in
// the state agg: the kind is one a worker may report, the job is assigned
// to the sender, and any worker the report names is that assignee. The
// aggregate then checks the transition itself.
func Decide(agg *schemas.JobAggregate, r streams.Report) error {
	if !reportable[r.Event.Kind] {
		return fmt.Errorf("%w: a worker may not report %s", streams.ErrRefused, r.Event.Kind)
	}
	if agg.Worker == nil {
		return fmt.Errorf("%w: job %d is not assigned to any worker, so not to %s", streams.ErrRefused, agg.ID, r.From)
	}
	if !r.From.Is(*agg.Worker) {
		return fmt.Errorf("%w: job %d is assigned to %s, not to %s", streams.ErrRefused, agg.ID, agg.Worker, r.From)
	}
	if named, ok := namedWorker(r.Payload); ok && named != *agg.Worker {
		return fmt.Errorf("%w: the report names worker %s, but job %d is assigned to %s", streams.ErrRefused, named, agg.ID, agg.Worker)
	}
	return nil
}

// namedWorker is the worker instance a report's payload speaks for.
func namedWorker(p schemas.Payload) (schemas.WorkerRef, bool) {
	switch p := p.(type) {
	case schemas.Targeted:
		return p.Target(), true
	case *schemas.AssetFetched:
		return p.Worker, true
	case *schemas.RepoCheckedOut:
		return p.Worker, true
	case *schemas.JobStarted:
		return p.Worker, true
	case *schemas.JobPaused:
		return p.Worker, true
	case *schemas.JobResumed:
		return p.Worker, true
	}
	return schemas.WorkerRef{}, false
}

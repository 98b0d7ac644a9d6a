// Package retention is the server stage that removes results once a
// policy says they were kept long enough: a job's files by kind and
// result, whole jobs after a while, and blobs no kept job uses. Each run
// reads the job stream's verdicts, records what expires as events, and
// only then deletes blobs, so a screenshot shared by a kept job stays.
package retention

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/blobs"
)

// Subjects the stage answers on, for `jetqa admin retention`.
const (
	SubjectPlan = "jetqa.retention.plan"
	SubjectRun  = "jetqa.retention.run"
)

// Config of the retention stage.
type Config struct {
	Rules Rules
	// Every is how often the policy is applied; default one hour.
	Every time.Duration
	// Grace keeps a blob no job lists for that long after it was stored:
	// a running job's upload is stored before its verdict names it.
	// Default a day.
	Grace time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.Every <= 0 {
		c.Every = time.Hour
	}
	if c.Grace <= 0 {
		c.Grace = 24 * time.Hour
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Bus is what the stage needs of the streams and the results store.
type Bus interface {
	Replay(ctx context.Context, cfg streams.WatchConfig, fn func(schemas.Event, schemas.Payload, streams.Delivery) error) error
	Append(ctx context.Context, job int64, p schemas.Payload) (uint64, error)
	PurgeJob(ctx context.Context, job int64) error
	Results() blobs.Store
	Serve(subject string, answer func(ctx context.Context, data []byte) ([]byte, error)) (*nats.Subscription, error)
}

// Stage is the retention stage.
type Stage struct {
	cfg Config
	bus Bus
	log *slog.Logger
}

// New returns the retention stage.
func New(cfg Config, bus Bus, log *slog.Logger) *Stage {
	return &Stage{cfg: cfg.withDefaults(), bus: bus, log: log}
}

// Expiry is what a run removes of one job.
type Expiry struct {
	Job int64 `json:"job"`
	// Files expire under Rule; Job set alone with Rule "events=…" removes
	// the whole job.
	Files []string `json:"files,omitempty"`
	Rule  string   `json:"rule"`
	// Purge: the job was deleted by an earlier run; its events go now.
	Purge bool `json:"purge,omitempty"`
}

// Plan is what a run would remove.
type Plan struct {
	Expire []Expiry `json:"expire,omitempty"`
	// Delete are the blobs no kept job uses, stored before the grace.
	Delete []blobs.Info `json:"delete,omitempty"`
	// Kept counts the blobs that stay, and their bytes.
	Kept      int   `json:"kept"`
	KeptBytes int64 `json:"kept_bytes"`
}

// DeleteBytes is the size of what the plan deletes.
func (p Plan) DeleteBytes() int64 {
	var n int64
	for _, b := range p.Delete {
		n += b.Size
	}
	return n
}

// Run applies the policy every Config.Every, and answers plan and run
// requests, until ctx ends.
func (s *Stage) Run(ctx context.Context) error {
	s.log.Info("applying retention", "rules", s.cfg.Rules, "every", s.cfg.Every, "grace", s.cfg.Grace)
	for subj, apply := range map[string]bool{SubjectPlan: false, SubjectRun: true} {
		sub, err := s.bus.Serve(subj, func(ctx context.Context, _ []byte) ([]byte, error) {
			plan, err := s.Once(ctx, apply)
			if err != nil {
				return nil, err
			}
			return json.Marshal(plan)
		})
		if err != nil {
			return err
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	tick := time.NewTicker(s.cfg.Every)
	defer tick.Stop()
	for {
		if _, err := s.Once(ctx, true); err != nil && ctx.Err() == nil {
			s.log.Error("retention run failed; trying again at the next", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Once plans a run and, if apply, carries it out.
func (s *Stage) Once(ctx context.Context, apply bool) (Plan, error) {
	plan, err := s.plan(ctx)
	if err != nil || !apply {
		return plan, err
	}
	return plan, s.apply(ctx, plan)
}

// job is what the plan needs to know of one job.
type job struct {
	result   string
	finished time.Time
	files    map[string]string
	deleted  time.Time
	byPolicy bool // deleted by the events rule
}

func (s *Stage) plan(ctx context.Context) (Plan, error) {
	jobs := map[int64]*job{}
	err := s.bus.Replay(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{
		streams.JobEvents("finished"), streams.JobEvents("files_expired"), streams.JobEvents("deleted"),
	}}, func(ev schemas.Event, p schemas.Payload, _ streams.Delivery) error {
		switch e := p.(type) {
		case *schemas.JobFinished:
			jobs[ev.Job] = &job{result: e.Result, finished: ev.Time, files: maps.Clone(e.Files)}
		case *schemas.JobFilesExpired:
			if j := jobs[ev.Job]; j != nil {
				for _, name := range e.Files {
					delete(j.files, name)
				}
			}
		case *schemas.JobDeleted:
			if j := jobs[ev.Job]; j != nil {
				j.deleted, j.byPolicy = ev.Time, e.By == deletedBy
			}
		}
		return nil
	})
	if err != nil {
		return Plan{}, err
	}
	now := s.cfg.Now()
	var plan Plan
	used := map[string]bool{}
	for _, id := range slices.Sorted(maps.Keys(jobs)) {
		j := jobs[id]
		if !j.deleted.IsZero() {
			// A job deleted by the events rule an hour ago or more: its
			// views have seen the deletion; its events go.
			if j.byPolicy && now.Sub(j.deleted) >= time.Hour {
				plan.Expire = append(plan.Expire, Expiry{Job: id, Rule: "events", Purge: true})
			}
			continue
		}
		if r, ok := s.cfg.Rules.For(KindEvents, j.result); ok && now.Sub(j.finished) >= r.Keep {
			plan.Expire = append(plan.Expire, Expiry{Job: id, Rule: r.String()})
			continue
		}
		byRule := map[string][]string{}
		for name, key := range j.files {
			if r, ok := s.cfg.Rules.For(FileKind(name), j.result); ok && now.Sub(j.finished) >= r.Keep {
				byRule[r.String()] = append(byRule[r.String()], name)
				continue
			}
			used[key] = true
		}
		for _, rule := range slices.Sorted(maps.Keys(byRule)) {
			sort.Strings(byRule[rule])
			plan.Expire = append(plan.Expire, Expiry{Job: id, Files: byRule[rule], Rule: rule})
		}
	}
	err = s.bus.Results().List(ctx, "", func(b blobs.Info) error {
		if used[b.Key] || now.Sub(b.Modified) < s.cfg.Grace {
			plan.Kept++
			plan.KeptBytes += b.Size
			return nil
		}
		plan.Delete = append(plan.Delete, b)
		return nil
	})
	return plan, err
}

// deletedBy marks a job deleted by the events rule.
const deletedBy = "retention"

// apply records the expiries, then deletes: a blob goes only once no job
// lists it any more.
func (s *Stage) apply(ctx context.Context, plan Plan) error {
	var errs []error
	for _, e := range plan.Expire {
		var err error
		switch {
		case e.Purge:
			err = s.bus.PurgeJob(ctx, e.Job)
		case len(e.Files) == 0:
			_, err = s.bus.Append(ctx, e.Job, schemas.JobDeleted{By: deletedBy})
		default:
			_, err = s.bus.Append(ctx, e.Job, schemas.JobFilesExpired{Files: e.Files, Rule: e.Rule})
		}
		if errors.Is(err, schemas.ErrTransition) {
			// Restarted, deleted or changed since the plan: the next run sees it.
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("job %d: %w", e.Job, err))
		}
	}
	store := s.bus.Results()
	for _, b := range plan.Delete {
		if err := store.Delete(ctx, b.Key); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if len(plan.Expire)+len(plan.Delete) > 0 {
		s.log.Info("retention applied", "expired", len(plan.Expire), "deleted blobs", len(plan.Delete), "deleted bytes", plan.DeleteBytes(), "kept blobs", plan.Kept)
	}
	return nil
}

// Describe prints a plan for people.
func (p Plan) Describe() string {
	var b strings.Builder
	for _, e := range p.Expire {
		switch {
		case e.Purge:
			fmt.Fprintf(&b, "job %d: its events are removed (%s)\n", e.Job, e.Rule)
		case len(e.Files) == 0:
			fmt.Fprintf(&b, "job %d: deleted with its files (%s)\n", e.Job, e.Rule)
		default:
			fmt.Fprintf(&b, "job %d: %s expire (%s)\n", e.Job, strings.Join(e.Files, ", "), e.Rule)
		}
	}
	for _, d := range p.Delete {
		fmt.Fprintf(&b, "blob %s: %d bytes, stored %s\n", d.Key, d.Size, d.Modified.UTC().Format(time.RFC3339))
	}
	fmt.Fprintf(&b, "%d jobs touched, %d blobs (%d bytes) deleted, %d blobs (%d bytes) kept\n", len(p.Expire), len(p.Delete), p.DeleteBytes(), p.Kept, p.KeptBytes)
	return b.String()
}

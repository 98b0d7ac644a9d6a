package api

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// JobView is the read model of one job: what the API shows. It is folded
// from the job's events and never written any other way.
type JobView struct {
	ID       int64             `json:"id"`
	Name     string            `json:"name"`
	State    string            `json:"state"`
	Result   string            `json:"result"`
	Reason   string            `json:"reason,omitempty"`
	Settings map[string]string `json:"settings"`
	Worker   string            `json:"assigned_worker,omitempty"`
	Accel    string            `json:"accel,omitempty"`
	TestSide string            `json:"test_side,omitempty"`
	Created  Time              `json:"t_created"`
	Started  *Time             `json:"t_started,omitempty"`
	Finished *Time             `json:"t_finished,omitempty"`
	// Assets are what the worker fetched for the job; openQA's assets
	// (by type, from the settings) are in the API's job JSON.
	Assets  []schemas.AssetFetched   `json:"fetched_assets,omitempty"`
	Repos   []schemas.RepoCheckedOut `json:"repos,omitempty"`
	Modules []schemas.ModuleResult   `json:"modules"`
	Files   map[string]string        `json:"files,omitempty"`
	CloneOf int64                    `json:"origin_id,omitempty"`
	Clone   int64                    `json:"clone_id,omitempty"`
	// After are the jobs this one starts after (chained parents).
	After []int64 `json:"after,omitempty"`
	// Owner created the job; with admins, only the owner may use
	// developer mode on it.
	Owner string `json:"owner,omitempty"`
	// Paused says where a developer paused the running test.
	Paused *schemas.JobPaused `json:"developer_paused,omitempty"`
	// Waiting says why a scheduled job has no worker yet.
	Waiting string `json:"waiting,omitempty"`
	// Seq is the stream sequence of the last event folded into the view.
	Seq uint64 `json:"seq"`
}

// Time is a job's time as openQA's API writes it: UTC, to the second,
// without a zone ("2023-06-19T16:54:22"). It reads RFC 3339 too.
type Time struct{ time.Time }

const openQATimeFormat = "2006-01-02T15:04:05"

func (t Time) MarshalJSON() ([]byte, error) {
	return []byte(`"` + t.UTC().Format(openQATimeFormat) + `"`), nil
}

func (t *Time) UnmarshalJSON(b []byte) error {
	s, err := strconv.Unquote(string(b))
	if err != nil {
		return fmt.Errorf("job time %s: want a string", b)
	}
	if v, err := time.ParseInLocation(openQATimeFormat, s, time.UTC); err == nil {
		t.Time = v
		return nil
	}
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("job time %q: want %s or RFC 3339", s, openQATimeFormat)
	}
	t.Time = v
	return nil
}

// projection keeps job views in memory: either folded straight from the
// job stream (Rebuild) or copied from the read model bucket (the API).
type projection struct {
	mu   sync.Mutex
	seen uint64 // last stream sequence applied
	cond *sync.Cond
	jobs map[int64]*JobView
	// ids are the keys of jobs in ascending order, for lists newest first
	// without sorting every job on every request; stale when its length
	// differs from jobs' (fold adds and removes jobs directly).
	ids []int64
	// workers are the registered worker instances, as their events leave
	// them.
	workers map[schemas.WorkerRef]*workerView
	// children are the jobs that start after each job, from the views'
	// After: openQA shows a job's children.
	children map[int64][]int64
	// caches are the worker hosts' asset caches, as last reported.
	caches map[string]*schemas.CacheStatus
	// watchers are told which jobs' views changed (the web UI's live
	// lists).
	watchers map[*viewWatcher]struct{}
}

// viewWatcher receives the ids of jobs whose views changed. A watcher that
// falls behind loses ids and is marked lost: it reads the whole view again.
type viewWatcher struct {
	changed chan int64
	lost    chan struct{} // closed once ids were lost
	once    sync.Once
}

// watch starts telling w's channel which jobs' views change; stop ends it.
func (p *projection) watch() (w *viewWatcher, stop func()) {
	w = &viewWatcher{changed: make(chan int64, 1024), lost: make(chan struct{})}
	p.mu.Lock()
	p.watchers[w] = struct{}{}
	p.mu.Unlock()
	return w, func() {
		p.mu.Lock()
		delete(p.watchers, w)
		p.mu.Unlock()
	}
}

// tell hands a changed job's id to the watchers; p.mu is held.
func (p *projection) tell(id int64) {
	for w := range p.watchers {
		select {
		case w.changed <- id:
		default:
			w.once.Do(func() { close(w.lost) })
		}
	}
}

// workerView is a worker instance as GET /api/v1/workers shows it.
type workerView struct {
	id       int // in the order the instances first registered
	reg      schemas.WorkerRegistered
	job      int64
	lastSeen time.Time
	offline  bool
}

func newProjection() *projection {
	p := &projection{jobs: map[int64]*JobView{}, workers: map[schemas.WorkerRef]*workerView{}, children: map[int64][]int64{},
		caches: map[string]*schemas.CacheStatus{}, watchers: map[*viewWatcher]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	return p
}

// follow applies the job stream from its beginning until ctx ends, or,
// with until > 0, until it has applied the event with that sequence.
func (p *projection) follow(ctx context.Context, bus Bus, until uint64) error {
	// Decoding the events, not folding them, is most of a rebuild's work:
	// it is spread over the cores.
	cfg := streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.SubjectJobs}, Decoders: max(2, runtime.GOMAXPROCS(0))}
	// A rebuild to a known end decodes the events that make a job's
	// modules only where no later event replaced them: most jobs' are, by
	// their tests_finished and finished.
	var later *laterEvents
	if until > 0 {
		later = &laterEvents{jobs: map[int64][]*streams.Undecoded{}}
		cfg.Undecoded = laterKinds
	}
	err := bus.Watch(ctx, cfg, func(ev schemas.Event, pl schemas.Payload, d streams.Delivery) error {
		p.mu.Lock()
		before := len(p.jobs)
		if later == nil || !later.take(p.jobs, ev, pl) {
			fold(p.jobs, ev, pl)
		}
		if len(p.jobs) != before {
			p.ids = nil // sorted again when listed
		}
		if j := p.jobs[ev.Job]; j != nil {
			j.Seq = d.Sequence
		}
		p.seen = d.Sequence
		p.cond.Broadcast()
		p.mu.Unlock()
		return stopAt(d, until)
	})
	if err == nil && later != nil {
		p.mu.Lock()
		later.flushAll(p.jobs)
		p.mu.Unlock()
	}
	return err
}

// The events a rebuild decodes late, or never: module events only add to
// or update their job's modules; tests_finished sets its state, pause and
// modules, all of which a finished with modules sets again; job.ready is
// folded by its kind alone (fold reads none of it: its settings are a
// fifth of a rebuild's decoding; its subject is not checked against its
// body, which only the server writes).
var (
	moduleKinds = []string{schemas.ModuleStarted{}.Kind(), schemas.ModuleFinished{}.Kind()}
	testsKind   = schemas.TestsFinished{}.Kind()
	readyKind   = schemas.JobReady{}.Kind()
	laterKinds  = append([]string{testsKind, readyKind}, moduleKinds...)
)

// laterEvents keeps each job's module and tests_finished events,
// undecoded and in order, until a later event replaces what they make
// (they are dropped) or might read or change it (they are decoded and
// folded first).
type laterEvents struct {
	jobs map[int64][]*streams.Undecoded
}

// take folds or holds an event and reports whether it did: a held event of
// the job may have been decoded and folded first.
func (l *laterEvents) take(jobs map[int64]*JobView, ev schemas.Event, pl schemas.Payload) bool {
	held := l.jobs[ev.Job]
	testsHeld := slices.ContainsFunc(held, func(u *streams.Undecoded) bool { return u.Kind() == testsKind })
	if u, ok := pl.(*streams.Undecoded); ok {
		switch {
		case jobs[ev.Job] == nil: // as fold ignores it
		case u.Kind() == readyKind:
			if testsHeld {
				l.flush(jobs, ev.Job)
			}
			fold(jobs, ev, &schemas.JobReady{})
		default:
			l.jobs[ev.Job] = append(held, u)
		}
		return true
	}
	if len(held) == 0 {
		return false
	}
	switch e := pl.(type) {
	case *schemas.JobDeleted:
		delete(l.jobs, ev.Job)
		return false
	case *schemas.JobFinished:
		if len(e.Modules) > 0 { // state, pause and modules set again
			delete(l.jobs, ev.Job)
			return false
		}
	case *schemas.TestsFinished: // one whose subject named no job: decoded
		delete(l.jobs, ev.Job)
		return false
	case *schemas.JobAssigned, *schemas.JobUnassigned, *schemas.AssetFetched, *schemas.RepoCheckedOut,
		*schemas.JobStarted, *schemas.JobPaused, *schemas.JobResumed, *schemas.JobRestarted, *schemas.JobFilesExpired:
		if !testsHeld {
			return false // they leave the modules alone: keep holding
		}
	}
	l.flush(jobs, ev.Job) // an event that might read or change what they make
	return false
}

// flush decodes and folds a job's held events, in order.
func (l *laterEvents) flush(jobs map[int64]*JobView, job int64) {
	for _, u := range l.jobs[job] {
		ev, pl, err := u.Decode()
		if err != nil {
			slog.Warn("skipping unreadable event", "job", job, "kind", u.Kind(), "err", err)
			continue
		}
		fold(jobs, ev, pl)
	}
	delete(l.jobs, job)
}

// flushAll folds what no later event replaced, at the rebuild's end.
func (l *laterEvents) flushAll(jobs map[int64]*JobView) {
	for job := range l.jobs {
		l.flush(jobs, job)
	}
}

// followWorkers keeps the registered workers' classes, to say why a job
// waits; until works as in follow.
func (p *projection) followWorkers(ctx context.Context, bus Bus, until uint64) error {
	return bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamWorkers, Filters: []string{
		"jetqa.worker.*.*.registered", "jetqa.worker.*.*.heartbeat", "jetqa.worker.*.*.offline", "jetqa.worker.*.*.cache",
	}}, func(ev schemas.Event, pl schemas.Payload, d streams.Delivery) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		switch e := pl.(type) {
		case *schemas.CacheStatus:
			p.caches[e.Host] = e
		case *schemas.WorkerRegistered:
			w := p.worker(e.Worker)
			w.reg, w.job, w.offline = *e, 0, false
			w.lastSeen = later(w.lastSeen, ev.Time)
		case *schemas.WorkerHeartbeat:
			if w := p.workers[e.Worker]; w != nil {
				w.job, w.offline = e.Job, false
				w.lastSeen = later(w.lastSeen, ev.Time)
			}
		case *schemas.WorkerOffline:
			if w := p.workers[e.Worker]; w != nil && !w.lastSeen.After(e.LastSeen) {
				w.offline, w.job = true, 0
			}
		}
		return stopAt(d, until)
	})
}

// worker is the view of a worker instance, made when it first registers.
func (p *projection) worker(ref schemas.WorkerRef) *workerView {
	w := p.workers[ref]
	if w == nil {
		w = &workerView{id: len(p.workers) + 1}
		p.workers[ref] = w
	}
	return w
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func stopAt(d streams.Delivery, until uint64) error {
	if until > 0 && (d.Sequence >= until || d.Pending == 0) {
		return streams.ErrStopWatch
	}
	return nil
}

// Rebuild folds the job stream and the worker registrations from scratch,
// up to their current end, into a fresh read model: what `jetqa admin
// rebuild` prints and compares with the live one. It returns the jobs
// newest first and how many job events it folded.
func Rebuild(ctx context.Context, bus Bus) ([]JobView, uint64, error) {
	// The read model only grows during a rebuild, while the messages read
	// make garbage as fast as the model grows: collecting at every
	// doubling of the heap marks the model again and again.
	old := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(old)
	if old >= 0 { // else the collector was off, and stays so
		debug.SetGCPercent(max(rebuildGCPercent, old))
	}
	p := newProjection()
	for _, part := range []struct {
		stream string
		follow func(context.Context, Bus, uint64) error
	}{
		{streams.StreamJobs, p.follow},
		{streams.StreamWorkers, p.followWorkers},
	} {
		last, err := bus.LastSequence(ctx, part.stream)
		if err != nil {
			return nil, 0, err
		}
		if last == 0 {
			continue
		}
		if err := part.follow(ctx, bus, last); err != nil {
			return nil, 0, fmt.Errorf("rebuild from %s: %w", part.stream, err)
		}
	}
	return p.list(func(*JobView) bool { return true }), p.seen, nil
}

// rebuildGCPercent is the collector's GOGC during a rebuild, unless the
// process's is higher: the heap grows to five times the live read model
// before a collection instead of twice (BenchmarkRebuild).
const rebuildGCPercent = 400

// waiting says why a scheduled job has no worker, when no registered
// worker instance could ever take it.
func (p *projection) waiting(j *JobView) string {
	if j.State != schemas.StateScheduled {
		return ""
	}
	want := schemas.WorkerClasses(j.Settings["WORKER_CLASS"])
	if len(p.workers) == 0 {
		return "no worker instance has registered yet"
	}
	for _, w := range p.workers {
		if coversAll(w.reg.Classes, want) {
			return ""
		}
	}
	return fmt.Sprintf("no registered worker instance has WORKER_CLASS %s", strings.Join(want, ","))
}

func coversAll(have, want []string) bool {
	for _, c := range want {
		if !slices.Contains(have, c) {
			return false
		}
	}
	return true
}

// set replaces a job's view (nil: removes it), as copied from the bucket.
func (p *projection) set(id int64, v *JobView) {
	p.mu.Lock()
	_, had := p.jobs[id]
	if v == nil {
		delete(p.jobs, id)
		if i, ok := slices.BinarySearch(p.ids, id); had && ok && len(p.ids) == len(p.jobs)+1 {
			p.ids = slices.Delete(p.ids, i, i+1)
		}
	} else {
		p.jobs[id] = v
		if !had {
			for _, parent := range v.After {
				p.children[parent] = append(p.children[parent], id)
			}
		}
		if !had && len(p.ids) == len(p.jobs)-1 {
			i, _ := slices.BinarySearch(p.ids, id)
			p.ids = slices.Insert(p.ids, i, id)
		}
	}
	p.tell(id)
	p.cond.Broadcast()
	p.mu.Unlock()
}

// waitForJob blocks until the job's view includes the event with stream
// sequence seq, so a client reads its own writes; it gives up when ctx ends.
func (p *projection) waitForJob(ctx context.Context, id int64, seq uint64) {
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for ctx.Err() == nil {
		if j := p.jobs[id]; j != nil && j.Seq >= seq {
			return
		}
		p.cond.Wait()
	}
}

// fold applies one job event to the views in jobs. It is the only way a
// view changes.
func fold(jobs map[int64]*JobView, ev schemas.Event, pl schemas.Payload) {
	if c, ok := pl.(*schemas.JobCreated); ok {
		jobs[ev.Job] = &JobView{ID: ev.Job, Name: c.Name(), State: schemas.StateScheduled, Result: schemas.ResultNone, Settings: c.Settings, Created: Time{ev.Time}, Modules: []schemas.ModuleResult{}, CloneOf: c.CloneOf, After: c.After, Owner: c.Owner}
		return
	}
	j := jobs[ev.Job]
	if j == nil {
		return
	}
	t := Time{ev.Time}
	switch e := pl.(type) {
	case *schemas.JobAssigned:
		j.State, j.Worker = schemas.StateAssigned, e.Worker.String()
	case *schemas.JobUnassigned:
		j.State, j.Worker = schemas.StateScheduled, ""
	case *schemas.JobRestarted:
		j.Clone = e.Clone
	case *schemas.JobDeleted:
		delete(jobs, ev.Job)
	case *schemas.JobFilesExpired:
		for _, name := range e.Files {
			delete(j.Files, name)
		}
	case *schemas.AssetFetched:
		j.State = schemas.StateSetup
		j.Assets = append(j.Assets, *e)
	case *schemas.RepoCheckedOut:
		j.State = schemas.StateSetup
		j.Repos = append(j.Repos, *e)
	case *schemas.JobReady:
		j.State = schemas.StateSetup
	case *schemas.JobStarted:
		j.State, j.Accel, j.TestSide, j.Started = schemas.StateRunning, e.Accel, e.TestSide, &t
	case *schemas.ModuleStarted:
		j.Modules = append(j.Modules, schemas.ModuleResult{Name: e.Module, Result: "running"})
	case *schemas.ModuleFinished:
		if n := len(j.Modules); n > 0 && j.Modules[n-1].Name == e.Name {
			j.Modules[n-1] = e.ModuleResult
		} else {
			j.Modules = append(j.Modules, e.ModuleResult)
		}
	case *schemas.JobPaused:
		j.Paused = e
	case *schemas.JobResumed:
		j.Paused = nil
	case *schemas.TestsFinished:
		j.State, j.Paused = schemas.StateUploading, nil
		j.Modules = e.Modules
	case *schemas.JobFinished:
		j.State, j.Result, j.Reason, j.Finished, j.Files, j.Paused = schemas.StateDone, e.Result, e.Reason, &t, e.Files, nil
		if j.Started == nil && (e.Result == schemas.ResultUserCancelled || e.Result == schemas.ResultSkipped || e.Result == schemas.ResultObsoleted) {
			j.State = schemas.StateCancelled
		}
		if len(e.Modules) > 0 {
			j.Modules = e.Modules
		}
	}
}

func (p *projection) get(id int64) (JobView, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	j, ok := p.jobs[id]
	if !ok {
		return JobView{}, false
	}
	v := *j
	v.Waiting = p.waiting(j)
	return v, true
}

// list returns the jobs that pass keep, newest first.
func (p *projection) list(keep func(*JobView) bool) []JobView {
	var out []JobView
	p.each(func(j *JobView) bool {
		if keep(j) {
			v := *j
			v.Waiting = p.waiting(j)
			out = append(out, v)
		}
		return true
	})
	return out
}

// each calls fn with the jobs, newest first, until fn returns false; the
// lock is held.
func (p *projection) each(fn func(*JobView) bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.ids) != len(p.jobs) {
		p.ids = slices.Sorted(maps.Keys(p.jobs))
	}
	for i := len(p.ids) - 1; i >= 0; i-- {
		if j := p.jobs[p.ids[i]]; j != nil && !fn(j) {
			return
		}
	}
}

// page is list for one page: the jobs keep accepts, newest first, skipping
// offset and taking at most limit, and whether more would follow. keep
// sees the jobs newest first, so it may keep state (latest=1).
func (p *projection) page(keep func(*JobView) bool, offset, limit int) ([]JobView, bool) {
	var out []JobView
	matched, more := 0, false
	p.each(func(j *JobView) bool {
		if !keep(j) {
			return true
		}
		matched++
		switch {
		case matched <= offset:
			return true
		case len(out) == limit:
			more = true
			return false
		}
		v := *j
		v.Waiting = p.waiting(j)
		out = append(out, v)
		return true
	})
	return out, more
}

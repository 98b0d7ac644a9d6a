//go:build unix

package fleetsim

import (
	"context"
	"fmt"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// Record keeps the times of every job's events as a watcher of the job
// stream sees them, and the posters' limit of unfinished jobs.
type Record struct {
	Slots    chan struct{} // one per unfinished job
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
	finals                      int
}

// NewRecord keeps at most limit jobs unfinished (Slots).
func NewRecord(limit int) *Record {
	return &Record{Slots: make(chan struct{}, limit), finished: make(chan struct{}, 1), jobs: map[int64]*jobTimes{}}
}

// See records one event of the job stream.
func (r *Record) See(ev schemas.Event, p schemas.Payload) {
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
		j.finals++
		if j.finals > 1 {
			return
		}
		j.finished, j.result = ev.Time, p.Result
		r.done++
		select {
		case <-r.Slots: // a clone or a job posted twice took none
		default:
		}
		select {
		case r.finished <- struct{}{}:
		default:
		}
	}
}

// Jobs is how many jobs the record saw, and how many of them finished.
func (r *Record) Jobs() (seen, finished int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.jobs), r.done
}

// WaitFinished waits until n jobs finished. It fails when none finishes
// for two minutes: the fleet is stuck, which is a bug, not a slow run.
func (r *Record) WaitFinished(tb testing.TB, n int, bus *streams.Bus) {
	tb.Helper()
	r.wait(tb, bus, func(_, done int) bool { return done >= n })
}

// WaitAllEnded waits until at least n jobs were seen and every job seen
// has finished, clones included. It fails as WaitFinished does.
func (r *Record) WaitAllEnded(tb testing.TB, n int, bus *streams.Bus) {
	tb.Helper()
	r.wait(tb, bus, func(seen, done int) bool { return seen >= n && done >= seen })
}

func (r *Record) wait(tb testing.TB, bus *streams.Bus, enough func(seen, done int) bool) {
	tb.Helper()
	stuck := time.NewTimer(2 * time.Minute)
	defer stuck.Stop()
	for {
		r.mu.Lock()
		seen, done := len(r.jobs), r.done
		r.mu.Unlock()
		if enough(seen, done) {
			return
		}
		select {
		case <-r.finished:
			stuck.Reset(2 * time.Minute)
		case <-stuck.C:
			// Where the simulated hosts are: the fleet runs in this process.
			var stacks strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&stacks, 1)
			tb.Logf("goroutines of the fleet's process, grouped:\n%s", stacks.String())
			tb.Fatalf("no job finished for 2 minutes: %d of %d jobs seen done; %s", done, seen, r.unfinished(bus))
		}
	}
}

// unfinished says where the jobs not finished yet are, at most ten.
func (r *Record) unfinished(bus *streams.Bus) string {
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

// Figures are the latencies of the jobs recorded.
type Figures struct {
	Assign, Dispatch, Whole  Latencies
	Gaps                     Latencies // between one assignment and the next
	Fetch, Boot, Run, Upload Latencies // between a job's events
	First, Last              time.Time // the first created, the last finished
	NotPassed                int
	// Doubled counts the jobs that ended more than once.
	Doubled int
}

// Figures computes the figures from the record; fleetUp is when the
// fleet was ready, the moment every instance was free.
func (r *Record) Figures(fleetUp time.Time) Figures {
	r.mu.Lock()
	defer r.mu.Unlock()
	var fig Figures
	byWorker := map[schemas.WorkerRef][]*jobTimes{}
	for _, j := range r.jobs {
		fig.Assign = append(fig.Assign, j.assigned.Sub(j.created))
		fig.Fetch = append(fig.Fetch, j.ready.Sub(j.assigned))
		fig.Boot = append(fig.Boot, j.started.Sub(j.ready))
		fig.Run = append(fig.Run, j.tests.Sub(j.started))
		fig.Upload = append(fig.Upload, j.finished.Sub(j.tests))
		fig.Whole = append(fig.Whole, j.finished.Sub(j.created))
		if fig.First.IsZero() || j.created.Before(fig.First) {
			fig.First = j.created
		}
		if j.finished.After(fig.Last) {
			fig.Last = j.finished
		}
		if j.result != schemas.ResultPassed {
			fig.NotPassed++
		}
		if j.finals > 1 {
			fig.Doubled++
		}
		byWorker[j.worker] = append(byWorker[j.worker], j)
	}
	var assigned []time.Time
	for _, j := range r.jobs {
		assigned = append(assigned, j.assigned)
	}
	slices.SortFunc(assigned, time.Time.Compare)
	for i := 1; i < len(assigned); i++ {
		fig.Gaps = append(fig.Gaps, assigned[i].Sub(assigned[i-1]))
	}
	for _, js := range byWorker {
		slices.SortFunc(js, func(a, b *jobTimes) int { return a.assigned.Compare(b.assigned) })
		free := fleetUp
		for _, j := range js {
			ready := j.created
			if free.After(ready) {
				ready = free
			}
			fig.Dispatch = append(fig.Dispatch, j.assigned.Sub(ready))
			free = j.finished
		}
	}
	return fig
}

// Latencies of a run.
type Latencies []time.Duration

// Quantile is the q-quantile (0.99: p99).
func (l Latencies) Quantile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	s := slices.Clone(l)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// MS is d in milliseconds.
func MS(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// HeapInUse is the process's heap in use after collecting.
func HeapInUse() uint64 {
	// Twice: what sync.Pools hold survives one collection.
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// CPUTime is the CPU time the process used so far, user and system.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

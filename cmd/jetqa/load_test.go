package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"jetqa/internal/fleetsim"
	"jetqa/schemas"
	"jetqa/stages/api"
	"jetqa/streams"
)

// The load test's size: JETQA_LOAD_JOBS jobs (10 000) on JETQA_LOAD_WORKERS
// simulated worker hosts (100); make test runs it as it is, make soak with
// more jobs.
const (
	defaultLoadJobs  = 10_000
	defaultLoadHosts = 100
	// A fifth of the jobs run first; the memory after them is what
	// the rest must not grow (but by what each job is meant to leave).
	loadWarmShare = 5
)

// Leak bounds, heap in use after the warm-up. The server keeps of each
// job its view (the API's read model and its copy of the views bucket)
// and its subjects in the streams' indexes, about 3.5 KiB; its NATS server
// also fills, up to their bounds, the caches of the streams' last blocks
// and the duplicate window's message IDs (two minutes of them). Measured:
// 11.3 KiB/job over 8 000 jobs after a warm-up of 2 000, most of it those
// caches filling (JETQA_LOAD_PROFILES). A matcher and a worker keep
// nothing of a finished job.
const (
	serverBytesPerJob = 16 << 10
	matcherGrowth     = 16 << 20 // the needle cache is full after the warm-up
	fleetBytesPerJob  = 1 << 10  // the test's own record of each job's times
	leakedGoroutines  = 50       // more after the run than after the warm-up
)

// TestFleetUnderLoad runs `jetqa server` (without matchers), two `jetqa
// matcher` processes of one core each and a fleet of simulated worker
// hosts (internal/fleetsim: the connections, credentials, consumers and
// reports of real ones, one match request per job, no VM), and posts the
// jobs through the API, signed, keeping about two per worker instance
// queued. It reports jobs/s, the assignment latency, each process's
// memory, and fails when a job is lost, doubled or not passed, or when
// memory grows after the warm-up beyond what the jobs are meant to leave.
//
// It takes a few minutes: JETQA_LOAD_TEST=1 runs it (make test does,
// without -race, whose overhead is not what this measures).
func TestFleetUnderLoad(t *testing.T) {
	if os.Getenv("JETQA_LOAD_TEST") == "" {
		t.Skip("JETQA_LOAD_TEST=1 runs it (make test does)")
	}
	jobs, hosts := envInt(t, "JETQA_LOAD_JOBS", defaultLoadJobs), envInt(t, "JETQA_LOAD_WORKERS", defaultLoadHosts)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()
	goroutinesBefore := runtime.NumGoroutine()
	heapBefore := int64(fleetsim.HeapInUse())
	r := startRig(t, ctx, rigConfig{hosts: hosts})
	procs, rec, f, bus := r.processes(), r.rec, r.fleet, r.bus

	// The warm-up, then the memory every later job must not add to.
	warm := jobs / loadWarmShare
	if err := r.post(warm, false); err != nil {
		t.Fatal(err)
	}
	rec.WaitFinished(t, warm, bus)
	// JETQA_LOAD_PROFILES=DIR keeps each process's heap profile after the
	// warm-up and at the end there (go tool pprof -base warm end).
	profiles := os.Getenv("JETQA_LOAD_PROFILES")
	mem := func(when string) loadMemory {
		m := loadMemory{fleetHeap: int64(fleetsim.HeapInUse()), goroutines: runtime.NumGoroutine()}
		for _, p := range procs {
			m.procs = append(m.procs, p.memory(t))
			if profiles != "" {
				name := filepath.Join(profiles, strings.ReplaceAll(p.name, " ", "-")+"-"+when+".pprof")
				if err := os.WriteFile(name, []byte(debugPage(t, p, "heap?gc=1")), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
		return m
	}
	warmMem := mem("warm")
	cpuStart := fleetsim.CPUTime()
	if err := r.post(jobs-warm, false); err != nil {
		t.Fatal(err)
	}
	rec.WaitFinished(t, jobs, bus)
	cpu := fleetsim.CPUTime() - cpuStart
	endMem := mem("end")

	fig := rec.Figures(r.fleetUp)
	seen, finished := rec.Jobs()
	span := fig.Last.Sub(fig.First).Seconds()
	rest := int64(jobs - warm)
	t.Logf("%d jobs on %d hosts and 2 matchers: %.1f jobs/s; assignment p50 %.0f ms, p99 %.0f ms; job p50 %.0f ms, p99 %.0f ms; %d match requests answered",
		finished, hosts, float64(finished)/span, fleetsim.MS(fig.Assign.Quantile(0.5)), fleetsim.MS(fig.Assign.Quantile(0.99)),
		fleetsim.MS(fig.Whole.Quantile(0.5)), fleetsim.MS(fig.Whole.Quantile(0.99)), f.Matched.Load())
	for i, p := range procs {
		w, e := warmMem.procs[i], endMem.procs[i]
		t.Logf("%s after %d and after %d jobs: heap in use %s → %s (%.1f KiB/job), goroutines %d → %d, RSS %s → %s, peak RSS %s",
			p.name, warm, jobs, mib(w.heap), mib(e.heap), float64(e.heap-w.heap)/1024/float64(rest), w.goroutines, e.goroutines, mib(w.rss), mib(e.rss), mib(e.peak))
	}
	t.Logf("the fleet (%d hosts in the test process): heap in use %s → %s (%.0f KiB/host; %.2f KiB/job), goroutines %d → %d (%d before the fleet)",
		hosts, mib(warmMem.fleetHeap), mib(endMem.fleetHeap), (float64(endMem.fleetHeap)-float64(heapBefore))/1024/float64(hosts),
		(float64(endMem.fleetHeap)-float64(warmMem.fleetHeap))/1024/float64(rest), warmMem.goroutines, endMem.goroutines, goroutinesBefore)
	t.Logf("the fleet's side: %.1f ms CPU per job; retries %d, restarts %d, refused %d, stale reads %d",
		float64(cpu.Milliseconds())/float64(rest), f.Retries.Load(), f.Restarts.Load(), f.Refused.Load(), f.Stale.Load())

	if seen != jobs || finished != jobs || fig.NotPassed != 0 || fig.Doubled != 0 || f.Matched.Load() != int64(jobs) || f.Unmatched.Load() != 0 {
		t.Errorf("of %d jobs posted: %d seen, %d finished, %d not passed, %d ended more than once; %d matched, %d match requests failed",
			jobs, seen, finished, fig.NotPassed, fig.Doubled, f.Matched.Load(), f.Unmatched.Load())
	}
	for i, p := range procs {
		w, e := warmMem.procs[i], endMem.procs[i]
		bound := int64(matcherGrowth)
		if i == 0 {
			bound = rest * serverBytesPerJob
		}
		if grown := e.heap - w.heap; grown > bound {
			t.Errorf("%s: heap in use grew by %s over %d jobs, more than %s", p.name, mib(grown), rest, mib(bound))
		}
		if e.goroutines > w.goroutines+leakedGoroutines {
			t.Errorf("%s: goroutines grew from %d to %d over %d jobs", p.name, w.goroutines, e.goroutines, rest)
		}
	}
	if grown := endMem.fleetHeap - warmMem.fleetHeap; grown > rest*fleetBytesPerJob {
		t.Errorf("the fleet's heap grew by %s over %d jobs", mib(grown), rest)
	}
	if endMem.goroutines > warmMem.goroutines+leakedGoroutines {
		t.Errorf("goroutines of the fleet grew from %d to %d", warmMem.goroutines, endMem.goroutines)
	}
	checkLoadStream(t, ctx, bus, r.from, jobs)
}

// loadMemory is the memory of the load test's processes at one moment.
type loadMemory struct {
	procs      []processMemory // the server and the matchers
	fleetHeap  int64           // heap in use of the test process (the fleet and the test)
	goroutines int             // of the test process
}

// loadProcess is a jetqa process of the load test, with its profiles
// served on debug (--debug-listen).
type loadProcess struct {
	name  string
	proc  *os.Process
	debug string
}

// processMemory is what a process holds: its heap in use after a
// collection and its goroutines, as its profiles say, and its resident
// memory now and at its peak.
type processMemory struct {
	heap, rss, peak int64
	goroutines      int
}

func (p loadProcess) memory(t *testing.T) processMemory {
	t.Helper()
	var m processMemory
	for line := range strings.Lines(debugPage(t, p, "heap?gc=1&debug=1")) {
		if v, ok := strings.CutPrefix(line, "# HeapInuse = "); ok {
			m.heap, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	first, _, _ := strings.Cut(debugPage(t, p, "goroutine?debug=1"), "\n")
	if _, err := fmt.Sscanf(first, "goroutine profile: total %d", &m.goroutines); err != nil || m.heap == 0 {
		t.Fatalf("%s: no heap or goroutines in its profiles: %q", p.name, first)
	}
	m.rss, m.peak = processStatus(t, p.proc.Pid, "VmRSS:"), processStatus(t, p.proc.Pid, "VmHWM:")
	return m
}

// debugPage is one of the process's profiles as text.
func debugPage(t *testing.T, p loadProcess, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + p.debug + "/debug/pprof/" + path)
	if err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: /debug/pprof/%s: %s %v", p.name, path, resp.Status, err)
	}
	return string(body)
}

// processStatus is a figure of /proc/PID/status in KiB (VmRSS:, the
// resident memory; VmHWM:, its peak), in bytes.
func processStatus(t *testing.T, pid int, field string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(data)) {
		if rest, ok := strings.CutPrefix(line, field); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("/proc/%d/status: %q", pid, line)
			}
			return kib << 10
		}
	}
	t.Fatalf("/proc/%d/status has no %s", pid, field)
	return 0
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

// postJob posts one job through the API, signed with the test's key.
func postJob(ctx context.Context, s *system, settings url.Values) error {
	body := []byte(settings.Encode())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.api+"/api/v1/jobs", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	api.Sign(req, s.key.key, s.key.secret, body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	var posted struct{ ID int64 }
	if resp.StatusCode != http.StatusOK || json.Unmarshal(out, &posted) != nil || posted.ID == 0 {
		return fmt.Errorf("post job: %s %s", resp.Status, out)
	}
	return nil
}

// checkLoadStream audits the job stream after from: n jobs, each created
// once, assigned once and ended exactly once, passed, with no event after
// its end; every stream sequence is there once (none lost, none doubled).
func checkLoadStream(t *testing.T, ctx context.Context, bus *streams.Bus, from uint64, n int) {
	t.Helper()
	jobs, _ := jobLives(t, ctx, bus, from)
	bad := 0
	for id, j := range jobs {
		if j.created != 1 || j.assigned != 1 || len(j.ends) != 1 || j.after != 0 || j.ends[0].Result != schemas.ResultPassed {
			if bad++; bad <= 10 {
				t.Errorf("job %d: created %d, assigned %d, ended %d times (%+v), %d events after its end", id, j.created, j.assigned, len(j.ends), j.ends, j.after)
			}
		}
	}
	if len(jobs) != n || bad > 0 {
		t.Errorf("the job stream after sequence %d holds %d jobs (want %d), %d of them not created, assigned and passed once", from, len(jobs), n, bad)
	}
}

// jobLife is what the job stream holds of one job.
type jobLife struct {
	created, assigned int
	ends              []schemas.JobFinished
	cloned            bool
	after             int // events after its end, but a clone's naming, an expiry or a deletion
}

// jobLives reads the job stream after from up to its end, failing when a
// sequence is missing or doubled, and returns each job's life and how
// many events it read.
func jobLives(t *testing.T, ctx context.Context, bus *streams.Bus, from uint64) (map[int64]*jobLife, uint64) {
	t.Helper()
	last, err := bus.LastSequence(ctx, streams.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	jobs := map[int64]*jobLife{}
	next := from + 1
	err = bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, From: from + 1}, func(ev schemas.Event, p schemas.Payload, d streams.Delivery) error {
		if d.Sequence != next {
			return fmt.Errorf("stream sequence %d follows %d", d.Sequence, next-1)
		}
		next++
		if ev.Job != 0 {
			j := jobs[ev.Job]
			if j == nil {
				j = &jobLife{}
				jobs[ev.Job] = j
			}
			switch p := p.(type) {
			case *schemas.JobCreated:
				j.created++
			case *schemas.JobAssigned:
				j.assigned++
			case *schemas.JobFinished:
				j.ends = append(j.ends, *p)
			case *schemas.JobRestarted:
				j.cloned = true
			case *schemas.JobFilesExpired, *schemas.JobDeleted:
			default:
				if len(j.ends) > 0 {
					j.after++
				}
			}
		}
		if d.Sequence >= last {
			return streams.ErrStopWatch
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return jobs, last - from
}

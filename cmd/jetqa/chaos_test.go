package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// TestFaultsAtRandomPoints runs jobs through the rig of TestFleetUnderLoad
// (a server process, two matcher processes, simulated worker hosts) while
// one of them after another is killed at a random moment and started
// again: the server (SIGKILL, with its embedded NATS server, down 1–5 s),
// a matcher (SIGKILL, down 1–3 s), a worker host (its connections cut at
// once, whatever it was doing; back within 3 s, or after 12 s, past the
// worker timeout of 8 s). Jobs keep coming, two per host queued.
//
// Then every job must have ended exactly once, passed or with a reason,
// nothing after its end; a job of a worker that went offline, cloned; and
// the job stream's sequences all there, once. JETQA_CHAOS_SEED replays a
// run's kills (the seed is logged); JETQA_CHAOS_TIME sets how long the
// kills go on (90 s; make soak: 15 minutes). JETQA_LOAD_TEST=1 runs it.
func TestFaultsAtRandomPoints(t *testing.T) {
	if os.Getenv("JETQA_LOAD_TEST") == "" {
		t.Skip("JETQA_LOAD_TEST=1 runs it (make test does)")
	}
	seed := chaosSeed(t)
	during := 90 * time.Second
	if v := os.Getenv("JETQA_CHAOS_TIME"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("JETQA_CHAOS_TIME=%q: want a duration", v)
		}
		during = d
	}
	rnd := rand.New(rand.NewPCG(seed, seed))
	const hosts, workerTimeout = 20, 8 * time.Second

	ctx, cancel := context.WithTimeout(context.Background(), during+20*time.Minute)
	defer cancel()
	r := startRig(t, ctx, rigConfig{hosts: hosts, workerTimeout: workerTimeout, heartbeat: time.Second})

	// Jobs keep coming while the kills go on.
	stopPosting := make(chan struct{})
	posting := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stopPosting:
				posting <- nil
				return
			default:
			}
			if err := r.post(20, true); err != nil {
				posting <- err
				return
			}
		}
	}()

	var kills []string
	pause := func(lo, hi time.Duration) {
		d := lo + time.Duration(rnd.Int64N(int64(hi-lo)))
		wait := time.NewTimer(d)
		defer wait.Stop()
		select {
		case <-wait.C:
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	end := time.Now().Add(during)
	for time.Now().Before(end) {
		pause(2*time.Second, 6*time.Second)
		switch victim := rnd.IntN(10); {
		case victim < 2:
			kills = append(kills, "server")
			_ = r.server.cmd.Process.Kill()
			<-r.server.ended
			_ = r.server.cmd.Wait()
			pause(time.Second, 5*time.Second)
			r.startServer(workerTimeout)
		case victim < 4:
			i := rnd.IntN(len(r.matchers))
			kills = append(kills, fmt.Sprintf("matcher m%d", i+1))
			r.stops[i]()
			pause(time.Second, 3*time.Second)
			r.startMatcher(i)
		default:
			i := rnd.IntN(hosts)
			long := rnd.IntN(4) == 0
			kills = append(kills, fmt.Sprintf("host w%04d (long: %v)", i+1, long))
			r.fleet.Kill(i)
			if long {
				pause(workerTimeout+4*time.Second, workerTimeout+5*time.Second)
			} else {
				pause(10*time.Millisecond, 3*time.Second)
			}
			if err := r.fleet.Revive(i); err != nil {
				t.Fatalf("host w%04d: %v", i+1, err)
			}
		}
	}
	close(stopPosting)
	// Posting waits for free slots: jobs that never end hold them.
	stuck := time.NewTimer(3 * time.Minute)
	defer stuck.Stop()
	select {
	case err := <-posting:
		if err != nil {
			t.Fatal(err)
		}
	case <-stuck.C:
		seen, done := r.rec.Jobs()
		t.Fatalf("posting did not stop within 3 minutes of the last kill: %d of %d jobs ended", done, seen)
	}
	t.Logf("%d kills: %s", len(kills), strings.Join(kills, ", "))
	r.rec.WaitAllEnded(t, int(r.posted.Load()), r.bus)
	checkChaosStream(t, ctx, r.bus, r.from)
}

// checkChaosStream audits the job stream after from: every sequence once;
// every job created once and ended exactly once, passed or with a reason,
// with no event after its end but a clone's naming, an expiry or a
// deletion; a job whose worker went offline names its clone. It logs the
// results.
func checkChaosStream(t *testing.T, ctx context.Context, bus *streams.Bus, from uint64) {
	t.Helper()
	jobs, events := jobLives(t, ctx, bus, from)
	results := map[string]int{}
	bad := 0
	for id, j := range jobs {
		problem := ""
		switch {
		case j.created != 1 || len(j.ends) != 1 || j.after != 0:
			problem = fmt.Sprintf("created %d times, ended %d times, %d events after its end", j.created, len(j.ends), j.after)
		case j.ends[0].Result != schemas.ResultPassed && j.ends[0].Reason == "":
			problem = fmt.Sprintf("ended %s without a reason", j.ends[0].Result)
		case strings.Contains(j.ends[0].Reason, "went offline") && !j.cloned:
			problem = fmt.Sprintf("ended %s (%s) and was not cloned", j.ends[0].Result, j.ends[0].Reason)
		}
		if problem != "" {
			if bad++; bad <= 10 {
				t.Errorf("job %d: %s", id, problem)
			}
			continue
		}
		why := j.ends[0].Result
		if j.ends[0].Reason != "" {
			why += ": " + trimJobNumbers(j.ends[0].Reason)
		}
		results[why]++
	}
	var lines []string
	for why, n := range results {
		lines = append(lines, fmt.Sprintf("%d %s", n, why))
	}
	slices.Sort(lines)
	t.Logf("%d jobs, %d events: %s", len(jobs), events, strings.Join(lines, "; "))
	if bad > 0 {
		t.Errorf("%d of %d jobs did not end exactly once with a result and a reason", bad, len(jobs))
	}
}

// trimJobNumbers makes reasons that differ only by worker or number one.
func trimJobNumbers(reason string) string {
	out := []byte(reason)
	for i, c := range out {
		if c >= '0' && c <= '9' {
			out[i] = '#'
		}
	}
	return string(out)
}

// chaosSeed is the seed of a test's random kills: JETQA_CHAOS_SEED, to
// replay a run, or a new one. It is logged.
func chaosSeed(t *testing.T) uint64 {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("JETQA_CHAOS_SEED"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("JETQA_CHAOS_SEED=%q: want a number", v)
		}
		seed = n
	}
	t.Logf("JETQA_CHAOS_SEED=%d", seed)
	return seed
}

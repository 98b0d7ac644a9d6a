package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// rounds is how many times BenchmarkMatcherProcesses measures each load.
const rounds = 5

// median is the middle value of xs (of the two middle ones, the mean).
func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	return (s[(len(s)-1)/2] + s[len(s)/2]) / 2
}

// machineCPU is the machine's CPU time so far, in clock ticks, all of it
// and the idle part (/proc/stat).
type machineCPU struct{ total, idle int64 }

func cpuTimes(tb testing.TB) machineCPU {
	tb.Helper()
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		tb.Fatal(err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	var c machineCPU
	for i, field := range strings.Fields(line)[1:] {
		n, err := strconv.ParseInt(field, 10, 64)
		if err != nil {
			tb.Fatalf("/proc/stat: %q", line)
		}
		c.total += n
		if i == 3 || i == 4 { // idle, iowait
			c.idle += n
		}
	}
	return c
}

// idleSince is the share of the CPU time since before that was idle.
func (c machineCPU) idleSince(before machineCPU) float64 {
	return float64(c.idle-before.idle) / float64(max(1, c.total-before.total))
}

// BenchmarkMatcherProcesses measures the pool's throughput with one and
// with two `jetqa matcher` processes of one worker and one core each
// (GOMAXPROCS=1, as one process per core or per host would have), on the
// same embedded NATS server, and reports the ratio (goal ≥ 1.8 on 2
// cores). Each request is a real testos screen full of kernel messages
// against the three testos needles, none of them on it (the costly case:
// nothing to rule out), near their place (ratio 0.02) or on the whole
// screen (ratio 1), as assert_screen sends them. It reports the medians
// of five rounds, the smallest ratio of a round, and how much of the
// machine's CPU was idle with two processes: none means that the two
// matchers, the NATS server and the client sending the requests had both
// cores to share.
func BenchmarkMatcherProcesses(b *testing.B) {
	srv := natstest.Start(b)
	bus := srv.Bus("load")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	refs := publishTestosNeedles(b, ctx, bus)
	screen := kernelMessages(b)
	for _, load := range []struct {
		name     string
		ratio    float64
		requests int
	}{{"ratio=0.02", 0.02, 800}, {"ratio=1", 1, 80}} {
		b.Run(load.name, func(b *testing.B) {
			// Each round measures one process, then two: a pair measured
			// close together, as this machine's speed drifts over seconds.
			// The rates and the ratio reported are the medians of the rounds.
			var ones, twos, ratios, idles []float64
			for b.Loop() {
				for range rounds {
					var rate, idle [3]float64 // requests per second and idle CPU share with 1 and 2 processes
					for procs := 1; procs <= 2; procs++ {
						stop := startMatcherProcesses(b, srv.URL, procs, "--no-split")
						send := func(n int, id string) (time.Duration, map[string]bool) {
							return matchRequests(b, ctx, bus, n, schemas.MatchRequested{ID: id, Screen: screen, Needles: refs, Ratio: load.ratio})
						}
						// Until every process has answered: all consume, with their needles prepared.
						for warm := 0; ; warm++ {
							if _, by := send(2*procs, fmt.Sprintf("warm%d-%d", procs, warm)); len(by) == procs {
								break
							}
						}
						cpu := cpuTimes(b)
						took, _ := send(load.requests, fmt.Sprintf("run%d", procs))
						rate[procs] = float64(load.requests) / took.Seconds()
						idle[procs] = cpuTimes(b).idleSince(cpu)
						stop()
					}
					ones, twos, ratios, idles = append(ones, rate[1]), append(twos, rate[2]), append(ratios, rate[2]/rate[1]), append(idles, idle[2])
					b.Logf("%s round: %.0f req/s with 1 process (CPU %.0f%% idle), %.0f with 2 (%.0f%% idle): %.2fx",
						load.name, rate[1], 100*idle[1], rate[2], 100*idle[2], rate[2]/rate[1])
				}
			}
			b.ReportMetric(median(ones), "req/s-1proc")
			b.ReportMetric(median(twos), "req/s-2proc")
			b.ReportMetric(median(ratios), "x-2proc")
			b.ReportMetric(slices.Min(ratios), "x-2proc-min")
			b.ReportMetric(100*median(idles), "idle-%-2proc")
		})
	}
}

// kernelMessages is a real testos screen full of kernel messages, none of
// the testos needles on it: nothing for the exact search to rule out.
func kernelMessages(tb testing.TB) []byte {
	tb.Helper()
	screen, err := os.ReadFile(filepath.Join("..", "..", "stages", "match", "needle", "testdata", "testos", "06-kernel-pci.png"))
	if err != nil {
		tb.Fatal(err)
	}
	return screen
}

// publishTestosNeedles stores the testos needles as the boot stage does.
func publishTestosNeedles(tb testing.TB, ctx context.Context, bus *streams.Bus) []schemas.NeedleRef {
	tb.Helper()
	dir, err := schemas.ReadNeedleDir(filepath.Join("..", "..", "deploy", "testos", "needles"))
	if err != nil {
		tb.Fatal(err)
	}
	var refs []schemas.NeedleRef
	for _, n := range dir.Needles {
		jsonKey, pngKey := streams.NeedleBlobKeys(n.Hash)
		for key, path := range map[string]string{jsonKey: n.JSONPath, pngKey: n.PNGPath} {
			data, err := os.ReadFile(path)
			if err != nil {
				tb.Fatal(err)
			}
			if err := bus.PutBlob(ctx, streams.BucketNeedles, key, bytes.NewReader(data)); err != nil {
				tb.Fatal(err)
			}
		}
		refs = append(refs, schemas.NeedleRef{Name: n.Name, Hash: n.Hash})
	}
	return refs
}

// startMatcherProcesses starts n `jetqa matcher --workers 1` processes of
// one core each, named m1…, with more flags if given; stop kills them and
// waits for them.
func startMatcherProcesses(tb testing.TB, natsURL string, n int, flags ...string) (stop func()) {
	tb.Helper()
	var stops []func()
	for i := range n {
		_, stop := startMatcherProcess(tb, natsURL, fmt.Sprintf("m%d", i+1), flags...)
		stops = append(stops, stop)
	}
	return func() {
		for _, stop := range stops {
			stop()
		}
	}
}

// startMatcherProcess starts one `jetqa matcher --workers 1` process of one
// core, with more flags if given; stop kills it (if it still runs) and
// waits for it.
func startMatcherProcess(tb testing.TB, natsURL, name string, flags ...string) (cmd *exec.Cmd, stop func()) {
	tb.Helper()
	cmd = exec.Command(os.Args[0], append([]string{"matcher", "--nats", natsURL, "--workers", "1", "--name", name, "--log-level", "warn"}, flags...)...)
	cmd.Env = append(os.Environ(), "JETQA_RUN_MAIN=1", "GOMAXPROCS=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		lines := bufio.NewScanner(stderr)
		for lines.Scan() {
			tb.Logf("[%s] %s", name, lines.Text())
		}
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			<-logged
			_ = cmd.Wait()
		})
	}
	tb.Cleanup(stop)
	return cmd, stop
}

// matchRequests sends n copies of req (IDs req.ID-0…) to the pool and
// returns the time until the last answer came, and which matchers answered.
func matchRequests(tb testing.TB, ctx context.Context, bus *streams.Bus, n int, req schemas.MatchRequested) (time.Duration, map[string]bool) {
	tb.Helper()
	req.ReplyTo = schemas.WorkerRef{Host: "load-" + req.ID, Instance: 1}
	from, err := bus.LastSequence(ctx, streams.StreamMatchResults)
	if err != nil {
		tb.Fatal(err)
	}
	start := time.Now()
	id := req.ID
	for i := range n {
		req.ID = fmt.Sprintf("%s-%d", id, i)
		if _, err := bus.Append(ctx, 1, req); err != nil {
			tb.Fatal(err)
		}
	}
	answered, by := 0, map[string]bool{}
	err = bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamMatchResults, Filters: []string{streams.MatchResolvedFor(req.ReplyTo)}, From: from + 1},
		func(_ schemas.Event, p schemas.Payload, _ streams.Delivery) error {
			if r := p.(*schemas.MatchResolved); r.Error != "" {
				return fmt.Errorf("answer %s: %s", r.ID, r.Error)
			} else {
				by[r.Matcher] = true
			}
			if answered++; answered == n {
				return streams.ErrStopWatch
			}
			return nil
		})
	if err != nil {
		tb.Fatal(err)
	}
	return time.Since(start), by
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

var worker = schemas.WorkerRef{Host: "w1", Instance: 1}

// lifecycle is a passed job's events in order, split where `job watch`
// would see the VM running.
func lifecycle() (untilRunning, rest []schemas.Payload) {
	untilRunning = []schemas.Payload{
		&schemas.JobCreated{Settings: map[string]string{"DISTRI": "testos", "TEST": "demo"}},
		&schemas.JobAssigned{Worker: worker},
		&schemas.JobReady{Worker: worker},
		&schemas.JobStarted{Worker: worker, Accel: "tcg"},
		&schemas.ModuleStarted{Module: "boot"},
	}
	rest = []schemas.Payload{
		&schemas.ModuleFinished{ModuleResult: schemas.ModuleResult{Name: "boot", Result: schemas.ResultPassed, Duration: 1500 * time.Millisecond}},
		&schemas.TestsFinished{Worker: worker, Result: schemas.ResultPassed},
		&schemas.JobFinished{Result: schemas.ResultPassed},
	}
	return untilRunning, rest
}

func kinds(ps []schemas.Payload) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Kind())
	}
	return out
}

// appendEvents appends events about job (0: worker events) and returns
// them as stored, with the time their publisher stamped.
func appendEvents(t *testing.T, bus *streams.Bus, job int64, ps ...schemas.Payload) []schemas.Event {
	t.Helper()
	ctx := context.Background()
	name := streams.StreamJobs
	if job == 0 {
		name = streams.StreamWorkers
	}
	s, err := bus.JS.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	var out []schemas.Event
	for _, p := range ps {
		seq, err := bus.Append(ctx, job, p)
		if err != nil {
			t.Fatalf("append %s: %v", p.Kind(), err)
		}
		raw, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := schemas.Unmarshal(raw.Data)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// runWithin runs a command that must return by itself, and its output lines.
func runWithin(t *testing.T, cmd func(ctx context.Context, args []string, stdout, stderr io.Writer) error, args ...string) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := cmd(ctx, args, &stdout, &stderr)
	if ctx.Err() != nil {
		t.Fatalf("jetqa %s did not return by itself: %v\n%s", strings.Join(args, " "), err, stdout.String())
	}
	if stderr.Len() > 0 {
		t.Logf("stderr: %s", stderr.String())
	}
	out := strings.TrimSuffix(stdout.String(), "\n")
	if out == "" {
		return nil, err
	}
	return strings.Split(out, "\n"), err
}

// lineKinds picks the kind column out of timeline lines.
func lineKinds(t *testing.T, lines []string) []string {
	t.Helper()
	var out []string
	for _, l := range lines {
		kind := ""
		for _, f := range strings.Fields(l) {
			if _, ok := knownKinds[f]; ok {
				kind = f
				break
			}
		}
		if kind == "" {
			t.Errorf("no event kind in line %q", l)
		}
		out = append(out, kind)
	}
	return out
}

var knownKinds = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range schemas.Kinds() {
		m[k] = true
	}
	return m
}()

func sameStrings(a, b []string) bool { return strings.Join(a, "\n") == strings.Join(b, "\n") }

// timelineLine is time (UTC, milliseconds), time since the first event,
// source, kind and details.
var timelineLine = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z +\+(\d+\.\d{3})s  (\S+) +(\S+)`)

func TestReplayPrintsTheJobsTimeline(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("replay-test")
	first, rest := lifecycle()
	appendEvents(t, bus, 1, first...)
	appendEvents(t, bus, 2, first[0]) // another job's events are not in job 1's timeline
	appendEvents(t, bus, 1, rest...)

	lines, err := runWithin(t, replayJob, "--nats", srv.URL, "1")
	if err != nil {
		t.Fatal(err)
	}
	want := kinds(append(first, rest...))
	if got := lineKinds(t, lines); !sameStrings(got, want) {
		t.Fatalf("kinds:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	last := -1.0
	for i, l := range lines {
		m := timelineLine.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("line %q is not time, +elapsed, source, kind", l)
		}
		if i == 0 && m[1] != "0.000" {
			t.Errorf("first event at +%ss, want +0.000s", m[1])
		}
		elapsed, _ := strconv.ParseFloat(m[1], 64)
		if elapsed < last {
			t.Errorf("elapsed goes back: +%ss after +%.3fs", m[1], last)
		}
		last = elapsed
		if m[2] != "replay-test" {
			t.Errorf("source %q, want replay-test", m[2])
		}
	}
	for _, l := range lines {
		if strings.Contains(l, "job.created.v1") && !strings.Contains(l, "DISTRI=testos TEST=demo") {
			t.Errorf("created line without settings: %q", l)
		}
		if strings.Contains(l, "module.finished.v1") && !strings.Contains(l, "boot passed in 1.5s") {
			t.Errorf("module line without its result: %q", l)
		}
	}
}

func TestReplayJSONLinesAreTheEvents(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("replay-test")
	first, rest := lifecycle()
	stored := appendEvents(t, bus, 1, append(first, rest...)...)

	lines, err := runWithin(t, replayJob, "--nats", srv.URL, "--json", "1")
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != len(stored) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(stored), strings.Join(lines, "\n"))
	}
	for i, l := range lines {
		ev, err := schemas.Unmarshal([]byte(l))
		if err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if _, err := ev.Decode(); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if ev.Kind != stored[i].Kind || ev.Job != 1 || !ev.Time.Equal(stored[i].Time) || !bytes.Equal(ev.Data, stored[i].Data) {
			t.Errorf("line %d is %s of job %d at %s, want %s at %s", i, ev.Kind, ev.Job, ev.Time, stored[i].Kind, stored[i].Time)
		}
	}
}

func TestReplayStopsAtTheStoredEnd(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("replay-test")
	first, rest := lifecycle()
	appendEvents(t, bus, 1, append(first, rest...)...)
	appendEvents(t, bus, 2, first...)
	// Events of other jobs after job 2's last: it is not at the stream's end.
	appendEvents(t, bus, 3, first[:2]...)

	for _, tc := range []struct {
		name string
		job  string
		want []string
	}{
		{"finished", "1", kinds(append(first, rest...))},
		{"running", "2", kinds(first)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines, err := runWithin(t, replayJob, "--nats", srv.URL, tc.job)
			if err != nil {
				t.Fatal(err)
			}
			if got := lineKinds(t, lines); !sameStrings(got, tc.want) {
				t.Errorf("kinds %v, want %v", got, tc.want)
			}
		})
	}
}

// running is a command that runs until it returns by itself or is
// interrupted, whose output lines the test reads as they are written.
type running struct {
	t      *testing.T
	what   string
	ctx    context.Context
	cancel context.CancelFunc
	lines  chan string
	done   chan error
}

func start(t *testing.T, cmd func(ctx context.Context, args []string, stdout, stderr io.Writer) error, args ...string) *running {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	r := &running{t: t, what: "jetqa " + strings.Join(args, " "), ctx: ctx, cancel: cancel, lines: make(chan string, 100), done: make(chan error, 1)}
	pr, pw := io.Pipe()
	go func() {
		err := cmd(ctx, args, pw, io.Discard)
		pw.Close()
		r.done <- err
	}()
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		close(r.lines)
	}()
	t.Cleanup(func() {
		cancel()
		pr.Close()
	})
	return r
}

// next is the next output line; false when the output ended.
func (r *running) next() (string, bool) {
	r.t.Helper()
	select {
	case l, ok := <-r.lines:
		return l, ok
	case <-r.ctx.Done():
		r.t.Fatalf("%s: no line before the deadline", r.what)
		return "", false
	}
}

// wait expects the command to end by itself with no more output.
func (r *running) wait() error {
	r.t.Helper()
	if l, ok := r.next(); ok {
		r.t.Fatalf("%s: unexpected line %q", r.what, l)
	}
	select {
	case err := <-r.done:
		return err
	case <-r.ctx.Done():
		r.t.Fatalf("%s did not return by itself", r.what)
		return nil
	}
}

// interrupt is Ctrl-C.
func (r *running) interrupt() error {
	r.cancel()
	return <-r.done
}

func TestReplayFollowEndsWhenTheJobFinishes(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("replay-test")
	first, rest := lifecycle()
	appendEvents(t, bus, 1, first...)

	r := start(t, replayJob, "--nats", srv.URL, "--follow", "1")
	var got []string
	for range first {
		l, _ := r.next()
		got = append(got, l)
	}
	// Caught up with the stored events: the rest happens live.
	appendEvents(t, bus, 1, rest...)
	for range rest {
		l, ok := r.next()
		if !ok {
			t.Fatal("output ended before the job finished")
		}
		got = append(got, l)
	}
	if err := r.wait(); err != nil {
		t.Fatal(err)
	}
	if k := lineKinds(t, got); !sameStrings(k, kinds(append(first, rest...))) {
		t.Errorf("kinds %v", k)
	}
}

func TestReplayFollowOfAFinishedJobReturns(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("replay-test")
	first, rest := lifecycle()
	appendEvents(t, bus, 1, append(first, rest...)...)
	lines, err := runWithin(t, replayJob, "--nats", srv.URL, "--follow", "1")
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != len(first)+len(rest) {
		t.Errorf("%d lines, want %d", len(lines), len(first)+len(rest))
	}
}

func TestReplayUnknownJob(t *testing.T) {
	srv := natstest.Start(t)
	first, _ := lifecycle()
	appendEvents(t, srv.Bus("replay-test"), 1, first...)
	_, err := runWithin(t, replayJob, "--nats", srv.URL, "42")
	if err == nil || !strings.Contains(err.Error(), "job 42 does not exist") {
		t.Fatalf("error %v, want job 42 does not exist", err)
	}
}

func TestEventsMergesJobsAndWorkersByTime(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("events-test")
	first, _ := lifecycle()
	var want []string
	add := func(evs []schemas.Event) {
		for _, ev := range evs {
			want = append(want, ev.Kind)
		}
	}
	add(appendEvents(t, bus, 0, &schemas.WorkerRegistered{Worker: worker, Arch: "x86_64", Classes: []string{"qemu_x86_64"}}))
	add(appendEvents(t, bus, 1, first[:2]...))
	appendEvents(t, bus, 0, &schemas.WorkerHeartbeat{Worker: worker, Job: 1}) // left out
	add(appendEvents(t, bus, 2, first[0]))
	add(appendEvents(t, bus, 0, &schemas.WorkerOffline{Worker: worker, LastSeen: time.Now()}))

	lines, err := runWithin(t, replayPeriod, "--nats", srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if got := lineKinds(t, lines); !sameStrings(got, want) {
		t.Fatalf("kinds:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, l := range lines {
		job := strings.Contains(l, " job 1 ") || strings.Contains(l, " job 2 ")
		if strings.Contains(l, " job.") != job {
			t.Errorf("job column wrong in %q", l)
		}
	}
}

func TestEventsSinceAndUntil(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("events-test")
	first, rest := lifecycle()
	before := appendEvents(t, bus, 1, first...)
	after := appendEvents(t, bus, 1, rest...)
	after = append(after, appendEvents(t, bus, 2, first[0])...)
	// T is the first later event's own time: every earlier one is older.
	since := after[0].Time
	if !before[len(before)-1].Time.Before(since) {
		t.Fatalf("events not apart in time: %s, %s", before[len(before)-1].Time, since)
	}
	T := since.Format(time.RFC3339Nano)

	for _, tc := range []struct {
		name string
		args []string
		want []schemas.Event
	}{
		{"since", []string{"--since", T}, after},
		{"until", []string{"--until", before[len(before)-1].Time.Format(time.RFC3339Nano)}, before},
		{"since and until", []string{"--since", T, "--until", T}, after[:1]},
		{"following until a past time", []string{"--follow", "--until", before[len(before)-1].Time.Format(time.RFC3339Nano)}, before},
		{"since a duration", []string{"--since", "1h"}, append(before, after...)},
		{"since after the last event", []string{"--since", time.Now().Add(time.Hour).Format(time.RFC3339)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines, err := runWithin(t, replayPeriod, append([]string{"--nats", srv.URL, "--json"}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if len(lines) != len(tc.want) {
				t.Fatalf("%d events, want %d:\n%s", len(lines), len(tc.want), strings.Join(lines, "\n"))
			}
			for i, l := range lines {
				ev, err := schemas.Unmarshal([]byte(l))
				if err != nil {
					t.Fatal(err)
				}
				if ev.Kind != tc.want[i].Kind || ev.Job != tc.want[i].Job || !ev.Time.Equal(tc.want[i].Time) {
					t.Errorf("event %d is %s of job %d at %s, want %s of job %d at %s", i, ev.Kind, ev.Job, ev.Time, tc.want[i].Kind, tc.want[i].Job, tc.want[i].Time)
				}
			}
		})
	}
}

func TestEventsFollowPrintsNewEventsUntilInterrupted(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("events-test")
	first, _ := lifecycle()
	appendEvents(t, bus, 1, first[0])

	r := start(t, replayPeriod, "--nats", srv.URL, "--follow")
	if l, _ := r.next(); !strings.Contains(l, "job.created.v1") {
		t.Fatalf("stored event: %q", l)
	}
	appendEvents(t, bus, 0, &schemas.WorkerRegistered{Worker: worker})
	if l, _ := r.next(); !strings.Contains(l, "worker.registered.v1") {
		t.Fatalf("new worker event: %q", l)
	}
	appendEvents(t, bus, 1, first[1])
	if l, _ := r.next(); !strings.Contains(l, "job.assigned.v1") {
		t.Fatalf("new job event: %q", l)
	}
	if err := r.interrupt(); err != nil {
		t.Fatalf("Ctrl-C ends a follow without error, got %v", err)
	}
}

func TestEventsTimeFlag(t *testing.T) {
	now := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
		bad  bool
	}{
		{in: ""},
		{in: "2026-11-27T10:00:00Z", want: time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)},
		{in: "2026-11-27T11:00:00.250+01:00", want: time.Date(2026, 11, 27, 10, 0, 0, 250e6, time.UTC)},
		{in: "10m", want: now.Add(-10 * time.Minute)},
		{in: "2h", want: now.Add(-2 * time.Hour)},
		{in: "1h30m", want: now.Add(-90 * time.Minute)},
		{in: "-10m", bad: true},
		{in: "0s", bad: true},
		{in: "yesterday", bad: true},
		{in: "2026-11-27", bad: true},
	} {
		got, err := parseWhen(tc.in, now)
		if tc.bad {
			if err == nil {
				t.Errorf("%q: got %s, want an error", tc.in, got)
			}
			continue
		}
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("%q: got %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

func FuzzEventsTimeFlag(f *testing.F) {
	for _, s := range []string{"2026-11-27T10:00:00Z", "10m", "2h", "-1s", "1.5h", "2026-11-27T10:00:00.123456789+05:30"} {
		f.Add(s)
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseWhen(s, now)
		if err != nil {
			return
		}
		if s == "" {
			if !got.IsZero() {
				t.Errorf("empty gave %s", got)
			}
			return
		}
		if _, derr := time.ParseDuration(s); derr == nil && !got.Before(now) {
			t.Errorf("%q is %s, not before now", s, got)
		}
	})
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"jetqa/schemas"
	"jetqa/streams"
)

// cmdReplay is `jetqa replay`: one job's timeline, read back from its events.
func cmdReplay(args []string, stdout, stderr io.Writer) error {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	return replayJob(ctx, args, stdout, stderr)
}

// cmdEvents is `jetqa events`: every job's and worker's events of a period.
func cmdEvents(args []string, stdout, stderr io.Writer) error {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	return replayPeriod(ctx, args, stdout, stderr)
}

// replayJob prints a job's events from its first to the last one stored
// when it began, or, following, on until the job has finished.
func replayJob(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: jetqa replay [flags] ID\n\nPrint a job's events: time, time since its first event, source, kind, details.")
		fs.PrintDefaults()
	}
	natsURL := fs.String("nats", envOr("JETQA_NATS", "nats://127.0.0.1:4222"), "NATS server")
	follow := fs.Bool("follow", false, "go on with new events until the job finishes")
	asJSON := fs.Bool("json", false, "print each event's JSON envelope, one per line")
	needles := fs.String("needles", "", "match the job's recorded screens again against the needles of `GITURL[#REF]` (or a directory), through the matcher pool, and say whether it would pass")
	apiURL := fs.String("api", envOr("JETQA_API", "http://127.0.0.1:9526"), "jetqa API the screenshots are read from, with --needles")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	id, err := oneID(fs.Args())
	if err != nil {
		return err
	}
	bus, err := connectNATS(ctx, *natsURL, "jetqa-cli")
	if err != nil {
		return err
	}
	defer bus.Close()
	if _, err := bus.JobSettings(ctx, id); errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("job %d does not exist", id)
	} else if err != nil {
		return err
	}
	if *needles != "" {
		return rematch(ctx, bus, id, *needles, *apiURL, *asJSON, stdout)
	}
	out := timeline{w: stdout, json: *asJSON}
	finished := false
	pb := playback{
		feeds:  []feed{{stream: streams.StreamJobs, filters: []string{streams.JobSubject(id) + ".>"}}},
		follow: *follow,
		// Events may follow job.finished.v1 (a restart), so a follow ends only
		// once it has caught up too.
		done: func() bool { return finished },
	}
	err = pb.run(ctx, bus, func(ev schemas.Event, p schemas.Payload) error {
		if _, ok := p.(*schemas.JobFinished); ok {
			finished = true
		}
		return out.print(ev, p)
	})
	return endOfFollow(err, *follow)
}

// replayPeriod prints the events of every job and worker stored in a
// period, merged by time.
func replayPeriod(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("events", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: jetqa events [flags]\n\nPrint every job's and worker's events of a period (worker heartbeats left out).\nT is a time (2026-11-27T10:00:00Z) or a duration back from now (10m, 2h).")
		fs.PrintDefaults()
	}
	natsURL := fs.String("nats", envOr("JETQA_NATS", "nats://127.0.0.1:4222"), "NATS server")
	sinceFlag := fs.String("since", "", "first `T` to show; default: the beginning")
	untilFlag := fs.String("until", "", "last `T` to show; default: now, or with --follow forever")
	follow := fs.Bool("follow", false, "go on with new events until --until or Ctrl-C")
	asJSON := fs.Bool("json", false, "print each event's JSON envelope, one per line")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("events takes no arguments, only flags: %q", fs.Args())
	}
	now := time.Now()
	since, err := parseWhen(*sinceFlag, now)
	if err != nil {
		return fmt.Errorf("--since %w", err)
	}
	until, err := parseWhen(*untilFlag, now)
	if err != nil {
		return fmt.Errorf("--until %w", err)
	}
	if !since.IsZero() && !until.IsZero() && until.Before(since) {
		return fmt.Errorf("--until %s is before --since %s", until.UTC().Format(time.RFC3339), since.UTC().Format(time.RFC3339))
	}
	bus, err := connectNATS(ctx, *natsURL, "jetqa-cli")
	if err != nil {
		return err
	}
	defer bus.Close()
	heartbeat := schemas.WorkerHeartbeat{}.Kind()
	pb := playback{
		feeds: []feed{
			{stream: streams.StreamJobs},
			{stream: streams.StreamWorkers, skip: func(ev schemas.Event) bool { return ev.Kind == heartbeat }},
		},
		since:  since,
		until:  until,
		follow: *follow,
	}
	out := timeline{w: stdout, json: *asJSON, jobs: true}
	return endOfFollow(pb.run(ctx, bus, out.print), *follow)
}

// endOfFollow makes Ctrl-C the normal end of a follow.
func endOfFollow(err error, follow bool) error {
	if follow && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return nil
	}
	return err
}

// parseWhen reads a point in time: RFC 3339, or a duration back from now.
// Empty is the zero time.
func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q: want a time like 2026-11-27T10:00:00Z or a duration back from now like 10m or 2h", s)
}

// clockSkew is how much earlier than an event's own time (set by its
// publisher) the stream may have stored it: a replay from T asks the stream
// for events from T-clockSkew and keeps those whose time is T or later.
const clockSkew = time.Minute

// feed is one stream's part of a replay.
type feed struct {
	stream  string
	filters []string                 // none: the whole stream
	skip    func(schemas.Event) bool // nil keeps every event
}

// playback replays feeds merged by event time, each up to the last event
// it held when the replay began; following, it then prints new events as
// they arrive until done.
type playback struct {
	feeds        []feed
	since, until time.Time // zero: no bound
	follow       bool
	// done ends a follow (as does the end of the period); it is asked once
	// the feeds have caught up and after every later event. nil: never.
	done func() bool
}

// replayed is what a feed's reader hands the merge.
type replayed struct {
	ev schemas.Event
	p  schemas.Payload
	// caughtUp marks the end of the feed's stored events; later events go
	// to the live channel.
	caughtUp bool
}

// run hands emit the events one at a time, in the merge's order.
func (pb playback) run(ctx context.Context, bus *streams.Bus, emit func(schemas.Event, schemas.Payload) error) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	stored := make([]chan replayed, len(pb.feeds))
	live := make(chan replayed)
	failed := make(chan error, len(pb.feeds))
	for i, f := range pb.feeds {
		stored[i] = make(chan replayed)
		wg.Go(func() {
			if err := pb.read(ctx, bus, f, stored[i], live); err != nil && ctx.Err() == nil {
				failed <- err
			}
		})
	}
	receive := func(ch <-chan replayed) (replayed, error) {
		select {
		case r := <-ch:
			return r, nil
		case err := <-failed:
			return replayed{}, err
		case <-ctx.Done():
			return replayed{}, ctx.Err()
		}
	}

	// Merge the stored events: always print the oldest of the feeds' next
	// events, so each feed waits for the others.
	next := make([]*replayed, len(pb.feeds))
	caughtUp := make([]bool, len(pb.feeds))
	for {
		for i := range next {
			if next[i] != nil || caughtUp[i] {
				continue
			}
			r, err := receive(stored[i])
			if err != nil {
				return err
			}
			if r.caughtUp {
				caughtUp[i] = true
			} else {
				next[i] = &r
			}
		}
		oldest := -1
		for i, r := range next {
			if r != nil && (oldest < 0 || r.ev.Time.Before(next[oldest].ev.Time)) {
				oldest = i
			}
		}
		if oldest < 0 {
			break
		}
		if err := emit(next[oldest].ev, next[oldest].p); err != nil {
			return err
		}
		next[oldest] = nil
	}

	// Following: new events as they come, until done or the period is over.
	var periodEnd <-chan time.Time
	if pb.follow && !pb.until.IsZero() {
		t := time.NewTimer(time.Until(pb.until))
		defer t.Stop()
		periodEnd = t.C
	}
	for pb.follow && (pb.done == nil || !pb.done()) {
		select {
		case r := <-live:
			if err := emit(r.ev, r.p); err != nil {
				return err
			}
		case err := <-failed:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-periodEnd:
			return nil
		}
	}
	return nil
}

// read hands the merge f's events in the period: those stored when it
// began on stored, then a caughtUp mark, then (following) new ones on live.
func (pb playback) read(ctx context.Context, bus *streams.Bus, f feed, stored, live chan<- replayed) error {
	// The stored events end at the stream's last message now: the watch has
	// caught up at that message, or at a matching one with nothing pending
	// after it. That needs one delivery at least: a feed with filters is a
	// job that exists; one without reads every message, the last included
	// unless it is older than the period.
	s, err := bus.JS.Stream(ctx, f.stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", f.stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return fmt.Errorf("stream %s: %w", f.stream, err)
	}
	last := info.State.LastSeq
	cfg := streams.WatchConfig{Stream: f.stream, Filters: f.filters}
	if !pb.since.IsZero() {
		cfg.Since = pb.since.Add(-clockSkew)
	}
	hand := func(ch chan<- replayed, r replayed) error {
		select {
		case ch <- r:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	caughtUp := last == 0 || (!cfg.Since.IsZero() && info.State.LastTime.Before(cfg.Since))
	if caughtUp {
		if err := hand(stored, replayed{caughtUp: true}); err != nil || !pb.follow {
			return err
		}
	}
	return bus.Watch(ctx, cfg, func(ev schemas.Event, p schemas.Payload, d streams.Delivery) error {
		if pb.shows(ev) && (f.skip == nil || !f.skip(ev)) {
			ch := stored
			if caughtUp {
				ch = live
			}
			if err := hand(ch, replayed{ev: ev, p: p}); err != nil {
				return err
			}
		}
		if !caughtUp && (d.Pending == 0 || d.Sequence >= last) {
			caughtUp = true
			if err := hand(stored, replayed{caughtUp: true}); err != nil {
				return err
			}
			if !pb.follow {
				return streams.ErrStopWatch
			}
		}
		return nil
	})
}

// shows says whether an event's own time is in the period.
func (pb playback) shows(ev schemas.Event) bool {
	return (pb.since.IsZero() || !ev.Time.Before(pb.since)) && (pb.until.IsZero() || !ev.Time.After(pb.until))
}

// timeline prints events one a line: as text for people, or as the JSON
// envelope for tools.
type timeline struct {
	w     io.Writer
	json  bool
	jobs  bool      // a column with the job (events of many jobs)
	first time.Time // of the first event printed
}

func (t *timeline) print(ev schemas.Event, p schemas.Payload) error {
	if t.json {
		data, err := ev.Marshal()
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(t.w, "%s\n", data)
		return err
	}
	if t.first.IsZero() {
		t.first = ev.Time
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %10s  ", ev.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"), fmt.Sprintf("%+.3fs", ev.Time.Sub(t.first).Seconds()))
	if t.jobs {
		job := "-"
		if ev.Job != 0 {
			job = fmt.Sprintf("job %d", ev.Job)
		}
		fmt.Fprintf(&b, "%-9s ", job)
	}
	fmt.Fprintf(&b, "%-16s %-23s %s", ev.Source, ev.Kind, detail(p))
	_, err := fmt.Fprintln(t.w, strings.TrimRight(b.String(), " "))
	return err
}

// detail is summary, plus the worker events, which only `jetqa events` shows.
func detail(p schemas.Payload) string {
	switch e := p.(type) {
	case *schemas.WorkerRegistered:
		kvm := ""
		if e.KVM {
			kvm = " kvm"
		}
		return fmt.Sprintf("%s %s, %d CPUs, %d MiB%s, classes %s", e.Worker, e.Arch, e.CPUs, e.MemoryMiB, kvm, strings.Join(e.Classes, ","))
	case *schemas.WorkerHeartbeat:
		if e.Job != 0 {
			return fmt.Sprintf("%s running job %d", e.Worker, e.Job)
		}
		return e.Worker.String()
	case *schemas.WorkerOffline:
		return fmt.Sprintf("%s, last seen %s", e.Worker, e.LastSeen.UTC().Format(time.RFC3339))
	}
	return summary(p)
}

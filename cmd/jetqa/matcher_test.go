package main

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/stages/match"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// TestRequestOfAKilledMatcherIsAnsweredByAnother kills a `jetqa matcher`
// process in the middle of a request: the request is not lost, another
// matcher process answers it once the first has been silent for the ack
// wait, and the killed one never does.
func TestRequestOfAKilledMatcherIsAnsweredByAnother(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("worker")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	refs := publishTestosNeedles(t, ctx, bus)
	screen := kernelMessages(t)
	// Many whole-screen searches: long enough to be killed in the middle.
	var many []schemas.NeedleRef
	for range 100 {
		many = append(many, refs...)
	}
	req := schemas.MatchRequested{ID: "long", ReplyTo: schemas.WorkerRef{Host: "w", Instance: 1}, Screen: screen, Needles: many, Ratio: 1}

	m1, _ := startMatcherProcess(t, srv.URL, "m1", "--no-split")
	natstest.WaitUntil(t, ctx, func() error {
		if n, err := bus.Waiting(ctx, streams.StreamMatchRequests, match.Durable); err != nil || n == 0 {
			return fmt.Errorf("m1 not waiting for work: %d waiting, %v", n, err)
		}
		return nil
	})
	if _, err := bus.Append(ctx, 1, req); err != nil {
		t.Fatal(err)
	}
	cons, err := bus.JS.Consumer(ctx, streams.StreamMatchRequests, match.Durable)
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitUntil(t, ctx, func() error {
		if info, err := cons.Info(ctx); err != nil || info.NumAckPending != 1 {
			return fmt.Errorf("m1 not at work on the request: %v", err)
		}
		return nil
	})
	if err := m1.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	startMatcherProcess(t, srv.URL, "m2", "--no-split", "--spectra-mib", "0") // and keeps no DFTs

	var answers []schemas.MatchResolved
	err = bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamMatchResults, Filters: []string{streams.MatchResolvedFor(req.ReplyTo)}},
		func(_ schemas.Event, p schemas.Payload, _ streams.Delivery) error {
			answers = append(answers, *p.(*schemas.MatchResolved))
			return streams.ErrStopWatch
		})
	if err != nil {
		t.Fatal(err)
	}
	if a := answers[0]; a.Matcher != "m2" || a.Error != "" || len(a.Candidates) == 0 {
		t.Fatalf("answer %+v, want m2's", a)
	}
	t.Logf("answered by m2 %v after m1 was killed", time.Since(killed).Round(time.Millisecond))
}

package match_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/stages/match"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// lineNeedles publishes n needles cut from the testos shell screenshot,
// one text line each (the line y = 16·i), as a needle repository with
// many candidates for one tag would have.
func lineNeedles(t *testing.T, ctx context.Context, bus *streams.Bus, n int) []schemas.NeedleRef {
	t.Helper()
	png, err := os.ReadFile(filepath.Join("..", "..", "deploy", "testos", "needles", "testos-shell.png"))
	if err != nil {
		t.Fatal(err)
	}
	var refs []schemas.NeedleRef
	for i := range n {
		js := []byte(fmt.Sprintf(`{"tags":["line"],"area":[{"xpos":0,"ypos":%d,"width":160,"height":16,"type":"match"}]}`, 16*(i%24)+i/24))
		h := sha256.Sum256(append(append([]byte{}, js...), png...))
		hash := hex.EncodeToString(h[:])
		jsonKey, pngKey := streams.NeedleBlobKeys(hash)
		for key, data := range map[string][]byte{jsonKey: js, pngKey: png} {
			if err := bus.PutBlob(ctx, streams.BucketNeedles, key, bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
		}
		refs = append(refs, schemas.NeedleRef{Name: fmt.Sprintf("line-%02d", i), Hash: hash})
	}
	return refs
}

// runPool runs a matcher pool until the test ends.
func runPool(t *testing.T, ctx context.Context, cfg match.Config, bus *streams.Bus) {
	t.Helper()
	poolCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- match.New(cfg, bus, natstest.Logger(t)).Run(poolCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
}

// waitIdle waits until n matchers wait for work on the queue.
func waitIdle(t *testing.T, ctx context.Context, bus *streams.Bus, n int) {
	t.Helper()
	natstest.WaitUntil(t, ctx, func() error {
		idle, err := bus.Waiting(ctx, streams.StreamMatchRequests, match.Durable)
		if err == nil && idle >= n {
			return nil
		}
		return fmt.Errorf("%d matchers idle, want %d: %v", idle, n, err)
	})
}

// TestPoolSplitsARequestWithManyCandidates sends requests with many
// candidates (24 on the whole screen; 300 near their place, as a tag of a
// big needle repository has) to two processes' worth of idle matchers:
// each is answered in parts by more than one matcher, and the merged parts
// give the answer of the same request matched in one piece.
func TestPoolSplitsARequestWithManyCandidates(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("boot")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	refs := lineNeedles(t, ctx, bus, 300)
	whole := match.New(match.Config{Name: "whole", NoSplit: true}, srv.Bus("whole"), natstest.Logger(t))
	runPool(t, ctx, match.Config{Name: "m1", Workers: 2}, srv.Bus("m1"))
	runPool(t, ctx, match.Config{Name: "m2", Workers: 2}, srv.Bus("m2"))

	for i, tc := range []struct {
		needles int
		ratio   float64
	}{{24, 1}, {300, 0.02}} {
		t.Run(fmt.Sprintf("%d candidates at ratio %v", tc.needles, tc.ratio), func(t *testing.T) {
			req := schemas.MatchRequested{ID: fmt.Sprint("many", i), ReplyTo: schemas.WorkerRef{Host: "h", Instance: i},
				Screen: screen(t, "hello-output"), Needles: refs[:tc.needles], Ratio: tc.ratio}
			want := whole.Match(ctx, &req)
			if want.Error != "" || !want.Matched {
				t.Fatalf("unsplit answer: %+v", want)
			}
			waitIdle(t, ctx, bus, 4)
			parts := ask(t, ctx, bus, req)
			if len(parts) < 2 {
				t.Fatalf("answered in one piece by %s, want parts: %+v", parts[0].Matcher, parts[0].Part)
			}
			matchers := map[string]bool{}
			for _, p := range parts {
				matchers[p.Matcher] = true
				if p.Error != "" {
					t.Errorf("part %+v: %s", p.Part, p.Error)
				}
			}
			if len(matchers) < 2 {
				t.Errorf("all %d parts answered by %v, want the other process too", len(parts), matchers)
			}
			for _, p := range parts {
				var names []string
				for _, c := range p.Candidates {
					names = append(names, c.Needle)
				}
				t.Logf("part %+v by %s: %v", *p.Part, p.Matcher, names)
			}
			got := schemas.MergeMatchParts(parts, parts[0].Part.Candidates)
			if !reflect.DeepEqual(got.Candidates, want.Candidates) || got.Matched != want.Matched || !reflect.DeepEqual(got.Best, want.Best) || got.Error != "" {
				t.Errorf("merged parts:\n%+v\nunsplit:\n%+v", got, want)
			}
			t.Logf("%d parts by %v; longest part %d µs, unsplit %d µs", len(parts), matchers, got.Micros, want.Micros)
		})
	}
}

// TestPoolKeepsSmallRequestsWhole: a request with two candidates near
// their place is cheaper to match than to hand out.
func TestPoolKeepsSmallRequestsWhole(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("boot")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	refs := lineNeedles(t, ctx, bus, 2)
	runPool(t, ctx, match.Config{Name: "m1", Workers: 2}, srv.Bus("m1"))
	waitIdle(t, ctx, bus, 2)
	req := schemas.MatchRequested{ID: "small", ReplyTo: schemas.WorkerRef{Host: "h", Instance: 1},
		Screen: screen(t, "hello-output"), Needles: refs, Ratio: 0.02}
	if answers := ask(t, ctx, bus, req); len(answers) != 1 || answers[0].Part != nil || len(answers[0].Candidates) != 2 {
		t.Errorf("answers %+v, want one piece with both candidates", answers)
	}
}

// ask sends a request to the pool and returns its answer, or the answers
// to all its parts when it was split.
func ask(t *testing.T, ctx context.Context, bus *streams.Bus, req schemas.MatchRequested) []schemas.MatchResolved {
	t.Helper()
	from, err := bus.LastSequence(ctx, streams.StreamMatchResults)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Append(ctx, 1, req); err != nil {
		t.Fatal(err)
	}
	var answers []schemas.MatchResolved
	err = bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamMatchResults, Filters: []string{streams.MatchResolvedFor(req.ReplyTo)}, From: from + 1},
		func(_ schemas.Event, p schemas.Payload, _ streams.Delivery) error {
			r := *p.(*schemas.MatchResolved)
			answers = append(answers, r)
			if r.Part == nil || len(answers) == r.Part.Count {
				return streams.ErrStopWatch
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	return answers
}

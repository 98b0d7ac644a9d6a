package match_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/stages/match"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// testosNeedle publishes a needle of the testos demo to the blob store the
// way the boot stage does and returns its reference.
func testosNeedle(t testing.TB, ctx context.Context, bus *streams.Bus, name string) schemas.NeedleRef {
	t.Helper()
	dir := filepath.Join("..", "..", "deploy", "testos", "needles")
	js, err := os.ReadFile(filepath.Join(dir, name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	png, err := os.ReadFile(filepath.Join(dir, name+".png"))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(append(append([]byte{}, js...), png...))
	hash := hex.EncodeToString(h[:])
	jsonKey, pngKey := streams.NeedleBlobKeys(hash)
	for key, data := range map[string][]byte{jsonKey: js, pngKey: png} {
		if err := bus.PutBlob(ctx, streams.BucketNeedles, key, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}
	return schemas.NeedleRef{Name: name, Hash: hash}
}

func screen(t testing.TB, needle string) []byte {
	t.Helper()
	png, err := os.ReadFile(filepath.Join("..", "..", "deploy", "testos", "needles", needle+".png"))
	if err != nil {
		t.Fatal(err)
	}
	return png
}

// TestPoolAnswersThroughJetStream sends requests to the work queue as the
// boot stage does and reads the answers from the worker's subject.
func TestPoolAnswersThroughJetStream(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("boot")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	hello := testosNeedle(t, ctx, bus, "hello-output")
	shell := testosNeedle(t, ctx, bus, "testos-shell")

	poolCtx, stopPool := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- match.New(match.Config{Name: "m1", Workers: 2}, srv.Bus("match"), natstest.Logger(t)).Run(poolCtx)
	}()
	defer func() {
		stopPool()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	worker := schemas.WorkerRef{Host: "h", Instance: 1}
	requests := []schemas.MatchRequested{
		{ID: "hello-on-hello", Screen: screen(t, "hello-output"), Needles: []schemas.NeedleRef{shell, hello}, Ratio: 0.02},
		{ID: "hello-on-boot", Screen: screen(t, "testos-shell"), Needles: []schemas.NeedleRef{hello}, Ratio: 1},
		{ID: "missing-needle", Screen: screen(t, "testos-shell"), Needles: []schemas.NeedleRef{{Name: "ghost", Hash: strings.Repeat("0", 64)}}},
		{ID: "not-a-png", Screen: []byte("garbage"), Needles: []schemas.NeedleRef{hello}},
	}
	for _, r := range requests {
		r.ReplyTo = worker
		if _, err := bus.Append(ctx, 1, r); err != nil {
			t.Fatal(err)
		}
	}
	answers := map[string]schemas.MatchResolved{}
	err := bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamMatchResults, Filters: []string{streams.MatchResolvedFor(worker)}},
		func(_ schemas.Event, p schemas.Payload, _ streams.Delivery) error {
			r := p.(*schemas.MatchResolved)
			answers[r.ID] = *r
			if len(answers) == len(requests) {
				return streams.ErrStopWatch
			}
			return nil
		})
	if err != nil {
		t.Fatalf("answers %v: %v", answers, err)
	}

	if a := answers["hello-on-hello"]; !a.Matched || a.Best == nil || a.Best.Needle != "hello-output" || a.Matcher != "m1" || a.Error != "" {
		t.Errorf("hello-output on its own screen: %+v", a)
	} else {
		for _, area := range a.Best.Areas {
			if area.Similarity != 1 {
				t.Errorf("area %+v of an identical screen: similarity %v, want 1", area, area.Similarity)
			}
		}
	}
	if a := answers["hello-on-boot"]; a.Matched || a.Error != "" || a.Best == nil || a.Best.Needle != "hello-output" || a.Best.OK {
		t.Errorf("hello-output on the boot screen: %+v", a)
	}
	if a := answers["missing-needle"]; a.Matched || !strings.Contains(a.Error, "ghost") {
		t.Errorf("needle missing from the store: %+v", a)
	}
	if a := answers["not-a-png"]; a.Matched || !strings.Contains(a.Error, "screen") {
		t.Errorf("garbage screen: %+v", a)
	}
}

// countingBus counts the blob reads of a matcher pool.
type countingBus struct {
	*streams.Bus
	mu    sync.Mutex
	reads map[string]int
}

func (b *countingBus) GetBlob(ctx context.Context, bucket, key string) ([]byte, error) {
	b.mu.Lock()
	b.reads[key]++
	b.mu.Unlock()
	return b.Bus.GetBlob(ctx, bucket, key)
}

// TestNeedlesAreFetchedOncePerProcess: however many requests ask for a
// needle, at once or one after the other, a pool reads its JSON and PNG
// from the blob store once.
func TestNeedlesAreFetchedOncePerProcess(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("boot")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	refs := []schemas.NeedleRef{testosNeedle(t, ctx, bus, "hello-output"), testosNeedle(t, ctx, bus, "testos-shell")}
	counted := &countingBus{Bus: srv.Bus("m1"), reads: map[string]int{}}
	pool := match.New(match.Config{Name: "m1"}, counted, natstest.Logger(t))
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := schemas.MatchRequested{ID: fmt.Sprint(i), Screen: screen(t, "hello-output"), Needles: refs, Ratio: 0.02}
			if res := pool.Match(ctx, &req); !res.Matched || res.Error != "" {
				t.Errorf("request %d: %+v", i, res)
			}
		}()
	}
	wg.Wait()
	if len(counted.reads) != 4 {
		t.Errorf("blobs read: %v, want the JSON and PNG of 2 needles", counted.reads)
	}
	for key, n := range counted.reads {
		if n != 1 {
			t.Errorf("%s read %d times, want once", key, n)
		}
	}
}

// The prepared needles a pool keeps stay within NeedleCacheMiB: the least
// recently used are dropped and loaded again when asked for, and matching
// goes on giving the same answers.
func TestTheNeedleCacheIsBounded(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("boot")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	names := []string{"hello-output", "testos-shell"}
	refs := map[string]schemas.NeedleRef{}
	for _, name := range names {
		refs[name] = testosNeedle(t, ctx, bus, name)
	}
	counted := &countingBus{Bus: srv.Bus("m1"), reads: map[string]int{}}
	// Room for the larger of the two needles, not for both.
	pool := match.New(match.Config{Name: "m1", NeedleCacheBytes: 4 << 10}, counted, natstest.Logger(t))
	var largest int64
	for i := range 6 {
		name := names[i%2]
		req := schemas.MatchRequested{ID: fmt.Sprint(i), Screen: screen(t, name), Needles: []schemas.NeedleRef{refs[name]}, Ratio: 0.02}
		if res := pool.Match(ctx, &req); !res.Matched || res.Error != "" {
			t.Fatalf("request %d for %s: %+v", i, name, res)
		}
		n, bytes := pool.NeedleCache()
		largest = max(largest, bytes)
		if n != 1 {
			t.Fatalf("after request %d the pool keeps %d needles (%d bytes), want the last one only", i, n, bytes)
		}
	}
	if largest > 4<<10 {
		t.Errorf("the needle cache held %d bytes, over its 4 KiB", largest)
	}
	if reads := len(counted.reads); reads != 4 {
		t.Errorf("blobs read: %v", counted.reads)
	}
	for key, n := range counted.reads {
		if n != 3 {
			t.Errorf("%s read %d times, want 3: each needle dropped for the other and loaded again", key, n)
		}
	}
}

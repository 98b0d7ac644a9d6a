package streams

import (
	"context"
	"testing"
	"time"

	"jetqa/schemas"
)

// The aggregates a process keeps to append without reading are bounded:
// a job that ended is dropped, and no more than maxCachedJobs are kept.
// Appends to a dropped job still decide on its whole history.
func TestTheJobCacheIsBounded(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b := testBus(ctx, t)
	cached := func() int {
		b.jobs.mu.Lock()
		defer b.jobs.mu.Unlock()
		return len(b.jobs.jobs)
	}
	for id := int64(1); id <= 20; id++ {
		for _, p := range []schemas.Payload{schemas.JobCreated{}, schemas.JobFinished{Result: schemas.ResultPassed}} {
			if _, err := b.Append(ctx, id, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n := cached(); n != 0 {
		t.Errorf("%d aggregates of ended jobs kept", n)
	}
	if _, err := b.Append(ctx, 1, schemas.JobFinished{Result: schemas.ResultFailed}); err == nil {
		t.Error("a dropped job that had ended was ended again")
	}

	defer func(was int) { maxCachedJobs = was }(maxCachedJobs)
	maxCachedJobs = 5
	for id := int64(21); id <= 40; id++ {
		if _, err := b.Append(ctx, id, schemas.JobCreated{}); err != nil {
			t.Fatal(err)
		}
		if n := cached(); n > maxCachedJobs {
			t.Fatalf("%d aggregates kept, bound %d", n, maxCachedJobs)
		}
	}
	for id := int64(21); id <= 40; id++ {
		if _, err := b.Append(ctx, id, schemas.JobFinished{Result: schemas.ResultPassed}); err != nil {
			t.Fatalf("job %d, dropped or not: %v", id, err)
		}
	}
}

// testBus is a bus on an embedded server of its own, set up; both end
// with the test.
func testBus(ctx context.Context, t *testing.T) *Bus {
	t.Helper()
	ns, err := StartServer(ServerConfig{Port: -1, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	b, err := Connect(ctx, ns.ClientURL(), "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	return b
}

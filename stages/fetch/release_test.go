package fetch

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// A job's cache entries are held while it runs and given back to the
// cache's eviction when its end is published: the stage follows the end
// of the jobs it holds assets for, one subject each, not every job's.
func TestAJobsAssetsAreReleasedAtItsEnd(t *testing.T) {
	s := newStage(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	local := localFile(t, s, "disk.img", []byte("testos image"))
	bus := s.bus.(*streams.Bus)
	held := func(job int64) bool {
		s.heldMu.Lock()
		defer s.heldMu.Unlock()
		return s.held[job] != nil
	}
	for _, job := range []int64{1, 2} {
		if _, err := bus.Append(ctx, job, schemas.JobCreated{}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.fetchAsset(ctx, job, schemas.WorkerRef{Host: "h", Instance: 1}, "HDD_1", local, "", t.TempDir()); err != nil {
			t.Fatal(err)
		}
		if !held(job) {
			t.Fatalf("job %d holds no cache entry", job)
		}
	}
	if _, err := bus.Append(ctx, 1, schemas.JobFinished{Result: schemas.ResultPassed}); err != nil && !errors.Is(err, schemas.ErrTransition) {
		t.Fatal(err)
	}
	natstest.WaitUntil(t, ctx, func() error {
		if held(1) {
			return fmt.Errorf("job 1 ended and still holds its cache entries")
		}
		return nil
	})
	if !held(2) {
		t.Fatal("job 2, still running, let go of its cache entries")
	}
}

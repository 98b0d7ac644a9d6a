package streams_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams/natstest"
)

// TestConcurrentWritersNeverBothWin races writers in separate connections
// (as separate processes would be) to assign the same jobs to different
// workers: for each job exactly one append succeeds, the others are refused
// with ErrTransition after re-reading, and the stream holds one assignment.
func TestConcurrentWritersNeverBothWin(t *testing.T) {
	srv := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	setup := srv.Bus("setup")
	const jobs, writers = 20, 3
	for id := int64(1); id <= jobs; id++ {
		if _, err := setup.Append(ctx, id, schemas.JobCreated{}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	wins := map[int64]int{}
	var wg sync.WaitGroup
	for w := 1; w <= writers; w++ {
		bus := srv.Bus("writer")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := int64(1); id <= jobs; id++ {
				_, err := bus.Append(ctx, id, schemas.JobAssigned{Worker: schemas.WorkerRef{Host: "h", Instance: w}})
				switch {
				case err == nil:
					mu.Lock()
					wins[id]++
					mu.Unlock()
				case !errors.Is(err, schemas.ErrTransition):
					t.Errorf("writer %d, job %d: %v", w, id, err)
				}
			}
		}()
	}
	wg.Wait()
	for id := int64(1); id <= jobs; id++ {
		if wins[id] != 1 {
			t.Errorf("job %d: %d writers won", id, wins[id])
		}
		agg, err := setup.LoadJob(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if agg.State != schemas.StateAssigned || agg.Seq == 0 {
			t.Errorf("job %d: %+v", id, agg)
		}
	}
}

package streams_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"jetqa/schemas"
	"jetqa/streams"
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
	var buses []*streams.Bus
	for range writers {
		buses = append(buses, srv.Bus("writer"))
	}
	raceToAssign(ctx, t, setup, buses, jobs)
	for id := int64(1); id <= jobs; id++ {
		agg, err := setup.LoadJob(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if agg.State != schemas.StateAssigned || agg.Seq == 0 {
			t.Errorf("job %d: %+v", id, agg)
		}
	}
}

// TestConcurrentWritersOnAReplicatedStream repeats the race on a three-node
// cluster, where a failed expected-sequence check has another error code
// (10164) than on a single node (10071): it must be handled the same.
func TestConcurrentWritersOnAReplicatedStream(t *testing.T) {
	srv, urls := natstest.StartCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	setup := srv.Bus("setup")
	var buses []*streams.Bus
	for _, url := range urls {
		bus, err := streams.Connect(ctx, url, "writer", natstest.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		defer bus.Close()
		buses = append(buses, bus)
	}
	raceToAssign(ctx, t, setup, buses, 10)

	// On a replicated stream, competing checks of the same subjects in
	// flight at once are refused with 10164 (a stale sequence alone gives
	// 10071): fire a burst of them and see both codes are what we treat as
	// a conflict.
	agg, err := setup.LoadJob(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	futures := make([]jetstream.PubAckFuture, 0, 64)
	for range 64 {
		msg := nats.NewMsg("jetqa.job.1.created")
		msg.Data = []byte("{}")
		msg.Header.Set("Nats-Expected-Last-Subject-Sequence", strconv.FormatUint(agg.Seq, 10))
		msg.Header.Set("Nats-Expected-Last-Subject-Sequence-Subject", "jetqa.job.1.>")
		f, err := setup.JS.PublishMsgAsync(msg)
		if err != nil {
			t.Fatal(err)
		}
		futures = append(futures, f)
	}
	codes := map[jetstream.ErrorCode]int{}
	for _, f := range futures {
		select {
		case <-f.Ok():
			codes[0]++
		case err := <-f.Err():
			var apiErr *jetstream.APIError
			if !errors.As(err, &apiErr) {
				t.Fatalf("burst: %v", err)
			}
			codes[apiErr.ErrorCode]++
		case <-ctx.Done():
			t.Fatal("burst: no answer")
		}
	}
	t.Logf("burst answers by error code: %v", codes)
	for code := range codes {
		if code != 0 && code != jetstream.JSErrCodeStreamWrongLastSequence && code != jetstream.JSErrCodeStreamWrongLastSequenceConstant {
			t.Errorf("unexpected error code %d", code)
		}
	}
	if codes[0] != 1 {
		t.Errorf("%d of the burst stored, want exactly 1", codes[0])
	}
}

// raceToAssign creates jobs 1…jobs, then has each writer try to assign
// every job to its own worker instance at once. It fails the test on any
// error other than a refused transition, and checks that exactly one
// writer won each job.
func raceToAssign(ctx context.Context, t *testing.T, setup *streams.Bus, writers []*streams.Bus, jobs int64) {
	t.Helper()
	for id := int64(1); id <= jobs; id++ {
		if _, err := setup.Append(ctx, id, schemas.JobCreated{}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	wins := map[int64]int{}
	var wg sync.WaitGroup
	for w, bus := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for id := int64(1); id <= jobs; id++ {
				_, err := bus.Append(ctx, id, schemas.JobAssigned{Worker: schemas.WorkerRef{Host: "h", Instance: w + 1}})
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
	}
}

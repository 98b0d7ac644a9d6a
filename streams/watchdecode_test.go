package streams_test

import (
	"context"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// A watch with several decoders hands fn every event once, in stream
// order, live ones too; fn's ErrStopWatch ends it at once, mid-batch,
// and fn is never called after Watch returned.
func TestWatchWithDecodersKeepsStreamOrder(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("test")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const jobs = 700 // several batches
	for id := int64(1); id <= jobs; id++ {
		if _, err := bus.Append(ctx, id, schemas.JobCreated{Settings: map[string]string{"N": "x"}}); err != nil {
			t.Fatal(err)
		}
	}
	var seqs []uint64
	live := make(chan struct{})
	go func() {
		<-live
		if _, err := bus.Append(ctx, jobs+1, schemas.JobCreated{}); err != nil {
			t.Error(err)
		}
	}()
	err := bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.SubjectJobs}, Decoders: 4},
		func(ev schemas.Event, _ schemas.Payload, d streams.Delivery) error {
			if n := len(seqs); n > 0 && d.Sequence <= seqs[n-1] {
				t.Fatalf("sequence %d after %d", d.Sequence, seqs[n-1])
			}
			if ev.Job != int64(len(seqs)+1) {
				t.Fatalf("job %d at place %d", ev.Job, len(seqs)+1)
			}
			seqs = append(seqs, d.Sequence)
			if len(seqs) == jobs {
				close(live) // the next one comes while watching
			}
			if len(seqs) == jobs+1 {
				return streams.ErrStopWatch
			}
			return nil
		})
	if err != nil || len(seqs) != jobs+1 {
		t.Fatalf("watched %d events: %v", len(seqs), err)
	}

	calls, returned := 0, false
	err = bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.SubjectJobs}, Decoders: 3},
		func(schemas.Event, schemas.Payload, streams.Delivery) error {
			if returned {
				t.Error("fn called after Watch returned")
			}
			calls++
			if calls == 300 {
				return streams.ErrStopWatch
			}
			return nil
		})
	returned = true
	if err != nil || calls != 300 {
		t.Fatalf("stopped after %d calls: %v", calls, err)
	}
}

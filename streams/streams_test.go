package streams_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

func TestAppendAndWatchInOrder(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("test")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w := schemas.WorkerRef{Host: "host.example", Instance: 3}
	for _, p := range []schemas.Payload{
		schemas.JobCreated{Settings: map[string]string{"TEST": "t"}},
		schemas.JobAssigned{Worker: w},
		schemas.JobReady{Worker: w},
		schemas.JobFinished{Result: schemas.ResultPassed},
	} {
		if _, err := bus.Append(ctx, 42, p); err != nil {
			t.Fatal(err)
		}
	}
	var kinds, subjects []string
	err := bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.JobSubject(42) + ".>"}},
		func(ev schemas.Event, p schemas.Payload, d streams.Delivery) error {
			if ev.Job != 42 || ev.Source != "test" {
				t.Errorf("envelope %+v", ev)
			}
			kinds, subjects = append(kinds, ev.Kind), append(subjects, d.Subject)
			if _, done := p.(*schemas.JobFinished); done {
				return streams.ErrStopWatch
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"jetqa.job.42.created", "jetqa.job.42.assigned.host_example.3", "jetqa.job.42.ready.host_example.3", "jetqa.job.42.finished"}
	if len(subjects) != len(want) {
		t.Fatalf("subjects %v, want %v", subjects, want)
	}
	for i := range want {
		if subjects[i] != want[i] {
			t.Errorf("event %d (%s) on %s, want %s", i, kinds[i], subjects[i], want[i])
		}
	}
	settings, err := bus.JobSettings(ctx, 42)
	if err != nil || settings["TEST"] != "t" {
		t.Errorf("JobSettings = %v, %v", settings, err)
	}
	if _, err := bus.JobSettings(ctx, 43); err == nil {
		t.Error("JobSettings of a job that does not exist: no error")
	}
}

func TestNextJobIDNeverRepeats(t *testing.T) {
	srv := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var mu sync.Mutex
	seen := map[int64]bool{}
	var wg sync.WaitGroup
	for g := range 4 {
		bus := srv.Bus("ids")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				id, err := bus.NextJobID(ctx)
				if err != nil {
					t.Errorf("client %d: %v", g, err)
					return
				}
				mu.Lock()
				if seen[id] {
					t.Errorf("id %d handed out twice", id)
				}
				seen[id] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for id := int64(1); id <= 100; id++ {
		if !seen[id] {
			t.Errorf("id %d skipped", id)
		}
	}
}

// TestConsumeRetriesAndDeadLetters: a handler error is retried, ErrGiveUp
// and undecodable messages go to the dead-letter stream, and the consumer
// keeps going.
func TestConsumeRetriesAndDeadLetters(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("test")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := bus.JS.Publish(ctx, "jetqa.job.1.created", []byte("not an event")); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.JS.Publish(ctx, "jetqa.job.5.created", []byte(`{"kind":"job.exploded.v9","job":5,"data":{}}`)); err != nil {
		t.Fatal(err)
	}
	for job := int64(2); job <= 4; job++ {
		if _, err := bus.Append(ctx, job, schemas.JobCreated{}); err != nil {
			t.Fatal(err)
		}
	}
	type call struct {
		job        int64
		redelivery uint64
	}
	calls := make(chan call, 16)
	consumeCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- bus.Consume(consumeCtx, streams.ConsumerConfig{Stream: streams.StreamJobs, Durable: "test", Filters: []string{streams.JobEvents("created")}},
			func(_ context.Context, ev schemas.Event, _ schemas.Payload, d streams.Delivery) error {
				calls <- call{ev.Job, d.Redelivery}
				switch {
				case ev.Job == 2 && d.Redelivery == 0:
					return errors.New("transient")
				case ev.Job == 3:
					return errors.Join(streams.ErrGiveUp, errors.New("job 3 is hopeless"))
				}
				return nil
			})
	}()
	want := []call{{2, 0}, {2, 1}, {3, 0}, {4, 0}}
	got := map[call]bool{}
	for len(got) < len(want) {
		select {
		case c := <-calls:
			got[c] = true
		case <-ctx.Done():
			t.Fatalf("handler calls %v, want %v", got, want)
		}
	}
	for _, c := range want {
		if !got[c] {
			t.Errorf("no call %+v among %v", c, got)
		}
	}
	// A message being worked on is redelivered only after the ack wait
	// (30 s by default), not after the first retry step.
	cons, err := bus.JS.Consumer(ctx, streams.StreamJobs, "test")
	if err != nil {
		t.Fatal(err)
	}
	if info, err := cons.Info(ctx); err != nil || info.Config.AckWait != 30*time.Second || len(info.Config.BackOff) != 0 {
		t.Errorf("consumer ack wait %v, back-off %v (%v); want 30s and retries spaced by the handler's Nak", info.Config.AckWait, info.Config.BackOff, err)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	dead, err := bus.JS.OrderedConsumer(ctx, streams.StreamDead, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	for range 3 {
		msg, err := dead.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("dead letters: %v (have %v)", err, reasons)
		}
		reasons[msg.Headers().Get("Jetqa-Subject")] = msg.Headers().Get("Jetqa-Reason")
	}
	if reasons["jetqa.job.1.created"] == "" || reasons["jetqa.job.3.created"] == "" || !strings.Contains(reasons["jetqa.job.5.created"], "unknown event kind") {
		t.Errorf("dead letters: %v", reasons)
	}
}

// A consumer that acknowledges without waiting for the server's
// confirmation still acknowledges every message it handled: none stays
// pending, none comes back.
func TestUnconfirmedAcksAcknowledge(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("test")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for job := int64(1); job <= 5; job++ {
		if _, err := bus.Append(ctx, job, schemas.JobCreated{}); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	handled := map[int64]int{}
	consumeCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- bus.Consume(consumeCtx, streams.ConsumerConfig{Stream: streams.StreamJobs, Durable: "fast", Filters: []string{streams.JobEvents("created")}, AckWait: 2 * time.Second, AckUnconfirmed: true},
			func(_ context.Context, ev schemas.Event, _ schemas.Payload, _ streams.Delivery) error {
				mu.Lock()
				handled[ev.Job]++
				mu.Unlock()
				return nil
			})
	}()
	natstest.WaitUntil(t, ctx, func() error {
		cons, err := bus.JS.Consumer(ctx, streams.StreamJobs, "fast")
		if err != nil {
			return err
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.AckFloor.Stream < 5 || info.NumAckPending != 0 {
			return fmt.Errorf("ack floor %d, %d pending", info.AckFloor.Stream, info.NumAckPending)
		}
		return nil
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for job := int64(1); job <= 5; job++ {
		if handled[job] != 1 {
			t.Errorf("job %d handled %d times, want once", job, handled[job])
		}
	}
}

// TestOpenBlobAtResumesAtAnyOffset reads a blob of several chunks from
// offsets inside, at and around chunk edges.
func TestOpenBlobAtResumesAtAnyOffset(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("test")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	data := make([]byte, 1<<20+1234)
	for i := range data {
		data[i] = byte(i*7 + i/251)
	}
	if err := bus.PutBlob(ctx, streams.BucketAssets, "disk.img", bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	const chunk = 128 << 10
	for _, off := range []int64{0, 1, chunk - 1, chunk, chunk + 7, 5*chunk + 3, int64(len(data)) - 1, int64(len(data))} {
		r, size, err := bus.OpenBlobAt(ctx, streams.BucketAssets, "disk.img", off)
		if err != nil {
			t.Fatalf("offset %d: %v", off, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatalf("offset %d: %v", off, err)
		}
		if size != int64(len(data)) || !bytes.Equal(got, data[off:]) {
			t.Errorf("offset %d: %d bytes (size %d), want %d", off, len(got), size, len(data)-int(off))
		}
	}
}

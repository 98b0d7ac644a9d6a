package authority_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"jetqa/schemas"
	"jetqa/stages/authority"
	"jetqa/streams"
	"jetqa/streams/blobs"
	"jetqa/streams/natstest"
)

// setup starts a server with the authority running and one job assigned
// to h1:1 and ready to boot there; it returns the server's bus and the job.
func setup(t *testing.T) (*natstest.Server, *streams.Bus, int64) {
	t.Helper()
	s := natstest.Start(t)
	server := s.Bus("authority@server")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- authority.New(authority.Config{Workers: 2}, server, natstest.Logger(t)).Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	const job = 1
	if _, err := server.Append(ctx, job, schemas.JobCreated{Settings: map[string]string{"TEST": "t"}}); err != nil {
		t.Fatal(err)
	}
	h1 := schemas.WorkerRef{Host: "h1", Instance: 1}
	if _, err := server.Append(ctx, job, schemas.JobAssigned{Worker: h1}); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Append(ctx, job, schemas.JobReady{Worker: h1}); err != nil {
		t.Fatal(err)
	}
	return s, server, job
}

func worker(s *natstest.Server, name string, w schemas.WorkerRef) *streams.Bus {
	b := s.Bus(name)
	b.AsWorker(w)
	return b
}

func lastSeq(t *testing.T, b *streams.Bus) uint64 {
	t.Helper()
	seq, err := b.LastSequence(context.Background(), streams.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

func TestReportsOfTheAssigneeAreAppendedWithItsName(t *testing.T) {
	s, server, job := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h1 := schemas.WorkerRef{Host: "h1", Instance: 1}
	host := worker(s, "fetch@h1", schemas.WorkerRef{Host: "h1"})
	if _, err := host.Append(ctx, job, schemas.AssetFetched{Worker: h1, Setting: "ISO", SHA256: "x"}); err != nil {
		t.Fatalf("the host's own stage reporting for its instance: %v", err)
	}
	boot := worker(s, "boot@h1:1", h1)
	seq, err := boot.Append(ctx, job, schemas.JobStarted{Worker: h1, Accel: "tcg"})
	if err != nil {
		t.Fatal(err)
	}
	agg, err := server.LoadJob(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	if agg.Seq != seq || agg.State != schemas.StateRunning {
		t.Fatalf("job after the reports: seq %d state %s, want seq %d running", agg.Seq, agg.State, seq)
	}
	js, _ := server.JS.Stream(ctx, streams.StreamJobs)
	raw, err := js.GetMsg(ctx, seq)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := schemas.Unmarshal(raw.Data)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Source != "boot@h1:1" {
		t.Errorf("source %q, want the sender as its subject names it, boot@h1:1", ev.Source)
	}
}

func TestReportsAWorkerMayNotMakeAreRefusedAndChangeNothing(t *testing.T) {
	s, server, job := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h1, h2 := schemas.WorkerRef{Host: "h1", Instance: 1}, schemas.WorkerRef{Host: "h2", Instance: 1}
	before := lastSeq(t, server)
	cases := []struct {
		name    string
		from    schemas.WorkerRef
		payload schemas.Payload
		want    error
	}{
		{"another worker's job", h2, schemas.JobStarted{Worker: h2}, streams.ErrRefused},
		{"another instance of the same host", schemas.WorkerRef{Host: "h1", Instance: 2}, schemas.JobStarted{Worker: h1}, streams.ErrRefused},
		{"naming another worker", h1, schemas.JobStarted{Worker: h2}, streams.ErrRefused},
		{"a verdict for another's job", h2, schemas.JobFinished{Result: schemas.ResultPassed}, streams.ErrRefused},
		{"creating a job", h1, schemas.JobCreated{Settings: map[string]string{}}, streams.ErrRefused},
		{"assigning a job", h1, schemas.JobAssigned{Worker: h1}, streams.ErrRefused},
		{"a module before the VM started", h1, schemas.ModuleStarted{Module: "boot"}, schemas.ErrTransition},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := worker(s, "boot@"+c.from.String(), c.from)
			_, err := b.Append(ctx, job, c.payload)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	if after := lastSeq(t, server); after != before {
		t.Fatalf("the job stream moved from %d to %d on refused reports", before, after)
	}
	// Each refusal is kept with its reason and sender.
	dead, err := server.JS.Stream(ctx, streams.StreamDead)
	if err != nil {
		t.Fatal(err)
	}
	info, err := dead.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != uint64(len(cases)) {
		t.Fatalf("%d dead letters, want one per refused report, %d", info.State.Msgs, len(cases))
	}
	first, err := dead.GetMsg(ctx, info.State.FirstSeq)
	if err != nil {
		t.Fatal(err)
	}
	if w, why := first.Header.Get("Jetqa-Worker"), first.Header.Get("Jetqa-Reason"); w != "h2:1" || why == "" {
		t.Fatalf("dead letter names worker %q with reason %q", w, why)
	}
}

func TestAReportSentTwiceIsStoredOnce(t *testing.T) {
	s, server, job := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h1 := schemas.WorkerRef{Host: "h1", Instance: 1}
	b := s.Bus("boot@h1:1")
	ev, err := schemas.NewEvent(job, "boot@h1:1", schemas.JobStarted{Worker: h1})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := ev.Marshal()
	msg := nats.NewMsg(streams.ReportSubject(h1))
	msg.Data = data
	msg.Header.Set(streams.HeaderKind, ev.Kind)
	msg.Header.Set("Jetqa-Report-Id", "same-report")
	var answers []string
	for range 2 {
		var resp *nats.Msg
		// The authority may not listen yet: nobody answers until it does.
		natstest.WaitUntil(t, ctx, func() (err error) {
			resp, err = b.NC.RequestMsgWithContext(ctx, msg)
			if err != nil && !errors.Is(err, nats.ErrNoResponders) {
				t.Fatal(err)
			}
			return err
		})
		answers = append(answers, string(resp.Data))
	}
	if answers[0] != answers[1] {
		t.Fatalf("a report sent again got another answer: %s, then %s", answers[0], answers[1])
	}
	agg, err := server.LoadJob(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	js, _ := server.JS.Stream(ctx, streams.StreamJobs)
	info, _ := js.Info(ctx, jetstream.WithSubjectFilter(streams.JobSubject(job)+".started"))
	if n := info.State.Subjects[streams.JobSubject(job)+".started"]; n != 1 || agg.State != schemas.StateRunning {
		t.Fatalf("%d started events (state %s), want 1", n, agg.State)
	}
}

func TestAWorkerGetsOnlyItsOwnConsumers(t *testing.T) {
	s, _, _ := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h2 := worker(s, "fetch@h2", schemas.WorkerRef{Host: "h2"})
	noop := func(context.Context, schemas.Event, schemas.Payload, streams.Delivery) error { return nil }
	err := h2.Consume(ctx, streams.ConsumerConfig{Stream: streams.StreamJobs, Durable: streams.FetchDurable("h1"), Filters: []string{streams.AssignedTo("h1")}}, noop)
	if !errors.Is(err, streams.ErrRefused) {
		t.Fatalf("h2 asking for h1's assignments: %v, want refused", err)
	}
	err = h2.Consume(ctx, streams.ConsumerConfig{Stream: streams.StreamJobs, Durable: streams.FetchDurable("h2"), Filters: []string{streams.SubjectJobs}}, noop)
	if !errors.Is(err, streams.ErrRefused) {
		t.Fatalf("h2 asking for its own durable over every job event: %v, want refused", err)
	}
	run, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- h2.Consume(run, streams.ConsumerConfig{Stream: streams.StreamJobs, Durable: streams.FetchDurable("h2"), Filters: []string{streams.AssignedTo("h2")}}, noop)
	}()
	natstest.WaitUntil(t, ctx, func() error {
		n, err := h2.Waiting(ctx, streams.StreamJobs, streams.FetchDurable("h2"))
		if err == nil && n == 0 {
			err = errors.New("h2 does not pull from its consumer yet")
		}
		return err
	})
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A job is done only when its results are stored: a verdict listing a
// file the results store does not hold, or holds under another name than
// its content's hash, is refused; once uploaded, the same verdict is taken.
func TestAVerdictNeedsItsFilesStored(t *testing.T) {
	s, _, job := setup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h1 := schemas.WorkerRef{Host: "h1", Instance: 1}
	boot := worker(s, "boot@h1:1", h1)
	for _, p := range []schemas.Payload{schemas.JobStarted{Worker: h1}, schemas.TestsFinished{Worker: h1, Result: schemas.ResultPassed}} {
		if _, err := boot.Append(ctx, job, p); err != nil {
			t.Fatal(err)
		}
	}
	log := []byte("testos login: root\n")
	sum := sha256.Sum256(log)
	hexSum := hex.EncodeToString(sum[:])
	upload := worker(s, "upload@h1", schemas.WorkerRef{Host: "h1"})
	finished := func(files map[string]string) error {
		_, err := upload.Append(ctx, job, schemas.JobFinished{Result: schemas.ResultPassed, Files: files})
		return err
	}
	if err := finished(map[string]string{"serial0.txt": blobs.ContentKey(hexSum)}); !errors.Is(err, streams.ErrRefused) || !strings.Contains(err.Error(), "serial0.txt") {
		t.Fatalf("a verdict before its file is stored: %v, want refused naming the file", err)
	}
	if err := finished(map[string]string{"serial0.txt": "jobs/1/serial0.txt"}); !errors.Is(err, streams.ErrRefused) {
		t.Fatalf("a verdict naming a file not by its content: %v, want refused", err)
	}
	key, err := upload.PutResult(ctx, hexSum, bytes.NewReader(log), int64(len(log)))
	if err != nil {
		t.Fatal(err)
	}
	if err := finished(map[string]string{"serial0.txt": key}); err != nil {
		t.Fatalf("a verdict with its file stored: %v", err)
	}
}

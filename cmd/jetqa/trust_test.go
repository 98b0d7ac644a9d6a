package main

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"jetqa/schemas"
	"jetqa/streams"
)

// connectWith connects to the test server with a credentials file and
// collects the errors NATS reports on the side, as permission violations.
func connectWith(t *testing.T, s *system, creds string) (*streams.Bus, chan error) {
	t.Helper()
	d := streams.Dial{URLs: s.nats}
	if creds != "" {
		id, err := streams.LoadIdentity(creds)
		if err != nil {
			t.Fatal(err)
		}
		d.Identity = &id
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	b, err := streams.ConnectTo(ctx, d, "trust-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	errs := make(chan error, 100)
	b.NC.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	})
	return b, errs
}

// violation waits for NATS to report a permission violation naming subject.
func violation(t *testing.T, errs chan error, subject string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case err := <-errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
				return
			}
			t.Logf("other error: %v", err)
		case <-deadline:
			t.Fatalf("no permission violation for %s", subject)
		}
	}
}

func TestWithoutCredentialsNothingConnects(t *testing.T) {
	s := startServerWithMatchers(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := streams.Connect(ctx, s.nats, "anonymous", nil)
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("connecting without credentials: %v, want an authorization violation", err)
	}
	if !strings.Contains(err.Error(), "--creds") {
		t.Errorf("the error does not say what to do: %v", err)
	}
	// A key the server never issued is refused the same way.
	stranger, err := streams.NewIdentity(streams.RoleWorker, "stranger")
	if err != nil {
		t.Fatal(err)
	}
	_, err = streams.ConnectTo(ctx, streams.Dial{URLs: s.nats, Identity: &stranger}, "stranger", nil)
	if !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("connecting with a key never issued: %v, want an authorization violation", err)
	}
}

func TestRevokedWorkerIsCutOffAtOnce(t *testing.T) {
	s := startServerWithMatchers(t, 0)
	var out, errOut strings.Builder
	creds := filepath.Join(t.TempDir(), "wa.creds")
	if err := dispatch([]string{"admin", "worker", "add", "--nats", s.nats, "--out", creds, "wa"}, &out, &errOut); err != nil {
		t.Fatalf("admin worker add: %v %s", err, errOut.String())
	}
	w, _ := connectWith(t, s, creds)
	closed := make(chan struct{})
	w.NC.SetClosedHandler(func(*nats.Conn) { close(closed) })
	out.Reset()
	if err := dispatch([]string{"admin", "worker", "list", "--nats", s.nats}, &out, &errOut); err != nil || !strings.Contains(out.String(), "wa ") {
		t.Fatalf("admin worker list: %v %q", err, out.String())
	}
	if err := dispatch([]string{"admin", "worker", "add", "--nats", s.nats, "--out", creds + "2", "wa"}, &out, &errOut); err == nil {
		t.Fatal("a second add of the same worker was accepted")
	}
	if err := dispatch([]string{"admin", "worker", "revoke", "--nats", s.nats, "wa"}, &out, &errOut); err != nil {
		t.Fatalf("admin worker revoke: %v %s", err, errOut.String())
	}
	// Its open connection is closed by the server: two refused reconnects
	// in a row and the client gives up.
	select {
	case <-closed:
	case <-time.After(30 * time.Second):
		t.Fatalf("the revoked worker's connection is still open: %v", w.NC.Status())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	id, _ := streams.LoadIdentity(creds)
	if _, err := streams.ConnectTo(ctx, streams.Dial{URLs: s.nats, Identity: &id}, "revoked", nil); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("connecting with revoked credentials: %v, want an authorization violation", err)
	}
}

func TestAWorkerMayActOnlyAsItself(t *testing.T) {
	s := startServerWithMatchers(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	wa, errs := connectWith(t, s, s.issue(t, streams.RoleWorker, "wa"))
	wa.AsWorker(schemas.WorkerRef{Host: "wa", Instance: 1})

	// A job assigned to wb:1.
	const job = 1
	wb := schemas.WorkerRef{Host: "wb", Instance: 1}
	for _, p := range []schemas.Payload{schemas.JobCreated{Settings: map[string]string{"TEST": "t"}}, schemas.JobAssigned{Worker: wb}, schemas.JobReady{Worker: wb}} {
		if _, err := s.bus.Append(ctx, job, p); err != nil {
			t.Fatal(err)
		}
	}
	before, err := s.bus.LoadJob(ctx, job)
	if err != nil {
		t.Fatal(err)
	}

	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 3*time.Second) }
	t.Run("report for another's job", func(t *testing.T) {
		_, err := wa.Append(ctx, job, schemas.JobStarted{Worker: wb})
		if !errors.Is(err, streams.ErrRefused) {
			t.Fatalf("got %v, want refused", err)
		}
	})
	t.Run("report as another worker", func(t *testing.T) {
		if err := wa.NC.Publish(streams.ReportSubject(wb), []byte("{}")); err != nil {
			t.Fatal(err)
		}
		violation(t, errs, streams.ReportSubject(wb))
	})
	t.Run("append to the job stream", func(t *testing.T) {
		c, cancel := short()
		defer cancel()
		ev, _ := schemas.NewEvent(job, "forger", schemas.JobFinished{Result: schemas.ResultPassed})
		data, _ := ev.Marshal()
		subj := streams.JobSubject(job) + ".finished"
		if _, err := wa.JS.Publish(c, subj, data); err == nil {
			t.Fatal("a worker appended to the job stream")
		}
		violation(t, errs, subj)
	})
	t.Run("publish another worker's events", func(t *testing.T) {
		subj := "jetqa.worker.wb.1.heartbeat"
		if err := wa.NC.Publish(subj, []byte("{}")); err != nil {
			t.Fatal(err)
		}
		violation(t, errs, subj)
	})
	t.Run("read another worker's answers", func(t *testing.T) {
		subj := streams.MatchResolvedFor(wb)
		if _, err := wa.NC.SubscribeSync(subj); err != nil {
			t.Fatal(err)
		}
		violation(t, errs, subj)
	})
	t.Run("take another worker's assignments", func(t *testing.T) {
		c, cancel := short()
		defer cancel()
		if _, err := wa.JS.Consumer(c, streams.StreamJobs, streams.FetchDurable("wb")); err == nil {
			t.Fatal("a worker reached another's consumer")
		}
		violation(t, errs, "$JS.API.CONSUMER.INFO."+streams.StreamJobs+"."+streams.FetchDurable("wb"))
	})
	t.Run("take over a consumer", func(t *testing.T) {
		c, cancel := short()
		defer cancel()
		cfg := jetstream.ConsumerConfig{Durable: streams.FetchDurable("wb"), FilterSubject: streams.SubjectJobs, AckPolicy: jetstream.AckExplicitPolicy}
		if _, err := wa.JS.CreateOrUpdateConsumer(c, streams.StreamJobs, cfg); err == nil {
			t.Fatal("a worker changed a consumer")
		}
		violation(t, errs, "$JS.API.CONSUMER.CREATE."+streams.StreamJobs)
	})
	t.Run("delete a stream", func(t *testing.T) {
		c, cancel := short()
		defer cancel()
		if err := wa.JS.DeleteStream(c, streams.StreamJobs); err == nil {
			t.Fatal("a worker deleted the job stream")
		}
		violation(t, errs, "$JS.API.STREAM.DELETE."+streams.StreamJobs)
	})
	t.Run("purge the results", func(t *testing.T) {
		c, cancel := short()
		defer cancel()
		results, err := wa.JS.Stream(c, "OBJ_"+streams.BucketResults)
		if err != nil {
			t.Fatal(err)
		}
		if err := results.Purge(c); err == nil {
			t.Fatal("a worker purged the results")
		}
		violation(t, errs, "$JS.API.STREAM.PURGE.OBJ_"+streams.BucketResults)
	})
	t.Run("delete a job event", func(t *testing.T) {
		c, cancel := short()
		defer cancel()
		jobs, err := wa.JS.Stream(c, streams.StreamJobs)
		if err != nil {
			t.Fatal(err)
		}
		if err := jobs.DeleteMsg(c, before.Seq); err == nil {
			t.Fatal("a worker deleted a job event")
		}
		violation(t, errs, "$JS.API.STREAM.MSG.DELETE."+streams.StreamJobs)
	})
	t.Run("issue credentials", func(t *testing.T) {
		c, cancel := short()
		defer cancel()
		kv, err := wa.JS.KeyValue(c, streams.BucketCredentials)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := kv.Put(c, "worker.wb", []byte(`{"role":"admin"}`)); err == nil {
			t.Fatal("a worker issued credentials")
		}
		violation(t, errs, "$KV."+streams.BucketCredentials)
	})

	after, err := s.bus.LoadJob(ctx, job)
	if err != nil {
		t.Fatal(err)
	}
	if after.Seq != before.Seq || after.State != before.State {
		t.Fatalf("the job moved from %s at %d to %s at %d", before.State, before.Seq, after.State, after.Seq)
	}
	if _, err := s.bus.JS.Stream(ctx, streams.StreamJobs); err != nil {
		t.Fatalf("the job stream: %v", err)
	}
}

// The API keys' stream holds their secrets: worker and matcher
// credentials can read neither it nor the nonces, and cannot load job
// templates.
func TestWorkersAndMatchersCannotReadAPIKeysOrLoadTemplates(t *testing.T) {
	s := startServerWithMatchers(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.bus.CreateAPIKey(ctx, "alice", time.Time{}, schemas.ScopeOperator); err != nil {
		t.Fatal(err)
	}
	for _, role := range []string{streams.RoleWorker, streams.RoleMatcher} {
		b, errs := connectWith(t, s, s.issue(t, role, "r"+role))
		short, stop := context.WithTimeout(ctx, 3*time.Second)
		if _, err := b.APIKeys(short); err == nil {
			t.Errorf("%s credentials read the API keys", role)
		}
		stop()
		violation(t, errs, "JETQA_APIKEYS")
		raw := nats.NewMsg("$JS.API.STREAM.MSG.GET." + streams.StreamAPIKeys)
		raw.Data = []byte(`{"seq":1}`)
		if _, err := b.NC.RequestMsg(raw, 2*time.Second); err == nil {
			t.Errorf("%s credentials got the first API key by sequence", role)
		}
		violation(t, errs, "$JS.API.STREAM.MSG.GET."+streams.StreamAPIKeys)
		short, stop = context.WithTimeout(ctx, 3*time.Second)
		if err := b.UseNonce(short, "K", "nonce-0000000000000001"); err == nil {
			t.Errorf("%s credentials wrote a nonce", role)
		}
		stop()
		// Nor may they replace the job templates products are scheduled with.
		short, stop = context.WithTimeout(ctx, 3*time.Second)
		if _, err := b.LoadTemplates(short, schemas.TemplatesLoaded{URL: "forged", Commit: "0", Files: map[string]string{"g.yaml": "products: {}\nscenarios: {}\n"}}); err == nil {
			t.Errorf("%s credentials loaded job templates", role)
		}
		stop()
		violation(t, errs, "jetqa.templates")
	}
	if _, err := s.bus.LatestTemplates(ctx); !errors.Is(err, streams.ErrNoTemplates) {
		t.Errorf("templates after the refused loads: %v", err)
	}
}

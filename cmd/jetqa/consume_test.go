package main

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// finishJobs runs jobs from through to through their lifecycle as a
// worker's reports would, ending with result.
func (s *system) finishJobs(t *testing.T, from, to int64, result string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := schemas.WorkerRef{Host: "h", Instance: 1}
	for id := from; id <= to; id++ {
		modules := []schemas.ModuleResult{{Name: "boot", Result: schemas.ResultPassed, Duration: time.Second}, {Name: "shell", Result: result, Reason: "shell: " + result}}
		for _, p := range []schemas.Payload{
			schemas.JobCreated{Settings: map[string]string{"DISTRI": "testos", "VERSION": "1", "ARCH": "x86_64", "TEST": "demo"}},
			schemas.JobAssigned{Worker: w}, schemas.JobReady{Worker: w}, schemas.JobStarted{Worker: w},
			schemas.TestsFinished{Worker: w, Result: result, Modules: modules},
			schemas.JobFinished{Result: result, Modules: modules, Files: map[string]string{"serial0.txt": "sha256/ab/ab"}},
		} {
			if _, err := s.bus.Append(ctx, id, p); err != nil {
				t.Fatalf("job %d: %v", id, err)
			}
		}
	}
}

// addConsumer makes result consumer name with `jetqa admin consumer add`
// and returns its credentials file.
func (s *system) addConsumer(t *testing.T, name string, args ...string) string {
	t.Helper()
	creds := filepath.Join(t.TempDir(), name+".creds")
	var out, errOut strings.Builder
	if err := dispatch(append([]string{"admin", "consumer", "add", name, "--nats", s.nats, "--out", creds}, args...), &out, &errOut); err != nil {
		t.Fatalf("admin consumer add: %v\n%s", err, errOut.String())
	}
	return creds
}

// A webhook consumer stopped while jobs finish delivers them all when it
// is started again: each exactly once, signed, after the receiver's
// failures.
func TestWebhookDeliversEveryFinishedJobOnce(t *testing.T) {
	s := startServerWithMatchers(t, 0)
	creds := s.addConsumer(t, "hooks")
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	got := map[int64]int{}
	calls := 0
	all := make(chan struct{})
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, []byte("s3cret"))
		mac.Write(body)
		if r.Header.Get("X-Jetqa-Signature") != "sha256="+hex.EncodeToString(mac.Sum(nil)) {
			t.Errorf("delivery %s: signature %q does not sign the body", r.Header.Get("X-Jetqa-Delivery"), r.Header.Get("X-Jetqa-Signature"))
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls%7 == 1 {
			// The receiver fails now and then: the job comes again.
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		var j finishedJob
		if err := json.Unmarshal(body, &j); err != nil || j.Result != schemas.ResultFailed || j.Settings["DISTRI"] != "testos" || len(j.Modules) != 2 {
			t.Errorf("delivered %s (%v)", body, err)
		}
		got[j.ID]++
		if len(got) == 50 {
			close(all)
		}
	}))
	defer receiver.Close()
	delivered := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	run := func() *exec.Cmd {
		return startJetqa(t, "consume", "consume", "webhook", receiver.URL, "--nats", s.nats, "--creds", creds, "--secret-file", secret)
	}

	consumer := run()
	s.finishJobs(t, 1, 20, schemas.ResultFailed)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	natstest.WaitUntil(t, ctx, func() error {
		if n := delivered(); n < 5 {
			return fmt.Errorf("%d jobs delivered", n)
		}
		return nil
	})
	// Stopped half way, then 30 more jobs finish while it is down.
	if err := consumer.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	_ = consumer.Wait()
	s.finishJobs(t, 21, 50, schemas.ResultFailed)
	stopped := delivered()
	t.Logf("%d jobs delivered before the stop", stopped)
	run()
	select {
	case <-all:
	case <-ctx.Done():
		t.Fatalf("%d of 50 jobs delivered", delivered())
	}
	// Nothing is left to come again: then every count is final.
	cons, err := s.bus.JS.Consumer(ctx, streams.StreamJobs, streams.ResultsDurable("hooks"))
	if err != nil {
		t.Fatal(err)
	}
	natstest.WaitUntil(t, ctx, func() error {
		info, err := cons.Info(ctx)
		if err == nil && (info.NumPending > 0 || info.NumAckPending > 0) {
			err = fmt.Errorf("%d jobs pending, %d in work", info.NumPending, info.NumAckPending)
		}
		return err
	})
	mu.Lock()
	defer mu.Unlock()
	for id := int64(1); id <= 50; id++ {
		if got[id] != 1 {
			t.Errorf("job %d delivered %d times", id, got[id])
		}
	}
}

// `jetqa consume junit` writes one JUnit file per finished job, the
// `--result` filter passes only the failed ones, and `jetqa watch` with
// its own consumer sees the same jobs.
func TestJUnitAndWatchConsumers(t *testing.T) {
	s := startServerWithMatchers(t, 0)
	junitCreds := s.addConsumer(t, "ci")
	watchCreds := s.addConsumer(t, "dash", "--from-start")
	s.finishJobs(t, 1, 2, schemas.ResultPassed)
	s.finishJobs(t, 3, 4, schemas.ResultFailed)

	dir := t.TempDir()
	startJetqa(t, "junit", "consume", "junit", dir, "--result", "failed", "--nats", s.nats, "--creds", junitCreds)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// junit's durable was made before these jobs, without --from-start:
	// it sees them all, since it started delivering at its creation.
	natstest.WaitUntil(t, ctx, func() error {
		_, err3 := os.Stat(filepath.Join(dir, "job-3.xml"))
		_, err4 := os.Stat(filepath.Join(dir, "job-4.xml"))
		return errors.Join(err3, err4)
	})
	for _, id := range []string{"1", "2"} {
		if _, err := os.Stat(filepath.Join(dir, "job-"+id+".xml")); !os.IsNotExist(err) {
			t.Errorf("job %s passed, yet --result failed wrote it: %v", id, err)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "job-3.xml"))
	if err != nil {
		t.Fatal(err)
	}
	var suites struct {
		Suites []struct {
			Name     string `xml:"name,attr"`
			Tests    int    `xml:"tests,attr"`
			Failures int    `xml:"failures,attr"`
			Cases    []struct {
				Name    string `xml:"name,attr"`
				Failure *struct {
					Message string `xml:"message,attr"`
				} `xml:"failure"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(data, &suites); err != nil {
		t.Fatalf("job-3.xml: %v\n%s", err, data)
	}
	if len(suites.Suites) != 1 || suites.Suites[0].Name != "testos-1-x86_64-demo" || suites.Suites[0].Tests != 2 || suites.Suites[0].Failures != 1 ||
		suites.Suites[0].Cases[1].Failure == nil || suites.Suites[0].Cases[1].Failure.Message != "shell: failed" {
		t.Errorf("job-3.xml:\n%s", data)
	}

	var out strings.Builder
	watch := exec.Command(os.Args[0], "watch", "--json", "--nats", s.nats, "--creds", watchCreds)
	watch.Env = append(os.Environ(), "JETQA_RUN_MAIN=1")
	stdout, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = watch.Process.Kill(); _ = watch.Wait() }()
	lines := bufio.NewScanner(stdout)
	for i := 0; i < 4 && lines.Scan(); i++ {
		var j finishedJob
		if err := json.Unmarshal(lines.Bytes(), &j); err != nil || j.ID != int64(i+1) {
			t.Fatalf("watch line %d: %s (%v)", i+1, lines.Text(), err)
		}
		out.WriteString(lines.Text() + "\n")
	}
	if strings.Count(out.String(), "\n") != 4 {
		t.Fatalf("watch printed:\n%s", out.String())
	}

	// A consumer's credentials read its own durable consumer, nothing more.
	ci, errs := connectWith(t, s, junitCreds)
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	defer cancelShort()
	if _, err := ci.JS.Consumer(short, streams.StreamJobs, streams.ResultsDurable("dash")); err == nil {
		t.Error("consumer ci read consumer dash")
	}
	violation(t, errs, "$JS.API.CONSUMER.INFO."+streams.StreamJobs+"."+streams.ResultsDurable("dash"))
	// A violation closes the connection: another one for the next.
	ci, errs = connectWith(t, s, junitCreds)
	short, cancelShort = context.WithTimeout(ctx, 3*time.Second)
	defer cancelShort()
	if _, err := ci.JS.Publish(short, streams.JobSubject(1)+".cancelled", []byte("{}")); err == nil {
		t.Error("consumer ci appended to the job stream")
	}
	violation(t, errs, streams.JobSubject(1)+".cancelled")
}

// `jetqa admin retention plan` asks the server's retention stage for a dry
// run; a server without a policy says how to set one.
func TestRetentionPlanFromTheCommandLine(t *testing.T) {
	s := startSystemWith(t, func(c *upConfig) { c.Retention = "video=14d,events=365d" })
	var out, errOut strings.Builder
	if err := dispatch([]string{"admin", "retention", "plan", "--nats", s.nats}, &out, &errOut); err != nil {
		t.Fatalf("retention plan: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "0 jobs touched, 0 blobs (0 bytes) deleted") {
		t.Errorf("plan of an empty server:\n%s", out.String())
	}

	plain := startServerWithMatchers(t, 0)
	out.Reset()
	err := dispatch([]string{"admin", "retention", "run", "--nats", plain.nats}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "--retention") {
		t.Errorf("retention run on a server without a policy: %v", err)
	}
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"jetqa/schemas"
	"jetqa/stages/api"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// startServer runs `jetqa server` in the test process with a short worker
// timeout.
func startServer(t *testing.T) *system { t.Helper(); return startServerWithMatchers(t, 1) }

// startServerWithMatchers is startServer with n matchers in the server
// process (0: none; matchers run as processes of their own).
func startServerWithMatchers(t *testing.T, matchers int) *system {
	t.Helper()
	return startServerWith(t, matchers, embedConfig{Host: "127.0.0.1", Port: -1}, nil)
}

// startServerWith is startServerWithMatchers with its NATS server as ec
// says (its data directory is made here), the test connecting with tls.
func startServerWith(t *testing.T, matchers int, ec embedConfig, tls *tls.Config) *system {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := natstest.Logger(t)
	a := newAssembly(ctx, log)
	data := t.TempDir()
	ec.DataDir = data
	if err := a.embed(ec); err != nil {
		t.Fatal(err)
	}
	apiAddr, err := a.addServer(serverConfig{Host: "server", Listen: "127.0.0.1:0", Matchers: matchers, WorkerTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.g.Run() }()
	s := &system{api: "http://" + apiAddr, nats: a.url, kinds: map[string]int{}, admin: adminDial(t, a.url, data)}
	s.admin.TLS = tls
	if s.bus, err = streams.ConnectTo(ctx, s.admin, "lifecycle-test", log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.bus.Close()
		cancel()
		<-done
		a.teardown()
	})
	conf := filepath.Join(data, clientConf)
	t.Setenv("JETQA_CLIENT_CONF", conf)
	s.key = addAPIKey(t, s.bus, s.api, conf)
	return s
}

// startWorkerProcess runs `jetqa worker` as a child process, as a remote
// worker host would run it.
func startWorkerProcess(t *testing.T, s *system, host string) *exec.Cmd {
	t.Helper()
	creds := s.issue(t, streams.RoleWorker, host)
	return startJetqa(t, host, "worker", "--nats", s.nats, "--creds", creds, "--host", host, "--data", t.TempDir(), "--accel", "tcg", "--heartbeat", "500ms", "--asset-paths", testosPath())
}

// startJetqa runs jetqa with args as a child process, as a user would, its
// log in the test's prefixed with name; it is killed at the test's end.
func startJetqa(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "JETQA_RUN_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		lines := bufio.NewScanner(stderr)
		for lines.Scan() {
			t.Logf("[%s] %s", name, lines.Text())
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-logged
		_ = cmd.Wait()
	})
	return cmd
}

// waitFor follows a job's events until want says yes.
func (s *system) waitFor(t *testing.T, job int64, within time.Duration, what string, want func(schemas.Payload) bool) schemas.Payload {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var got schemas.Payload
	err := s.bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.JobSubject(job) + ".>"}},
		func(_ schemas.Event, p schemas.Payload, _ streams.Delivery) error {
			if want(p) {
				got = p
				return streams.ErrStopWatch
			}
			return nil
		})
	if err != nil || got == nil {
		t.Fatalf("job %d: %s within %s: %v", job, what, within, err)
	}
	return got
}

func isKind[T schemas.Payload](p schemas.Payload) bool {
	_, ok := p.(T)
	return ok
}

// processGone says whether pid has exited (or is a zombie nobody reaped).
func processGone(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	s := string(stat)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	return len(fields) > 0 && fields[0] == "Z"
}

func TestWorkerKilledMidJobEndsIncompleteAndOneClonePasses(t *testing.T) {
	testos := testosDir(t)
	s := startServer(t)
	wa := startWorkerProcess(t, s, "wa")
	id := s.post(t, demoSettings(testos))
	s.waitFor(t, id, 2*time.Minute, "a module started", isKind[*schemas.ModuleStarted])
	vms := childrenNamed(wa.Process.Pid, "qemu-system")
	if err := wa.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = wa.Wait()

	fin := s.waitFor(t, id, time.Minute, "finished", isKind[*schemas.JobFinished]).(*schemas.JobFinished)
	if fin.Result != schemas.ResultIncomplete || !strings.Contains(fin.Reason, "worker wa:1 went offline") {
		t.Fatalf("job %d: %s (%s), want incomplete because worker wa:1 went offline", id, fin.Result, fin.Reason)
	}
	for _, pid := range vms {
		if !processGone(pid) {
			t.Errorf("QEMU %d of the killed worker still runs", pid)
		}
	}
	clone := s.waitFor(t, id, time.Minute, "cloned", isKind[*schemas.JobRestarted]).(*schemas.JobRestarted).Clone

	startWorkerProcess(t, s, "wb")
	if fin := s.finish(t, clone, 5*time.Minute); fin.Result != schemas.ResultPassed {
		t.Fatalf("clone %d: %s (%s), want passed", clone, fin.Result, fin.Reason)
	}
	j := s.show(t, clone)
	if j.CloneOf != id || j.Worker != "wb:1" {
		t.Errorf("clone %d: origin %d, worker %s", clone, j.CloneOf, j.Worker)
	}
	var list struct{ Jobs []api.JobView }
	s.get(t, "/api/v1/jobs", &list)
	clones := 0
	for _, j := range list.Jobs {
		if j.CloneOf != 0 {
			clones++
		}
	}
	if clones != 1 || len(list.Jobs) != 2 {
		t.Errorf("%d jobs, %d clones; want 2 jobs, 1 clone: %+v", len(list.Jobs), clones, list.Jobs)
	}
}

func TestCancelStopsTheVMAndRestartClones(t *testing.T) {
	testos := testosDir(t)
	s := startSystem(t)

	// A job no worker can take waits, says why, and cancels at once.
	waiting := s.post(t, demoSettings(testos, "WORKER_CLASS=no_such_class"))
	if j := s.show(t, waiting); j.State != schemas.StateScheduled || !strings.Contains(j.Waiting, "no_such_class") {
		t.Errorf("job %d: state %s, waiting %q", waiting, j.State, j.Waiting)
	}
	s.postAction(t, waiting, "cancel", http.StatusOK)
	if j := s.show(t, waiting); j.State != schemas.StateCancelled || j.Result != schemas.ResultUserCancelled {
		t.Errorf("cancelled scheduled job %d: %s %s", waiting, j.State, j.Result)
	}

	id := s.post(t, demoSettings(testos))
	s.waitFor(t, id, 2*time.Minute, "a module started", isKind[*schemas.ModuleStarted])
	s.postAction(t, id, "restart", http.StatusConflict) // still running
	start := time.Now()
	s.postAction(t, id, "cancel", http.StatusOK)
	fin := s.finish(t, id, 30*time.Second)
	if fin.Result != schemas.ResultUserCancelled {
		t.Fatalf("job %d: %s (%s), want user_cancelled", id, fin.Result, fin.Reason)
	}
	t.Logf("cancel → finished in %s", time.Since(start))
	if vms := childrenNamed(os.Getpid(), "qemu-system"); len(vms) != 0 {
		t.Errorf("QEMU still running after cancel: %v", vms)
	}
	s.postAction(t, id, "cancel", http.StatusConflict) // already done

	var out struct{ ID int64 }
	s.postActionOut(t, id, "restart", http.StatusOK, &out)
	if fin := s.finish(t, out.ID, 5*time.Minute); fin.Result != schemas.ResultPassed {
		t.Fatalf("restarted job %d: %s (%s)", out.ID, fin.Result, fin.Reason)
	}
	if j := s.show(t, id); j.Clone != out.ID {
		t.Errorf("job %d does not name its clone %d: %d", id, out.ID, j.Clone)
	}
	s.postAction(t, id, "restart", http.StatusConflict) // restart the clone instead

	// The read model rebuilt from scratch equals the live one.
	var stdout, stderr bytes.Buffer
	if err := dispatch([]string{"admin", "rebuild", "--compare", "--nats", s.nats, "--api", s.api}, &stdout, &stderr); err != nil {
		t.Fatalf("admin rebuild: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "identical") {
		t.Errorf("admin rebuild: %s", stdout.String())
	}
	t.Log(strings.TrimSpace(stderr.String()))

	// The CLI's list filters.
	stdout.Reset()
	if err := dispatch([]string{"job", "list", "--api", s.api, "--state", "cancelled"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(stdout.String()), "\n"); len(lines) != 1 || !strings.Contains(lines[0], "user_cancelled") {
		t.Errorf("job list --state cancelled:\n%s", stdout.String())
	}
}

// TestWorkerThatComesBackStopsTheVMOfAJobGivenAway freezes a worker
// process (as a long network partition would) until the scheduler ends its
// job, then lets it go on: it must stop that VM and report nothing.
func TestWorkerThatComesBackStopsTheVMOfAJobGivenAway(t *testing.T) {
	testos := testosDir(t)
	s := startServer(t)
	wa := startWorkerProcess(t, s, "wa")
	id := s.post(t, demoSettings(testos))
	s.waitFor(t, id, 2*time.Minute, "a module started", isKind[*schemas.ModuleStarted])
	vms := childrenNamed(wa.Process.Pid, "qemu-system")
	if len(vms) != 1 {
		t.Fatalf("worker runs %d VMs, want 1", len(vms))
	}
	if err := wa.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	fin := s.waitFor(t, id, time.Minute, "finished", isKind[*schemas.JobFinished]).(*schemas.JobFinished)
	if fin.Result != schemas.ResultIncomplete {
		t.Fatalf("job %d: %s (%s)", id, fin.Result, fin.Reason)
	}
	resumed := time.Now()
	if err := wa.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	// Once it has stopped the VM the worker's heartbeats stop naming the job
	// (it may name the clone, which it is free to run).
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := s.bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamWorkers, Filters: []string{"jetqa.worker.wa.1.heartbeat"}, Since: resumed},
		func(_ schemas.Event, p schemas.Payload, _ streams.Delivery) error {
			if hb := p.(*schemas.WorkerHeartbeat); hb.Job != id {
				return streams.ErrStopWatch
			}
			return nil
		})
	if err != nil {
		t.Fatalf("the worker did not let go of job %d: %v", id, err)
	}
	if !processGone(vms[0]) {
		t.Errorf("QEMU %d of the job given away still runs", vms[0])
	}
	var kinds []string
	s.waitFor(t, id, time.Minute, "all events read", func(p schemas.Payload) bool {
		kinds = append(kinds, p.Kind())
		return isKind[*schemas.JobRestarted](p)
	})
	for _, k := range kinds {
		if k == (schemas.TestsFinished{}).Kind() {
			t.Errorf("the worker reported results of a job given away: %v", kinds)
		}
	}
}

func TestMaxJobTimeEndsTheJob(t *testing.T) {
	testos := testosDir(t)
	s := startSystem(t)
	start := time.Now()
	id := s.post(t, demoSettings(testos, "MAX_JOB_TIME=4"))
	fin := s.finish(t, id, time.Minute)
	if fin.Result != schemas.ResultTimeoutExceeded || !strings.Contains(fin.Reason, "MAX_JOB_TIME") {
		t.Fatalf("job %d: %s (%s), want timeout_exceeded naming MAX_JOB_TIME", id, fin.Result, fin.Reason)
	}
	t.Logf("MAX_JOB_TIME=4 ended the job after %s", time.Since(start).Round(100*time.Millisecond))
	if vms := childrenNamed(os.Getpid(), "qemu-system"); len(vms) != 0 {
		t.Errorf("QEMU still running: %v", vms)
	}
}

// TestJobPassesWithMatchersOfTheirOwn runs the server without matchers,
// two `jetqa matcher` processes and a worker process. In this variant of
// the demo the shell prompt needle has the workaround property, and 30
// decoys (the prompt in negative) share its tag, so that its checks are
// split between the matchers. The job soft-fails as in os-autoinst,
// naming the workaround; its screens were matched by the matcher
// processes, and some in parts.
func TestJobPassesWithMatchersOfTheirOwn(t *testing.T) {
	testos := testosDir(t)
	tests := repoVariant(t, testos, func(dir string) {
		path := filepath.Join(dir, "needles", "testos-shell.json")
		js, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, path, strings.Replace(string(js), "{", `{"properties": [{"name": "workaround", "value": "bsc#1: the prompt is known to be wrong"}],`, 1))
		shell, err := os.Open(filepath.Join(dir, "needles", "testos-shell.png"))
		if err != nil {
			t.Fatal(err)
		}
		defer shell.Close()
		img, err := png.Decode(shell)
		if err != nil {
			t.Fatal(err)
		}
		negative := image.NewRGBA(img.Bounds())
		for y := range img.Bounds().Dy() {
			for x := range img.Bounds().Dx() {
				r, g, b, _ := img.At(x, y).RGBA()
				negative.Set(x, y, color.RGBA{255 - uint8(r>>8), 255 - uint8(g>>8), 255 - uint8(b>>8), 255})
			}
		}
		var buf bytes.Buffer
		if err := png.Encode(&buf, negative); err != nil {
			t.Fatal(err)
		}
		for i := range 30 {
			name := filepath.Join(dir, "needles", fmt.Sprintf("decoy-%02d", i))
			writeFile(t, name+".png", buf.String())
			writeFile(t, name+".json", fmt.Sprintf(`{"tags": ["testos-shell"], "area": [{"xpos": %d, "ypos": 0, "width": 120, "height": 16, "type": "match"}]}`, i))
		}
	})
	s := startServerWithMatchers(t, 0)
	stop := startMatcherProcesses(t, s.nats, 2, "--creds", s.issue(t, streams.RoleMatcher, "pool"))
	defer stop()
	startWorkerProcess(t, s, "wa")
	commits := make(chan string, 100)
	sub, err := s.bus.NC.Subscribe(streams.SubjectMatchRequests, func(m *nats.Msg) {
		_, p, err := schemas.DecodeAs(m.Header.Get(streams.HeaderKind), m.Data)
		if req, ok := p.(*schemas.MatchRequested); ok && err == nil && req.Part == nil {
			commits <- req.NeedlesCommit
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	id := s.post(t, demoSettings(testos, "CASEDIR="+tests))
	if fin := s.finish(t, id, 5*time.Minute); fin.Result != schemas.ResultSoftfailed {
		t.Fatalf("job %d: %s (%s), want softfailed", id, fin.Result, fin.Reason)
	}
	var soft []string
	for _, m := range s.show(t, id).Modules {
		for _, d := range m.Details {
			if d.Result == schemas.ResultSoftfailed {
				soft = append(soft, m.Name+": "+d.Text)
			}
		}
	}
	if len(soft) == 0 || !strings.Contains(soft[0], "testos-shell") || !strings.Contains(soft[0], "bsc#1: the prompt is known to be wrong") {
		t.Errorf("soft failures %q, want the workaround needle and its reason", soft)
	}
	// The needles of the demo are inside CASEDIR: requests name its commit.
	checkout := s.waitFor(t, id, time.Minute, "CASEDIR checked out", func(p schemas.Payload) bool {
		rc, ok := p.(*schemas.RepoCheckedOut)
		return ok && rc.Setting == "CASEDIR"
	}).(*schemas.RepoCheckedOut)
	if len(commits) == 0 {
		t.Error("no match request seen")
	}
	for len(commits) > 0 {
		if c := <-commits; c != checkout.Commit || c == "" {
			t.Fatalf("a match request names needles commit %q, the job checked out %q", c, checkout.Commit)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	last, err := s.bus.LastSequence(ctx, streams.StreamMatchResults)
	if err != nil {
		t.Fatal(err)
	}
	by, parts := map[string]int{}, 0
	err = s.bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamMatchResults}, func(_ schemas.Event, p schemas.Payload, d streams.Delivery) error {
		res := p.(*schemas.MatchResolved)
		by[res.Matcher]++
		if res.Part != nil {
			parts++
		}
		if d.Sequence >= last {
			return streams.ErrStopWatch
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name := range by {
		if name != "m1" && name != "m2" {
			t.Errorf("answers by %v, want only the matcher processes m1 and m2", by)
		}
	}
	if len(by) == 0 {
		t.Error("no answers")
	}
	if parts == 0 {
		t.Error("no check with 31 candidates was split")
	}
	t.Logf("answers by matcher: %v, %d of them to parts of split checks", by, parts)
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/nats-io/nats.go"

	"jetqa/internal/artifacts"
	"jetqa/schemas"
	"jetqa/stages/api"
	"jetqa/streams"
)

// testosPath is where testosDir looks, whether or not the image is there:
// test workers let jobs name its files by path (--asset-paths).
func testosPath() string {
	dir := os.Getenv("JETQA_TESTOS")
	if dir == "" {
		dir = filepath.Join("..", "..", "deploy", "testos", "out")
	}
	dir, _ = filepath.Abs(dir)
	return dir
}

// testosDir is the output of deploy/testos/build.sh and make-repo.sh
// (`make testos`): testos.iso, vmlinuz, initrd.img and testos-tests/.
func testosDir(t testing.TB) string {
	t.Helper()
	dir := testosPath()
	for _, f := range []string{"testos.iso", "vmlinuz", "initrd.img", "testos-tests/main.star"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatalf("the testos demo image is missing (%v): run `make testos` first", err)
		}
	}
	return dir
}

// system is one `jetqa up` in the test process, on a free port.
type system struct {
	api  string
	nats string
	bus  *streams.Bus
	// admin is how the test connects, as the operator would.
	admin streams.Dial
	// key signs the test's API writes.
	key apiCredential
	// data is the data directory of `jetqa up` (startSystem only).
	data string

	mu    sync.Mutex
	kinds map[string]int // every event kind published on jetqa.>
	// finished are the stream sequences of the jobs' final events, for
	// reads that must see them (GET …?seq=N).
	finished map[int64]uint64
}

func startSystem(t *testing.T) *system {
	t.Helper()
	return startSystemWith(t, func(*upConfig) {})
}

// startSystemWith is startSystem with the configuration changed first;
// the data directory is in s.data.
func startSystemWith(t *testing.T, change func(*upConfig)) *system {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.NewTextHandler(systemLog(t), &slog.HandlerOptions{Level: slog.LevelInfo}))
	data := t.TempDir()
	c := upConfig{
		DataDir: data, Listen: "127.0.0.1:0", NATSPort: -1, Host: "e2e", Instances: 1, Matchers: 2,
		Accel: "tcg", WorkerClass: "qemu_x86_64", WorkerTimeout: 5 * time.Second, Heartbeat: 500 * time.Millisecond,
		Cache: workerConfig{AssetPaths: testosPath()},
	}
	change(&c)
	a, apiAddr, err := upAssembly(ctx, c, log)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- a.g.Run() }()
	s := &system{api: "http://" + apiAddr, nats: a.url, kinds: map[string]int{}, admin: adminDial(t, a.url, data), data: data}
	s.key = localKey(t, data, s.api)
	s.bus, err = streams.ConnectTo(ctx, s.admin, "e2e-test", log)
	if err != nil {
		t.Fatal(err)
	}
	// Every hop is a JetStream message: a plain subscriber sees them all.
	sub, err := s.bus.NC.Subscribe("jetqa.>", func(m *nats.Msg) {
		if k := m.Header.Get(streams.HeaderKind); k != "" {
			s.mu.Lock()
			s.kinds[k]++
			s.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = sub.Unsubscribe()
		s.bus.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("jetqa up ended with: %v", err)
		}
		a.teardown()
	})
	return s
}

// adminDial connects to the server at url as its operator, with the
// credentials file the server wrote into its data directory.
func adminDial(t *testing.T, url, data string) streams.Dial {
	t.Helper()
	path := filepath.Join(data, adminCreds)
	admin, err := streams.LoadIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	// The client commands the test runs connect as the operator too.
	t.Setenv("JETQA_CREDS", path)
	return streams.Dial{URLs: url, Identity: &admin}
}

// issue writes credentials for a worker host or matcher pool and returns
// the file.
func (s *system) issue(t *testing.T, role, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), name+".creds")
	if err := issueCredentials(ctx, s.bus, s.admin, role, name, 4, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// systemLog is where the jetqa stages and processes a test starts log:
// system.log among the test's artifacts, so that the test's own messages
// stand out in its output. A failed test prints the log's last lines and
// where the rest is.
func systemLog(t *testing.T) io.Writer {
	t.Helper()
	systemLogs.Lock()
	defer systemLogs.Unlock()
	if f, ok := systemLogs.open[t]; ok {
		return f
	}
	dir, err := artifacts.Dir(t)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "system.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	systemLogs.open[t] = f
	t.Cleanup(func() {
		systemLogs.Lock()
		delete(systemLogs.open, t)
		systemLogs.Unlock()
		// A process the test started writes to the file, not through f.
		f.Close()
		if t.Failed() {
			data, _ := os.ReadFile(path)
			t.Logf("the end of %s:\n%s", path, tail(data, 8000))
		}
	})
	return f
}

var systemLogs = struct {
	sync.Mutex
	open map[*testing.T]*os.File
}{open: map[*testing.T]*os.File{}}

func (s *system) post(t *testing.T, settings map[string]string) int64 {
	t.Helper()
	form := url.Values{}
	for k, v := range settings {
		form.Set(k, v)
	}
	resp := s.signedPost(t, "/api/v1/jobs", form)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out struct{ ID int64 }
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &out) != nil || out.ID == 0 {
		t.Fatalf("post job: %s %s", resp.Status, body)
	}
	return out.ID
}

func (s *system) get(t *testing.T, path string, out any) {
	t.Helper()
	resp, err := http.Get(s.api + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", path, resp.Status, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

func (s *system) show(t *testing.T, id int64) api.JobView {
	t.Helper()
	var out struct{ Job api.JobView }
	s.get(t, fmt.Sprintf("/api/v1/jobs/%d", id), &out)
	return out.Job
}

func (s *system) postAction(t *testing.T, id int64, action string, wantStatus int) {
	t.Helper()
	s.postActionOut(t, id, action, wantStatus, nil)
}

func (s *system) postActionOut(t *testing.T, id int64, action string, wantStatus int, out any) {
	t.Helper()
	resp := s.signedPost(t, fmt.Sprintf("/api/v1/jobs/%d/%s", id, action), nil)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != wantStatus {
		t.Fatalf("%s job %d: %s %s, want status %d", action, id, resp.Status, body, wantStatus)
	}
	t.Logf("%s job %d: %s %s", action, id, resp.Status, strings.TrimSpace(string(body)))
	if out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatal(err)
		}
	}
}

// signedPost posts form to the API, signed with the key client.conf has
// for it (JETQA_CLIENT_CONF), as the client commands sign.
func (s *system) signedPost(t *testing.T, path string, form url.Values) *http.Response {
	t.Helper()
	if s.key.key == "" {
		t.Fatalf("the test has no API key for %s", s.api)
	}
	return s.key.post(t, s.api+path, "application/x-www-form-urlencoded", []byte(form.Encode()))
}

// post sends body to url, signed with the key; the body of the answer is
// closed at the end of the test.
func (c apiCredential) post(t testing.TB, url, contentType string, body []byte) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	api.Sign(req, c.key, c.secret, body)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// addAPIKey creates an API key on the server bus talks to, puts it in
// conf under apiURL's host for the client commands the test runs, and
// returns once the API takes it.
func addAPIKey(t *testing.T, bus *streams.Bus, apiURL, conf string) apiCredential {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k, err := bus.CreateAPIKey(ctx, "tester", time.Time{}, schemas.ScopeOperator)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(apiURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := appendClientConf(conf, u.Host, k.Key, k.Secret, "a key of the test"); err != nil {
		t.Fatal(err)
	}
	cred := apiCredential{key: k.Key, secret: k.Secret, file: conf}
	// The API follows the keys' stream: wait until a signed request is no
	// longer refused (cancelling no job is a 404 then).
	s := &system{api: apiURL, key: cred}
	for {
		resp := s.signedPost(t, "/api/v1/jobs/999999999/cancel", nil)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusServiceUnavailable {
			return cred
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the API at %s does not take the new key: %s", apiURL, resp.Status)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// localKey is the API key `jetqa up` wrote into its data directory.
func localKey(t *testing.T, data, apiURL string) apiCredential {
	t.Helper()
	t.Setenv("JETQA_CLIENT_CONF", filepath.Join(data, clientConf))
	cred, err := credentialFor(apiURL)
	if err != nil {
		t.Fatalf("jetqa up wrote no API key for %s into %s: %v", apiURL, data, err)
	}
	return cred
}

// finish waits for the job's last event.
func (s *system) finish(t *testing.T, id int64, within time.Duration) schemas.JobFinished {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	var fin schemas.JobFinished
	err := s.bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.JobSubject(id) + ".finished"}},
		func(_ schemas.Event, p schemas.Payload, d streams.Delivery) error {
			fin = *p.(*schemas.JobFinished)
			s.mu.Lock()
			if s.finished == nil {
				s.finished = map[int64]uint64{}
			}
			s.finished[id] = d.Sequence
			s.mu.Unlock()
			return streams.ErrStopWatch
		})
	if err != nil {
		t.Fatalf("job %d did not finish within %s: %v", id, within, err)
	}
	t.Logf("job %d: %s %s", id, fin.Result, fin.Reason)
	return fin
}

// finishedAt is the stream sequence of the job's final event, once finish
// saw it: reads with ?seq= see the job's results.
func (s *system) finishedAt(id int64) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.finished[id]
}

func demoSettings(testos string, extra ...string) map[string]string {
	s := map[string]string{
		"DISTRI": "testos", "VERSION": "1", "FLAVOR": "demo", "ARCH": "x86_64", "TEST": "demo",
		"QEMURAM": "512", "ISO": filepath.Join(testos, "testos.iso"), "CASEDIR": filepath.Join(testos, "testos-tests"),
	}
	for _, kv := range extra {
		k, v, _ := strings.Cut(kv, "=")
		s[k] = v
	}
	return s
}

func TestDemoJobPassesAndFailsOnPurpose(t *testing.T) {
	testos := testosDir(t)
	s := startSystem(t)

	id := s.post(t, demoSettings(testos))
	// `jetqa job watch` follows the job live, over HTTP alone.
	type watched struct {
		out string
		err error
	}
	watching := make(chan watched, 1)
	go func() {
		var out, errOut strings.Builder
		err := dispatch([]string{"job", "watch", "--api", s.api, strconv.FormatInt(id, 10)}, &out, &errOut)
		watching <- watched{out.String(), err}
	}()
	fin := s.finish(t, id, 5*time.Minute)
	if fin.Result != schemas.ResultPassed {
		t.Fatalf("demo job %d: %s (%s), want passed", id, fin.Result, fin.Reason)
	}
	select {
	case w := <-watching:
		if w.err != nil || !strings.Contains(w.out, "job.started.v1") || !strings.Contains(w.out, "job.finished.v1") || !strings.Contains(w.out, "passed") {
			t.Errorf("job watch: %v\n%s", w.err, w.out)
		}
	case <-time.After(30 * time.Second):
		t.Error("job watch did not end with the job")
	}
	if _, ok := fin.Files["serial0.txt"]; !ok {
		t.Errorf("no serial log among the results: %v", fin.Files)
	}
	var shots int
	for name := range fin.Files {
		if strings.HasSuffix(name, ".png") {
			shots++
		}
	}
	if shots == 0 {
		t.Errorf("no screenshots among the results: %v", fin.Files)
	}
	// openQA's details: each module's steps, a matched screen with its
	// needle and screenshot, and the job's files as logs.
	var details struct {
		Job struct {
			TestResults []struct {
				Name, Result string
				Details      []struct {
					Num                        int
					Result, Screenshot, Needle string
					Tags                       []string
					Area                       []struct{ X, Y, W, H, Similarity int }
				}
			}
			Logs []string
		}
	}
	s.get(t, fmt.Sprintf("/api/v1/jobs/%d/details?seq=%d", id, s.finishedAt(id)), &details)
	matched := 0
	for _, m := range details.Job.TestResults {
		for _, st := range m.Details {
			if st.Needle != "" && st.Screenshot != "" && st.Result == "ok" {
				if _, ok := fin.Files[st.Screenshot]; !ok {
					t.Errorf("details step %d of %s shows %s, which is not among the job's files", st.Num, m.Name, st.Screenshot)
				}
				// Where the needle matched, for overlays, and what was asked.
				if len(st.Area) == 0 || st.Area[0].W == 0 || st.Area[0].Similarity < 90 || len(st.Tags) == 0 {
					t.Errorf("details step %d of %s: areas %+v, tags %q", st.Num, m.Name, st.Area, st.Tags)
				}
				// Its thumbnail, 45 pixels high as os-autoinst makes them.
				resp, err := http.Get(fmt.Sprintf("%s/tests/%d/images/thumb/%s", s.api, id, st.Screenshot))
				if err != nil {
					t.Fatal(err)
				}
				thumb, err := png.Decode(resp.Body)
				resp.Body.Close()
				if err != nil || thumb.Bounds().Dy() != 45 {
					t.Errorf("thumbnail of %s: %v %v", st.Screenshot, err, thumb)
				}
				matched++
			}
		}
	}
	if len(details.Job.TestResults) == 0 || matched == 0 || !slices.Contains(details.Job.Logs, "serial0.txt") {
		t.Errorf("details of job %d: %+v", id, details.Job)
	}

	// The second job takes its ISO from the server's asset store.
	var out, errOut strings.Builder
	if err := dispatch([]string{"asset", "add", "--nats", s.nats, "--name", "testos-demo.iso", filepath.Join(testos, "testos.iso")}, &out, &errOut); err != nil {
		t.Fatalf("asset add: %v %s", err, errOut.String())
	}
	t.Log(strings.TrimSpace(out.String()))
	// Bring it into the worker host's cache ahead of the job.
	for _, want := range []string{"downloaded", "already cached"} {
		out.Reset()
		if err := dispatch([]string{"asset", "fetch", "--nats", s.nats, "--host", "e2e", "testos-demo.iso"}, &out, &errOut); err != nil {
			t.Fatalf("asset fetch: %v %s", err, errOut.String())
		}
		if !strings.Contains(out.String(), want) {
			t.Errorf("asset fetch: %q, want %q", out.String(), want)
		}
	}
	out.Reset()
	if err := dispatch([]string{"asset", "fetch", "--nats", s.nats, "--host", "e2e", "no-such.iso"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "no-such.iso") {
		t.Errorf("asset fetch of an unknown asset: %v", err)
	}
	out.Reset()
	if err := dispatch([]string{"cache", "status", "--nats", s.nats}, &out, &errOut); err != nil {
		t.Fatalf("cache status: %v", err)
	}
	if st := out.String(); !strings.Contains(st, "e2e:") || !strings.Contains(st, "testos-demo.iso") || !strings.Contains(st, "hits") {
		t.Errorf("cache status:\n%s", st)
	}
	fid := s.post(t, demoSettings(testos, "TEST=demo-fail", "FAIL_ON_PURPOSE=1", "ISO=testos-demo.iso"))
	fin = s.finish(t, fid, 5*time.Minute)
	if fin.Result != schemas.ResultFailed {
		t.Fatalf("job %d: %s (%s), want failed", fid, fin.Result, fin.Reason)
	}
	if !strings.Contains(fin.Reason, "fail:") || !strings.Contains(fin.Reason, "graphical-desktop") {
		t.Errorf("reason %q names neither the module nor the needle tag", fin.Reason)
	}
	// Its details show the failed screen with the closest candidate.
	var failed struct {
		Job struct {
			TestResults []struct {
				Name    string
				Details []struct {
					Result, Screenshot, Needle string
					Needles                    []struct {
						Name string
						Area []struct{ W, H int }
					}
				}
			}
		}
	}
	s.get(t, fmt.Sprintf("/api/v1/jobs/%d/details?seq=%d", fid, s.finishedAt(fid)), &failed)
	candidates := 0
	for _, m := range failed.Job.TestResults {
		for _, st := range m.Details {
			if m.Name == "fail" && st.Result == "fail" && st.Screenshot != "" && st.Needle == "" &&
				len(st.Needles) > 0 && st.Needles[0].Name == "graphical-desktop" && len(st.Needles[0].Area) > 0 {
				candidates++
			}
		}
	}
	if candidates != 1 {
		t.Errorf("details of the failed job %d: %+v", fid, failed.Job.TestResults)
	}
	// Watched after its end, a failed job replays to its end; exit status 1.
	var out2, errOut2 strings.Builder
	if err := dispatch([]string{"job", "watch", "--api", s.api, strconv.FormatInt(fid, 10)}, &out2, &errOut2); err != exitCode(1) || !strings.Contains(out2.String(), "failed") {
		t.Errorf("job watch of the failed job: %v\n%s", err, out2.String())
	}
	if err := dispatch([]string{"job", "watch", "--api", s.api, "999999"}, &out2, &errOut2); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("job watch of no job: %v", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range []string{"job.created.v1", "job.assigned.v1", "asset.fetched.v1", "repo.checked_out.v1", "job.ready.v1",
		"job.started.v1", "module.finished.v1", "match.requested.v1", "match.resolved.v1", "job.tests_finished.v1", "job.finished.v1"} {
		if s.kinds[k] == 0 {
			t.Errorf("no %s event crossed JetStream (saw %v)", k, s.kinds)
		}
	}
}

// repoVariant copies the testos tests repository, applies change to the
// copy and commits it.
func repoVariant(t *testing.T, testos string, change func(dir string)) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tests")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(testos, "testos-tests"))); err != nil {
		t.Fatal(err)
	}
	change(dir)
	repo, err := git.PlainOpen(dir)
	if err != nil {
		t.Fatal(err)
	}
	commitAll(t, repo, "variant")
	return dir
}

// commitAll commits every file of the repository's work tree.
func commitAll(t testing.TB, repo *git.Repository, msg string) {
	t.Helper()
	wt, err := repo.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	if err := wt.AddGlob("."); err != nil {
		t.Fatal(err)
	}
	sig := &object.Signature{Name: "test", Email: "test@localhost", When: time.Now()}
	if _, err := wt.Commit(msg, &git.CommitOptions{Author: sig, AllowEmptyCommits: true}); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestBadInputEndsJobIncompleteWithReason(t *testing.T) {
	testos := testosDir(t)
	s := startSystem(t)
	brokenNeedle := repoVariant(t, testos, func(dir string) {
		writeFile(t, filepath.Join(dir, "needles", "broken.json"), `{"tags": ["x"], "area": [`)
		writeFile(t, filepath.Join(dir, "needles", "broken.png"), "")
	})
	syntaxError := repoVariant(t, testos, func(dir string) {
		writeFile(t, filepath.Join(dir, "tests", "shell.star"), "def run():\n    type_string(\"ls\n")
	})
	for _, tc := range []struct {
		name     string
		settings []string
		reason   []string
	}{
		{"missing asset", []string{"ISO=" + testosPath() + "/nonexistent.iso"}, []string{"ISO=" + testosPath() + "/nonexistent.iso", "does not exist"}},
		{"a host file", []string{"ISO=/etc/passwd"}, []string{"ISO=/etc/passwd", "only inside"}},
		{"git URL that does not exist", []string{"CASEDIR=http://127.0.0.1:1/nothing.git"}, []string{"CASEDIR", "nothing.git"}},
		{"needle JSON that does not parse", []string{"CASEDIR=" + brokenNeedle}, []string{"broken.json"}},
		{"Starlark syntax error", []string{"CASEDIR=" + syntaxError}, []string{"tests/shell.star:2"}},
		{"NEEDLES_DIR outside CASEDIR", []string{"NEEDLES_DIR=../../etc"}, []string{"NEEDLES_DIR=../../etc", "must stay inside CASEDIR"}},
		{"PRODUCTDIR missing", []string{"PRODUCTDIR=products/nothere"}, []string{"PRODUCTDIR=products/nothere", "CASEDIR has no directory"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id := s.post(t, demoSettings(testos, tc.settings...))
			fin := s.finish(t, id, 3*time.Minute)
			if fin.Result != schemas.ResultIncomplete {
				t.Fatalf("result %s (%s), want incomplete", fin.Result, fin.Reason)
			}
			for _, want := range tc.reason {
				if !strings.Contains(fin.Reason, want) {
					t.Errorf("reason %q does not name %q", fin.Reason, want)
				}
			}
		})
	}
	// openQA's layout: main.star in PRODUCTDIR, needles in a directory of
	// CASEDIR named by a relative NEEDLES_DIR.
	// The main.star and needles at CASEDIR's top would fail the job.
	products := repoVariant(t, testos, func(dir string) {
		product := filepath.Join(dir, "products", "testos")
		if err := os.CopyFS(filepath.Join(product, "my-needles"), os.DirFS(filepath.Join(dir, "needles"))); err != nil {
			t.Fatal(err)
		}
		main, err := os.ReadFile(filepath.Join(dir, "main.star"))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(product, "main.star"), string(main))
		writeFile(t, filepath.Join(dir, "main.star"), "fail('CASEDIR/main.star ran, not PRODUCTDIR/main.star')\n")
		writeFile(t, filepath.Join(dir, "needles", "broken.json"), `{"tags": [`)
	})
	t.Run("the next job passes, with PRODUCTDIR and a relative NEEDLES_DIR", func(t *testing.T) {
		id := s.post(t, demoSettings(testos, "CASEDIR="+products, "PRODUCTDIR=products/testos", "NEEDLES_DIR=products/testos/my-needles"))
		if fin := s.finish(t, id, 5*time.Minute); fin.Result != schemas.ResultPassed {
			t.Fatalf("job %d after the bad ones: %s (%s)", id, fin.Result, fin.Reason)
		}
	})
}

package api

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

type fixture struct {
	t    *testing.T
	base string
	bus  *streams.Bus
	srv  *Server
	key  schemas.APIKeyCreated // signs the writes
}

func start(t *testing.T) *fixture {
	t.Helper()
	srv := natstest.Start(t)
	key, err := srv.Bus("admin").CreateAPIKey(context.Background(), "tester", time.Time{}, schemas.ScopeOperator)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Listen: "127.0.0.1:0"}, srv.Bus("api"), natstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return &fixture{t: t, base: "http://" + s.Addr(), bus: srv.Bus("test"), srv: s, key: key}
}

func (f *fixture) do(method, path, contentType string, body io.Reader, out any) int {
	f.t.Helper()
	var data []byte
	if body != nil {
		var err error
		if data, err = io.ReadAll(body); err != nil {
			f.t.Fatal(err)
		}
	}
	req, err := http.NewRequest(method, f.base+path, bytes.NewReader(data))
	if err != nil {
		f.t.Fatal(err)
	}
	if method != http.MethodGet {
		Sign(req, f.key.Key, f.key.Secret, data)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ = io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			f.t.Fatalf("%s %s: %v in %s", method, path, err, data)
		}
	}
	return resp.StatusCode
}

func (f *fixture) job(id int64) (JobView, int) {
	var out struct{ Job JobView }
	code := f.do(http.MethodGet, "/api/v1/jobs/"+itoa(id), "", nil, &out)
	return out.Job, code
}

func itoa(i int64) string { return strings.TrimSpace(string(must(json.Marshal(i)))) }

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

func TestPostThenReadYourWrite(t *testing.T) {
	f := start(t)
	var created struct{ ID int64 }
	form := url.Values{"DISTRI": {"testos"}, "VERSION": {"1"}, "TEST": {"demo"}}
	if code := f.do(http.MethodPost, "/api/v1/jobs", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()), &created); code != 200 || created.ID != 1 {
		t.Fatalf("post: %d id %d", code, created.ID)
	}
	// The projection has the job the moment the post returns.
	j, code := f.job(1)
	if code != 200 || j.State != schemas.StateScheduled || j.Result != schemas.ResultNone || j.Name != "testos-1-demo" {
		t.Fatalf("job 1: %d %+v", code, j)
	}
	if code := f.do(http.MethodPost, "/api/v1/jobs", "application/json", bytes.NewReader([]byte(`{"TEST":"json","QEMURAM":512}`)), &created); code != 200 || created.ID != 2 {
		t.Fatalf("JSON post: %d id %d", code, created.ID)
	}
	if j, _ := f.job(2); j.Settings["QEMURAM"] != "512" {
		t.Errorf("JSON number setting came back as %q", j.Settings["QEMURAM"])
	}
}

func TestBadRequestsSayWhatIsWrong(t *testing.T) {
	f := start(t)
	var e struct{ Error string }
	for _, tc := range []struct {
		method, path, ct, body string
		code                   int
		want                   string
	}{
		{"POST", "/api/v1/jobs", "application/x-www-form-urlencoded", "", 400, "no job settings"},
		{"POST", "/api/v1/jobs", "application/json", `["x"]`, 400, "not a JSON object"},
		{"POST", "/api/v1/jobs", "application/json", `{"A":{"b":1}}`, 400, "job setting A"},
		{"GET", "/api/v1/jobs/abc", "", "", 400, `job id "abc"`},
		{"GET", "/api/v1/jobs/99", "", "", 404, "job 99 does not exist"},
	} {
		e.Error = ""
		code := f.do(tc.method, tc.path, tc.ct, strings.NewReader(tc.body), &e)
		if code != tc.code || !strings.Contains(e.Error, tc.want) {
			t.Errorf("%s %s %q: %d %q, want %d with %q", tc.method, tc.path, tc.body, code, e.Error, tc.code, tc.want)
		}
	}
}

// TestProjectionFollowsTheLifecycle appends a job's events the way the
// stages do and watches the read model follow, then serves a stored file.
func TestProjectionFollowsTheLifecycle(t *testing.T) {
	f := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w := schemas.WorkerRef{Host: "h", Instance: 1}
	if err := f.bus.PutBlob(ctx, streams.BucketResults, "screens/abc.png", strings.NewReader("PNG")); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		p     schemas.Payload
		state string
	}{
		{schemas.JobCreated{Settings: map[string]string{"TEST": "t"}}, schemas.StateScheduled},
		{schemas.JobAssigned{Worker: w}, schemas.StateAssigned},
		{schemas.RepoCheckedOut{Worker: w, Setting: "CASEDIR", Commit: "c0ffee"}, schemas.StateSetup},
		{schemas.JobStarted{Worker: w, Accel: "tcg"}, schemas.StateRunning},
		{schemas.ModuleStarted{Module: "boot"}, schemas.StateRunning},
		{schemas.ModuleFinished{ModuleResult: schemas.ModuleResult{Name: "boot", Result: schemas.ResultPassed}}, schemas.StateRunning},
		{schemas.JobFinished{Result: schemas.ResultPassed, Files: map[string]string{"boot-1.png": "screens/abc.png"}}, schemas.StateDone},
	}
	for _, s := range steps {
		seq, err := f.bus.Append(ctx, 7, s.p)
		if err != nil {
			t.Fatal(err)
		}
		f.srv.view.waitForJob(ctx, 7, seq)
		if j, _ := f.job(7); j.State != s.state {
			t.Fatalf("after %s (seq %d) state %q, want %q", s.p.Kind(), seq, j.State, s.state)
		}
	}
	j, _ := f.job(7)
	if j.Result != schemas.ResultPassed || j.Worker != "h:1" || j.Accel != "tcg" || len(j.Modules) != 1 || j.Modules[0].Result != schemas.ResultPassed || len(j.Repos) != 1 {
		t.Errorf("final view %+v", j)
	}
	resp, err := http.Get(f.base + "/api/v1/jobs/7/file/boot-1.png")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "PNG" || resp.Header.Get("Content-Type") != "image/png" {
		t.Errorf("file: %d %q %s", resp.StatusCode, body, resp.Header.Get("Content-Type"))
	}
	var list struct{ Jobs []JobView }
	f.do(http.MethodGet, "/api/v1/jobs?result=passed", "", nil, &list)
	if len(list.Jobs) != 1 || list.Jobs[0].ID != 7 {
		t.Errorf("list result=passed: %+v", list.Jobs)
	}
	f.do(http.MethodGet, "/api/v1/jobs?result=failed", "", nil, &list)
	if len(list.Jobs) != 0 {
		t.Errorf("list result=failed: %+v", list.Jobs)
	}
}

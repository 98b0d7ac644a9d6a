package main

import (
	"bytes"
	"context"
	"fmt"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// devModules: devmode passes only if a developer typed on the paused VM;
// devretry asserts a screen no needle has a tag for, so it passes only
// with a needle a developer makes while it is paused.
const (
	devTypedModule = `
def run():
    if not wait_serial("DEV-TYPED", timeout=20):
        fail("nobody typed on the paused VM")
`
	devRetryModule = `
def run():
    assert_screen("dev-fixed", timeout=5, no_wait=True)
`
)

// A worker in a network namespace that reaches only the NATS port is
// paused, sent keys and text, resumed, and retries a failed assert with a
// needle made from its live screen, all through `jetqa dev` and the
// worker's own connection; the job then passes. Only the job's owner or
// an admin may do so.
func TestDeveloperModeOverNATS(t *testing.T) {
	testos := testosDir(t)
	s := serverWithWorkerInNamespace(t, "dev-worker")
	repo := repoVariant(t, testos, func(dir string) {
		writeFile(t, filepath.Join(dir, "tests", "devmode.star"), devTypedModule)
		writeFile(t, filepath.Join(dir, "tests", "devretry.star"), devRetryModule)
		writeFile(t, filepath.Join(dir, "main.star"), "for m in ['boot', 'devmode', 'devretry']:\n    loadtest(m)\n")
	})
	id := s.post(t, demoSettings(testos, "CASEDIR="+repo))
	ID := strconv.FormatInt(id, 10)
	dev := func(args ...string) string {
		t.Helper()
		var out, errs bytes.Buffer
		if err := dispatch(append([]string{"dev", ID, args[0], "--api", s.api}, args[1:]...), &out, &errs); err != nil {
			t.Fatalf("jetqa dev %s %s: %v\n%s%s", ID, strings.Join(args, " "), err, out.String(), errs.String())
		}
		return out.String()
	}
	s.waitFor(t, id, 3*time.Minute, "started", isKind[*schemas.JobStarted])

	// Someone else's key may not touch the job.
	other := s.otherKey(t, "mallory", schemas.ScopeOperator)
	resp := other.post(t, s.api+"/api/v1/jobs/"+ID+"/developer", "application/json", []byte(`{"action": "pause"}`))
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("mallory paused tester's job: %s", resp.Status)
	}

	// An admin may; the owner's rules and the admin's add up.
	root := s.otherKey(t, "root", schemas.ScopeAdmin)
	if resp := root.post(t, s.api+"/api/v1/jobs/"+ID+"/developer", "application/json", []byte(`{"action": "pause", "module": "devmode"}`)); resp.StatusCode != http.StatusOK {
		t.Fatalf("an admin could not pause tester's job: %s", resp.Status)
	}
	dev("pause", "--on-mismatch", "assert_screen")
	s.waitFor(t, id, 3*time.Minute, "paused at devmode", func(p schemas.Payload) bool {
		e, ok := p.(*schemas.JobPaused)
		return ok && e.Module == "devmode" && e.At == schemas.PausedAtModule
	})
	if got := dev("status"); !strings.Contains(got, "module devmode: paused (module)") {
		t.Errorf("jetqa dev status: %q", got)
	}
	dev("type", "echo DEV-TYPED > /dev/ttyS0")
	dev("keys", "ret")
	dev("resume")

	// The failed assert pauses; a needle cut from the live screen fixes it.
	paused := s.waitFor(t, id, 3*time.Minute, "paused on the mismatch", func(p schemas.Payload) bool {
		e, ok := p.(*schemas.JobPaused)
		return ok && e.At == schemas.PausedOnMismatch
	}).(*schemas.JobPaused)
	if paused.Module != "devretry" || !strings.Contains(paused.Reason, `no needle in NEEDLES_DIR has tag(s) "dev-fixed"`) {
		t.Errorf("paused %+v", paused)
	}
	dir := t.TempDir()
	dev("screen", filepath.Join(dir, "dev-fixed.png"))
	shot, err := os.ReadFile(filepath.Join(dir, "dev-fixed.png"))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		t.Fatalf("the live screen is not a PNG: %v", err)
	}
	t.Logf("live screen %dx%d", img.Bounds().Dx(), img.Bounds().Dy())
	writeFile(t, filepath.Join(dir, "dev-fixed.json"), fmt.Sprintf(`{"tags": ["dev-fixed"], "area": [{"xpos": 0, "ypos": 0, "width": %d, "height": %d, "type": "match"}]}`,
		img.Bounds().Dx()/2, img.Bounds().Dy()/4))
	// A broken needle is refused, naming it, and changes nothing.
	writeFile(t, filepath.Join(dir, "broken.json"), `{"tags": ["dev-fixed"], "area": [{"xpos": 0, "ypos": 0, "width": 99999, "height": 5, "type": "match"}]}`)
	writeFile(t, filepath.Join(dir, "broken.png"), string(shot))
	var out, errs bytes.Buffer
	if err := dispatch([]string{"dev", ID, "retry", "--api", s.api, filepath.Join(dir, "broken.json")}, &out, &errs); err == nil || !strings.Contains(err.Error(), "broken.json") {
		t.Errorf("a retry with a broken needle: %v", err)
	}
	dev("retry", filepath.Join(dir, "dev-fixed.json"))

	fin := s.finish(t, id, 5*time.Minute)
	if fin.Result != schemas.ResultPassed {
		t.Fatalf("job %d: %s (%s)", id, fin.Result, fin.Reason)
	}
	var resumed []string
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.JobSubject(id) + ".resumed"}},
		func(_ schemas.Event, p schemas.Payload, d streams.Delivery) error {
			resumed = append(resumed, p.(*schemas.JobResumed).How+" by "+p.(*schemas.JobResumed).By)
			if d.Pending == 0 {
				return streams.ErrStopWatch
			}
			return nil
		}); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(resumed, ", "); got != "resume by tester, retry by tester" {
		t.Errorf("resumed: %s", got)
	}
}

// otherKey makes an API key for user, and returns once the API takes it.
func (s *system) otherKey(t *testing.T, user string, scope schemas.KeyScope) apiCredential {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k, err := s.bus.CreateAPIKey(ctx, user, time.Time{}, scope)
	if err != nil {
		t.Fatal(err)
	}
	cred := apiCredential{key: k.Key, secret: k.Secret}
	for {
		// No such job is a 404 once the key is known, a 403 before.
		resp := cred.post(t, s.api+"/api/v1/jobs/999999999/developer", "application/json", []byte(`{"action": "pause"}`))
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return cred
		}
		select {
		case <-ctx.Done():
			t.Fatalf("the API does not take %s's key: %s", user, resp.Status)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

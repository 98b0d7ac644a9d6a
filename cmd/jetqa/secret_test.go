package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// A string typed with type_string(secret=True) reaches the VM and
// nowhere else: not the job's events (a failure's reason included), not
// its results (details, the job's log, the serial log), not the worker's
// log.
func TestASecretIsTypedButNeverKept(t *testing.T) {
	testos := testosDir(t)
	s := startServer(t)
	worker := startProcess(t, "ws", "worker", "--nats", s.nats, "--creds", s.issue(t, streams.RoleWorker, "ws"), "--host", "ws",
		"--data", t.TempDir(), "--accel", "tcg", "--heartbeat", "500ms", "--asset-paths", testosPath())
	const secret = "S3cr3t-hunter2-XYZ"
	repo := repoVariant(t, testos, func(dir string) {
		writeFile(t, filepath.Join(dir, "tests", "secret.star"), fmt.Sprintf(
			"def run():\n    assert_screen('testos-shell')\n    type_string('echo %s > /dev/null\\n', secret=True)\n    type_string('echo typed > /dev/ttyS0\\n')\n    wait_serial('typed')\n", secret))
		// A secret no key types fails its job: the reason names the
		// character, never the secret.
		writeFile(t, filepath.Join(dir, "tests", "untypable.star"), fmt.Sprintf(
			"def run():\n    type_string('%s\u20ac', secret=True)\n", secret))
		writeFile(t, filepath.Join(dir, "main.star"), "for m in get_var('MODULES').split(','):\n    loadtest(m)\n")
	})
	id := s.post(t, demoSettings(testos, "CASEDIR="+repo, "MODULES=boot,secret"))
	if fin := s.finish(t, id, 5*time.Minute); fin.Result != schemas.ResultPassed {
		t.Fatalf("job %d: %s (%s)", id, fin.Result, fin.Reason)
	}
	failed := s.post(t, demoSettings(testos, "CASEDIR="+repo, "MODULES=boot,untypable"))
	if fin := s.finish(t, failed, 5*time.Minute); fin.Result != schemas.ResultFailed || strings.Contains(fin.Reason, secret) || !strings.Contains(fin.Reason, "€") {
		t.Errorf("job %d: %s (%s), want failed naming the character only", failed, fin.Result, fin.Reason)
	}
	worker.mu.Lock()
	for _, line := range worker.lines {
		if strings.Contains(line, secret) {
			t.Errorf("the worker's log holds the secret: %s", line)
		}
	}
	worker.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	last, err := s.bus.LastSequence(ctx, streams.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	events := 0
	err = s.bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.JobSubject(id) + ".>"}},
		func(ev schemas.Event, _ schemas.Payload, d streams.Delivery) error {
			events++
			if strings.Contains(string(ev.Data), secret) {
				t.Errorf("event %d (%s) holds the secret", d.Sequence, ev.Kind)
			}
			if d.Sequence >= last || d.Pending == 0 {
				return streams.ErrStopWatch
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	files := s.show(t, id).Files
	if len(files) == 0 {
		t.Fatal("the job has no result files")
	}
	for name := range files {
		if strings.HasPrefix(name, ".thumbs/") {
			continue // the screenshots' thumbnails, served as images
		}
		resp, err := http.Get(fmt.Sprintf("%s/tests/%d/file/%s", s.api, id, name))
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("result file %s: %s", name, resp.Status)
		}
		if strings.Contains(string(data), secret) {
			t.Errorf("result file %s holds the secret", name)
		}
	}
	t.Logf("the secret is in none of %d events and %d result files", events, len(files))
}

package main

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"

	"jetqa/schemas"
)

// A job failed on a needle that was wrong; the needle is fixed in a new
// commit. `jetqa replay ID --needles REPO#REF` matches the job's recorded
// screens again through the pool, without a VM, and says it would pass;
// with the old needles, that it would not.
func TestReplayWithFixedNeedles(t *testing.T) {
	testos := testosDir(t)
	s := startSystem(t)
	id := s.post(t, demoSettings(testos, "FAIL_ON_PURPOSE=1"))
	fin := s.finish(t, id, 5*time.Minute)
	if fin.Result != schemas.ResultFailed {
		t.Fatalf("job %d: %s (%s), want failed", id, fin.Result, fin.Reason)
	}
	// The fix, as a test author makes it: a new graphical-desktop needle
	// cut from the screen the failed assert saw.
	var shot string
	for _, m := range fin.Modules {
		for _, st := range m.Details {
			if st.Kind == "match" && st.Result == schemas.ResultFailed {
				shot = st.Screenshot
			}
		}
	}
	var png []byte
	if err := (client{api: s.api}).do(context.Background(), http.MethodGet, fmt.Sprintf("/api/v1/jobs/%d/file/%s?seq=%d", id, shot, s.finishedAt(id)), nil, &png); err != nil || len(png) == 0 {
		t.Fatalf("the failed assert's screenshot %q: %v", shot, err)
	}
	fixed := repoVariant(t, testos, func(dir string) {
		needles := filepath.Join(dir, "needles")
		writeFile(t, filepath.Join(needles, "graphical-desktop.json"),
			`{"tags": ["graphical-desktop"], "area": [{"xpos": 0, "ypos": 0, "width": 240, "height": 32, "type": "match"}]}`)
		writeFile(t, filepath.Join(needles, "graphical-desktop.png"), string(png))
	})

	replay := func(needles string) string {
		t.Helper()
		var out, errOut strings.Builder
		start := time.Now()
		if err := dispatch([]string{"replay", "--nats", s.nats, "--api", s.api, "--needles", needles, strconv.FormatInt(id, 10)}, &out, &errOut); err != nil {
			t.Fatalf("replay --needles %s: %v\n%s", needles, err, errOut.String())
		}
		t.Logf("replay --needles %s took %s:\n%s", needles, time.Since(start).Round(time.Millisecond), out.String())
		return out.String()
	}
	repo, err := git.PlainOpen(fixed)
	if err != nil {
		t.Fatal(err)
	}
	head, err := repo.Head()
	if err != nil {
		t.Fatal(err)
	}
	if out := replay(fixed + "#" + head.Hash().String()); !strings.Contains(out, "would pass") || !strings.Contains(out, "← changed") ||
		!strings.Contains(out, "graphical-desktop") {
		t.Errorf("with the fixed needle, replay says:\n%s", out)
	}
	if out := replay(filepath.Join(testos, "testos-tests")); !strings.Contains(out, "would not pass") || strings.Contains(out, "← changed") {
		t.Errorf("with the needles the job ran with, replay says:\n%s", out)
	}
}

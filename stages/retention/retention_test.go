package retention_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/stages/retention"
	"jetqa/streams"
	"jetqa/streams/blobs"
	"jetqa/streams/blobs/blobstest"
	"jetqa/streams/natstest"
)

func TestRulesParse(t *testing.T) {
	rules, err := retention.ParseRules("screenshots:failed=90d, screenshots=30d,logs=36h,events=365d")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		kind, result string
		want         time.Duration
		ok           bool
	}{
		{"screenshots", "failed", 90 * 24 * time.Hour, true},
		{"screenshots", "passed", 30 * 24 * time.Hour, true},
		{"logs", "incomplete", 36 * time.Hour, true},
		{"video", "failed", 0, false},
	} {
		r, ok := rules.For(c.kind, c.result)
		if ok != c.ok || r.Keep != c.want {
			t.Errorf("%s:%s kept %s (%v), want %s (%v)", c.kind, c.result, r.Keep, ok, c.want, c.ok)
		}
	}
	for bad, want := range map[string]string{
		"screens=30d":                   "kind",
		"screenshots:great=30d":         "not a job result",
		"screenshots=30 days":           "age",
		"logs":                          "KIND[:RESULT]=AGE",
		"logs=1d,logs=2d":               "twice",
		"screenshots:passed=-1d":        "age",
		"video:failed=1d,video=forever": "age",
	} {
		if _, err := retention.ParseRules(bad); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error about %s", bad, err, want)
		}
	}
	for name, kind := range map[string]string{"boot-1.png": "screenshots", "serial0.txt": "logs", "details.json": "logs", "video.webm": "video", "video-frames.tar": "video", "disk.qcow2": "other"} {
		if got := retention.FileKind(name); got != kind {
			t.Errorf("%s is %s, want %s", name, got, kind)
		}
	}
}

// A run removes what the rules say, blob by blob, and nothing else: a
// screenshot expired for one job stays while a kept job uses it; blobs no
// job lists go after the grace; a dry run changes nothing.
func TestRetentionRemovesWhatItsRulesSay(t *testing.T) {
	t.Run("object store", func(t *testing.T) { retain(t, nil) })
	t.Run("S3", func(t *testing.T) {
		store, _ := blobstest.StartS3Store(t, "results")
		retain(t, store)
	})
}

func retain(t *testing.T, store blobs.Store) {
	srv := natstest.Start(t)
	bus := srv.Bus("retention")
	if store != nil {
		bus.UseResults(store)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	blob := map[string]string{} // name in this test → key
	for _, name := range []string{"shared", "unique1", "log1", "unique2", "log2", "video3", "orphan"} {
		data := []byte("content of " + name)
		sum := sha256.Sum256(data)
		key, err := bus.PutResult(ctx, hex.EncodeToString(sum[:]), bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Fatal(err)
		}
		blob[name] = key
	}
	w := schemas.WorkerRef{Host: "h", Instance: 1}
	finish := func(id int64, result string, files map[string]string) {
		for _, p := range []schemas.Payload{
			schemas.JobCreated{Settings: map[string]string{"TEST": "t"}}, schemas.JobAssigned{Worker: w}, schemas.JobReady{Worker: w},
			schemas.JobStarted{Worker: w}, schemas.TestsFinished{Worker: w, Result: result},
			schemas.JobFinished{Result: result, Files: files},
		} {
			if _, err := bus.Append(ctx, id, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	finish(1, schemas.ResultPassed, map[string]string{"a.png": blob["shared"], "b.png": blob["unique1"], "serial0.txt": blob["log1"]})
	finish(2, schemas.ResultFailed, map[string]string{"a.png": blob["shared"], "c.png": blob["unique2"], "serial0.txt": blob["log2"]})
	finish(3, schemas.ResultPassed, map[string]string{"video.webm": blob["video3"]})
	finish(4, schemas.ResultPassed, map[string]string{"a.png": blob["shared"]})
	if _, err := bus.Append(ctx, 4, schemas.JobDeleted{By: "alice"}); err != nil {
		t.Fatal(err)
	}

	rules, err := retention.ParseRules("screenshots:passed=30d,screenshots=90d,logs=180d,video=14d,events=365d")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	now := start
	stage := retention.New(retention.Config{Rules: rules, Now: func() time.Time { return now }}, bus, natstest.Logger(t))
	stored := func() []string {
		var names []string
		for _, name := range slices.Sorted(maps.Keys(blob)) {
			if _, err := bus.Results().Stat(ctx, blob[name]); err == nil {
				names = append(names, name)
			} else if !errors.Is(err, blobs.ErrNotFound) {
				t.Fatal(err)
			}
		}
		return names
	}
	all := stored()
	run := func(after time.Duration, apply bool, wantExpired string, wantStored ...string) {
		t.Helper()
		now = start.Add(after)
		plan, err := stage.Once(ctx, apply)
		if err != nil {
			t.Fatal(err)
		}
		var expired []string
		for _, e := range plan.Expire {
			expired = append(expired, strings.TrimSpace(strings.Join(append([]string{"job", string(rune('0' + e.Job))}, e.Files...), " ")+" "+e.Rule))
		}
		if got := strings.Join(expired, "; "); got != wantExpired {
			t.Errorf("after %s, expired %q, want %q", after, got, wantExpired)
		}
		if got := stored(); !slices.Equal(got, wantStored) {
			t.Errorf("after %s (apply %v), stored %q, want %q\n%s", after, apply, got, wantStored, plan.Describe())
		}
	}
	// Today nothing has expired, and blobs no job lists are in their grace.
	run(0, true, "", all...)
	// 40 days on, planned only: nothing changes.
	run(40*24*time.Hour, false, "job 1 a.png b.png screenshots:passed=30d; job 3 video.webm video=14d", all...)
	// Applied: job 1's own screenshot, job 3's video and the orphan go; the
	// screenshot job 2 (failed, kept 90 days) shares with job 1 stays.
	run(40*24*time.Hour, true, "job 1 a.png b.png screenshots:passed=30d; job 3 video.webm video=14d",
		"log1", "log2", "shared", "unique2")
	agg, err := bus.LoadJob(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if agg.State != schemas.StateDone {
		t.Errorf("job 1 is %s after its files expired", agg.State)
	}
	// 100 days: job 2's screenshots too, the shared one with them.
	run(100*24*time.Hour, true, "job 2 a.png c.png screenshots=90d", "log1", "log2")
	// 400 days: the jobs themselves, with their logs…
	run(400*24*time.Hour, true, "job 1 events=365d; job 2 events=365d; job 3 events=365d")
	// …and their events an hour later.
	run(400*24*time.Hour+2*time.Hour, true, "job 1 events; job 2 events; job 3 events")
	for id := int64(1); id <= 3; id++ {
		if _, err := bus.LoadJob(ctx, id); !errors.Is(err, streams.ErrNoJob) {
			t.Errorf("job %d after its events expired: %v", id, err)
		}
	}
	if _, err := bus.LoadJob(ctx, 4); err != nil {
		t.Errorf("job 4, deleted by a user, keeps its events: %v", err)
	}
}

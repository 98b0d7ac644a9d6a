package api

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// A rebuild, which decodes module events late or never, makes the views
// folding every event in order makes: for jobs that finished, that run,
// paused and resumed, were cancelled, deleted or cloned.
func TestARebuildMakesTheViewsOfFoldingEveryEvent(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("rebuild")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := schemas.WorkerRef{Host: "h", Instance: 1}
	module := func(name, result string) []schemas.Payload {
		return []schemas.Payload{schemas.ModuleStarted{Module: name},
			schemas.ModuleFinished{ModuleResult: schemas.ModuleResult{Name: name, Result: result, Duration: time.Second}}}
	}
	started := []schemas.Payload{schemas.JobCreated{Settings: map[string]string{"TEST": "t"}}, schemas.JobAssigned{Worker: w},
		schemas.JobReady{Worker: w}, schemas.JobStarted{Worker: w, Accel: "tcg"}}
	both := []schemas.ModuleResult{{Name: "boot", Result: schemas.ResultPassed}, {Name: "shell", Result: schemas.ResultFailed}}
	lives := map[int64][][]schemas.Payload{
		1: {started, module("boot", "passed"), module("shell", "failed"),
			{schemas.TestsFinished{Worker: w, Result: schemas.ResultFailed, Modules: both}, schemas.JobFinished{Result: schemas.ResultFailed, Modules: both}}},
		2: {started, module("boot", "passed"), {schemas.ModuleStarted{Module: "shell"}}},
		3: {started, {schemas.ModuleStarted{Module: "a"}, schemas.JobPaused{Worker: w, Module: "a", At: schemas.PausedAtCommand}, schemas.JobResumed{Worker: w, How: schemas.DevResume}},
			{schemas.ModuleFinished{ModuleResult: schemas.ModuleResult{Name: "a", Result: schemas.ResultPassed}}, schemas.ModuleStarted{Module: "b"}}},
		4: {started, module("a", "passed"), {schemas.JobCancelRequested{By: "alice"}, schemas.JobFinished{Result: schemas.ResultUserCancelled}}},
		5: {started, module("a", "passed"), {schemas.TestsFinished{Worker: w, Result: schemas.ResultPassed, Modules: both[:1]},
			schemas.JobFinished{Result: schemas.ResultPassed}, schemas.JobDeleted{By: "alice"}}},
		6: {started, module("a", "passed"), {schemas.JobFinished{Result: schemas.ResultIncomplete, Reason: "worker h:1 went offline"}}},
		// Ready last, with what fold would read if it read job.ready.
		7: {{schemas.JobCreated{Settings: map[string]string{"TEST": "t"}}, schemas.JobAssigned{Worker: w},
			schemas.JobReady{Worker: w, Settings: map[string]string{"TEST": "t", "X": "y"}, Assets: map[string]string{"ISO": "/c/i.iso"},
				CaseDir: "/c", ProductDir: "/c/p", NeedlesDir: "/n", JobDir: "/j"}}},
		// Uploading at the end; finished without modules after tests_finished.
		8: {started, module("a", "passed"), {schemas.TestsFinished{Worker: w, Result: schemas.ResultPassed, Modules: both}}},
		9: {started, module("a", "passed"), {schemas.TestsFinished{Worker: w, Result: schemas.ResultFailed, Modules: both},
			schemas.JobFinished{Result: schemas.ResultFailed, Reason: "upload: a file did not store"}}},
	}
	const jobs = 9
	for job := int64(1); job <= jobs; job++ {
		if id, err := bus.NextJobID(ctx); err != nil || id != job {
			t.Fatalf("job id %d, %v, want %d", id, err, job)
		}
		for _, part := range lives[job] {
			for _, p := range part {
				if _, err := bus.Append(ctx, job, p); err != nil {
					t.Fatalf("job %d %s: %v", job, p.Kind(), err)
				}
			}
		}
	}
	if _, err := bus.Restart(ctx, mustLoad(t, bus, 6), "auto", 1); err != nil { // job 10
		t.Fatal(err)
	}
	rebuilt, _, err := Rebuild(ctx, bus)
	if err != nil {
		t.Fatal(err)
	}
	last, err := bus.LastSequence(ctx, streams.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	every := map[int64]*JobView{}
	err = bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.SubjectJobs}},
		func(ev schemas.Event, pl schemas.Payload, d streams.Delivery) error {
			fold(every, ev, pl)
			if j := every[ev.Job]; j != nil {
				j.Seq = d.Sequence
			}
			return stopAt(d, last)
		})
	if err != nil {
		t.Fatal(err)
	}
	if len(rebuilt) != len(every) || len(every) != jobs {
		t.Fatalf("rebuilt %d jobs, folding every event %d, want %d (job 5 deleted, clone 10 made)", len(rebuilt), len(every), jobs)
	}
	for _, got := range rebuilt {
		want := every[got.ID]
		if want == nil {
			t.Fatalf("rebuilt job %d, which folding every event does not have", got.ID)
		}
		got.Waiting = "" // told when listed, not folded
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(*want)
		if string(g) != string(w) {
			t.Errorf("job %d rebuilt as\n%s\nfolding every event makes\n%s", got.ID, g, w)
		}
	}
	if m := every[2].Modules; len(m) != 2 || m[1].Name != "shell" || m[1].Result != "running" {
		t.Errorf("the running job's modules: %+v", m)
	}
}

func mustLoad(t *testing.T, bus *streams.Bus, job int64) *schemas.JobAggregate {
	t.Helper()
	agg, err := bus.LoadJob(context.Background(), job)
	if err != nil {
		t.Fatal(err)
	}
	return agg
}

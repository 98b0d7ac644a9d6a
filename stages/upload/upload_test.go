package upload_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/stages/upload"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

func TestUploadStoresResultsAndFinishesTheJob(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("test")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stage, err := upload.New(upload.Config{Host: "h"}, srv.Bus("upload"), natstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- stage.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	results := t.TempDir()
	for name, content := range map[string]string{"boot-1.png": "same screen", "shell-1.png": "same screen", "serial0.txt": "testos:~# "} {
		if err := os.WriteFile(filepath.Join(results, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	w := schemas.WorkerRef{Host: "h", Instance: 1}
	for job := int64(1); job <= 2; job++ {
		for _, p := range []schemas.Payload{schemas.JobCreated{}, schemas.JobAssigned{Worker: w}, schemas.JobReady{Worker: w}, schemas.JobStarted{Worker: w}} {
			if _, err := bus.Append(ctx, job, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	modules := []schemas.ModuleResult{{Name: "boot", Result: schemas.ResultPassed}}
	if _, err := bus.Append(ctx, 1, schemas.TestsFinished{Worker: w, Result: schemas.ResultPassed, Modules: modules, ResultsDir: results}); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Append(ctx, 2, schemas.TestsFinished{Worker: w, Result: schemas.ResultPassed, ResultsDir: filepath.Join(results, "gone")}); err != nil {
		t.Fatal(err)
	}
	fins := map[int64]schemas.JobFinished{}
	err = bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.JobEvents("finished")}},
		func(ev schemas.Event, p schemas.Payload, _ streams.Delivery) error {
			fins[ev.Job] = *p.(*schemas.JobFinished)
			if len(fins) == 2 {
				return streams.ErrStopWatch
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}

	f := fins[1]
	if f.Result != schemas.ResultPassed || len(f.Modules) != 1 {
		t.Errorf("job 1 finished %+v", f)
	}
	if f.Files["boot-1.png"] != f.Files["shell-1.png"] || !strings.HasPrefix(f.Files["boot-1.png"], "screens/") {
		t.Errorf("identical screenshots not stored once by hash: %v", f.Files)
	}
	for name, key := range f.Files {
		data, err := bus.GetBlob(ctx, streams.BucketResults, key)
		if err != nil || len(data) == 0 {
			t.Errorf("%s at %s: %v", name, key, err)
		}
	}
	if _, ok := f.Files["details.json"]; !ok {
		t.Errorf("no details.json: %v", f.Files)
	}
	if f := fins[2]; f.Result != schemas.ResultIncomplete || !strings.Contains(f.Reason, "upload failed") {
		t.Errorf("job 2 with its results gone: %+v", f)
	}
}

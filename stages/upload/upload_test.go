package upload_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/stages/upload"
	"jetqa/streams"
	"jetqa/streams/blobs"
	"jetqa/streams/blobs/blobstest"
	"jetqa/streams/natstest"
)

func TestUploadStoresResultsAndFinishesTheJob(t *testing.T) {
	t.Run("object store", func(t *testing.T) { uploadAndFinish(t, nil) })
	t.Run("S3", func(t *testing.T) {
		store, _ := blobstest.StartS3Store(t, "results")
		uploadAndFinish(t, store)
	})
}

func uploadAndFinish(t *testing.T, store blobs.Store) {
	srv := natstest.Start(t)
	bus := srv.Bus("test")
	up := srv.Bus("upload")
	if store != nil {
		bus.UseResults(store)
		up.UseResults(store)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	jobs := t.TempDir()
	stage, err := upload.New(upload.Config{Host: "h", JobsDir: jobs}, up, natstest.Logger(t))
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

	results := filepath.Join(jobs, "1", "results")
	if err := os.MkdirAll(results, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"boot-1.png": "same screen", "shell-1.png": "same screen", "serial0.txt": "testos:~# "}
	for name, content := range files {
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
	if _, err := bus.Append(ctx, 2, schemas.TestsFinished{Worker: w, Result: schemas.ResultPassed, ResultsDir: filepath.Join(jobs, "2", "results")}); err != nil {
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
	if f.Files["boot-1.png"] != f.Files["shell-1.png"] || blobs.ContentSum(f.Files["boot-1.png"]) == "" {
		t.Errorf("identical screenshots not stored once by their content: %v", f.Files)
	}
	for name, key := range f.Files {
		r, _, err := bus.Results().Open(ctx, key, 0)
		if err != nil {
			t.Fatalf("%s at %s: %v", name, key, err)
		}
		data, err := io.ReadAll(r)
		r.Close()
		if err != nil || (files[name] != "" && string(data) != files[name]) || len(data) == 0 {
			t.Errorf("%s at %s holds %q (%v)", name, key, data, err)
		}
	}
	if _, ok := f.Files["details.json"]; !ok {
		t.Errorf("no details.json: %v", f.Files)
	}
	var stored []string
	if err := bus.Results().List(ctx, "", func(i blobs.Info) error { stored = append(stored, i.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(stored) != 3 {
		t.Errorf("stored %q for files %v, want 3 blobs: the screen once, the serial log, the details", stored, f.Files)
	}
	// Removed just after the verdict is recorded.
	natstest.WaitUntil(t, ctx, func() error {
		if _, err := os.Stat(filepath.Join(jobs, "1")); !os.IsNotExist(err) {
			return fmt.Errorf("job 1's directory is still there once its results are stored: %v", err)
		}
		return nil
	})
	if f := fins[2]; f.Result != schemas.ResultIncomplete || !strings.Contains(f.Reason, "upload failed") {
		t.Errorf("job 2 with its results gone: %+v", f)
	}
}

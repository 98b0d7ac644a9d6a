package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/blobs"
	"jetqa/streams/blobs/blobstest"
	"jetqa/streams/natstest"
)

// With --results s3://…, a job's results are in the bucket, and only
// there; the API serves them from it; the worker host keeps nothing of
// the job once its results are stored.
func TestResultsInS3(t *testing.T) {
	testos := testosDir(t)
	bucket, url := blobstest.StartS3Store(t, "jetqa-results")
	s := startSystemWith(t, func(c *upConfig) { c.Results = url })

	id := s.post(t, demoSettings(testos))
	fin := s.finish(t, id, 5*time.Minute)
	if fin.Result != schemas.ResultPassed {
		t.Fatalf("demo job %d: %s (%s), want passed", id, fin.Result, fin.Reason)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	embedded := blobs.NewObjectStore(s.bus.JS, streams.BucketResults)
	for _, name := range []string{"serial0.txt", "autoinst-log.txt", "details.json"} {
		key, ok := fin.Files[name]
		if !ok {
			t.Fatalf("no %s among the job's files %v", name, fin.Files)
		}
		info, err := bucket.Stat(ctx, key)
		if err != nil {
			t.Fatalf("%s (%s) is not in the bucket: %v", name, key, err)
		}
		if _, err := embedded.Stat(ctx, key); !errors.Is(err, blobs.ErrNotFound) {
			t.Errorf("%s is in the embedded object store too: %v", name, err)
		}
		resp, err := http.Get(fmt.Sprintf("%s/tests/%d/file/%s?seq=%d", s.api, id, name, s.finishedAt(id)))
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK || int64(len(body)) != info.Size {
			t.Fatalf("GET %s: %s, %d bytes (%v), want the bucket's %d", name, resp.Status, len(body), err, info.Size)
		}
	}
	screens := 0
	for name, key := range fin.Files {
		if filepath.Ext(name) == ".png" {
			screens++
			if _, err := bucket.Stat(ctx, key); err != nil {
				t.Errorf("screenshot %s: %v", name, err)
			}
		}
	}
	if screens == 0 {
		t.Errorf("no screenshots among %v", fin.Files)
	}
	// The upload stage removes it just after the verdict is recorded.
	natstest.WaitUntil(t, ctx, func() error {
		if _, err := os.Stat(filepath.Join(s.data, "jobs", strconv.FormatInt(id, 10))); !os.IsNotExist(err) {
			return fmt.Errorf("the job's directory is still on the worker host: %v", err)
		}
		return nil
	})
}

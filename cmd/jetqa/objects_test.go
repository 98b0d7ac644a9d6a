package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"jetqa/schemas"
	"jetqa/stages/upload"
	"jetqa/streams"
)

// A worker's credentials store blobs only through the server: it stages
// chunks, the server checks the name against the worker and stores them.
// It cannot delete an object, nor replace one it does not own.
func TestAWorkerStoresOnlyWhatItMay(t *testing.T) {
	s := startServerWithMatchers(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	wa, errs := connectWith(t, s, s.issue(t, streams.RoleWorker, "wa"))
	wa.AsWorker(schemas.WorkerRef{Host: "wa"})

	// Job 1 runs on wa, job 2 on wb.
	for job, host := range map[int64]string{1: "wa", 2: "wb"} {
		w := schemas.WorkerRef{Host: host, Instance: 1}
		for _, p := range []schemas.Payload{schemas.JobCreated{Settings: map[string]string{"TEST": "t"}}, schemas.JobAssigned{Worker: w}} {
			if _, err := s.bus.Append(ctx, job, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	results, err := s.bus.JS.ObjectStore(ctx, streams.BucketResults)
	if err != nil {
		t.Fatal(err)
	}
	needles, err := s.bus.JS.ObjectStore(ctx, streams.BucketNeedles)
	if err != nil {
		t.Fatal(err)
	}
	random := func(n int) []byte {
		b := make([]byte, n)
		_, _ = rand.Read(b)
		return b
	}
	hexSum := func(parts ...[]byte) string {
		h := sha256.New()
		for _, p := range parts {
			h.Write(p)
		}
		return hex.EncodeToString(h.Sum(nil))
	}
	readable := func(t *testing.T, store jetstream.ObjectStore, name string, want []byte) {
		t.Helper()
		got, err := store.GetBytes(ctx, name)
		if err != nil {
			t.Fatalf("read %s: %v", name, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("%s holds %d bytes, not the %d stored", name, len(got), len(want))
		}
	}
	short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 3*time.Second) }

	t.Run("its own job's files, readable by everyone", func(t *testing.T) {
		key := upload.JobKey(1, "video.ogv")
		first := random(300 * 1024) // three chunks
		if err := wa.PutBlob(ctx, streams.BucketResults, key, bytes.NewReader(first)); err != nil {
			t.Fatal(err)
		}
		readable(t, results, key, first)
		info, err := results.GetInfo(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		// Uploads retry: a job's file may be stored again, and the old
		// chunks go.
		second := random(1000)
		if err := wa.PutBlob(ctx, streams.BucketResults, key, bytes.NewReader(second)); err != nil {
			t.Fatal(err)
		}
		readable(t, results, key, second)
		stream, err := s.bus.JS.Stream(ctx, "OBJ_"+streams.BucketResults)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.GetLastMsgForSubject(ctx, "$O."+streams.BucketResults+".C."+info.NUID); !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Fatalf("the replaced chunks are still there: %v", err)
		}
		// An empty file is a file too.
		if err := wa.PutBlob(ctx, streams.BucketResults, upload.JobKey(1, "empty.txt"), bytes.NewReader(nil)); err != nil {
			t.Fatal(err)
		}
		readable(t, results, upload.JobKey(1, "empty.txt"), nil)
	})
	t.Run("another host's job's files", func(t *testing.T) {
		key := upload.JobKey(2, "autoinst-log.txt")
		if err := s.bus.PutBlob(ctx, streams.BucketResults, key, strings.NewReader("wb's log")); err != nil {
			t.Fatal(err)
		}
		err := wa.PutBlob(ctx, streams.BucketResults, key, strings.NewReader("forged"))
		if !errors.Is(err, streams.ErrRefused) {
			t.Fatalf("got %v, want refused", err)
		}
		readable(t, results, key, []byte("wb's log"))
		dead, err := s.bus.JS.Stream(ctx, streams.StreamDead)
		if err != nil {
			t.Fatal(err)
		}
		last, err := dead.GetLastMsgForSubject(ctx, "jetqa.dead.authority")
		if err != nil {
			t.Fatal(err)
		}
		if last.Header.Get("Jetqa-Worker") != "wa" || !strings.Contains(last.Header.Get("Jetqa-Reason"), key) {
			t.Fatalf("dead letter %v does not name the worker and the key", last.Header)
		}
	})
	t.Run("screens by their content", func(t *testing.T) {
		png := random(2000)
		key := upload.ScreenKey(hexSum(png))
		if err := wa.PutBlob(ctx, streams.BucketResults, key, bytes.NewReader(png)); err != nil {
			t.Fatal(err)
		}
		readable(t, results, key, png)
		// Stored under its name, it stays: other bytes are not taken.
		if err := wa.PutBlob(ctx, streams.BucketResults, key, bytes.NewReader(random(2000))); err != nil {
			t.Fatalf("storing an existing screen again: %v", err)
		}
		readable(t, results, key, png)
		// A new name must be the content's hash.
		err := wa.PutBlob(ctx, streams.BucketResults, upload.ScreenKey(hexSum([]byte("other"))), bytes.NewReader(png))
		if !errors.Is(err, streams.ErrRefused) {
			t.Fatalf("a screen under another's hash: %v, want refused", err)
		}
	})
	t.Run("needles once, whole", func(t *testing.T) {
		js, png := []byte(`{"area":[]}`), random(5000)
		hash := hexSum(js, png)
		jsonKey, pngKey := streams.NeedleBlobKeys(hash)
		if err := wa.PutBlob(ctx, streams.BucketNeedles, jsonKey, bytes.NewReader(js)); err != nil {
			t.Fatal(err)
		}
		// The other half must make the pair that hashes to the name.
		if err := wa.PutBlob(ctx, streams.BucketNeedles, pngKey, bytes.NewReader(random(5000))); !errors.Is(err, streams.ErrRefused) {
			t.Fatalf("a PNG that does not hash with the JSON to the needle's name: %v, want refused", err)
		}
		if err := wa.PutBlob(ctx, streams.BucketNeedles, pngKey, bytes.NewReader(png)); err != nil {
			t.Fatal(err)
		}
		readable(t, needles, jsonKey, js)
		readable(t, needles, pngKey, png)
		if err := wa.PutBlob(ctx, streams.BucketNeedles, pngKey, bytes.NewReader(random(5000))); err != nil {
			t.Fatalf("storing an existing needle again: %v", err)
		}
		readable(t, needles, pngKey, png)
	})
	t.Run("any other name", func(t *testing.T) {
		for _, c := range []struct{ bucket, key string }{
			{streams.BucketResults, "other/x"},
			{streams.BucketResults, "jobs/1/a/b"},
			{streams.BucketNeedles, "x.png"},
			{streams.BucketAssets, "disk.qcow2"},
		} {
			if err := wa.PutBlob(ctx, c.bucket, c.key, strings.NewReader("x")); !errors.Is(err, streams.ErrRefused) {
				t.Errorf("%s/%s: %v, want refused", c.bucket, c.key, err)
			}
		}
	})
	t.Run("a request sent again", func(t *testing.T) {
		data := []byte("a log line\n")
		const id = "retry1"
		if _, err := wa.JS.Publish(ctx, "jetqa.chunk.wa."+id, data); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		req, _ := json.Marshal(map[string]any{
			"bucket": streams.BucketResults, "name": upload.JobKey(1, "retry.txt"), "nuid": id,
			"size": len(data), "chunks": 1, "digest": "SHA-256=" + base64.URLEncoding.EncodeToString(sum[:]),
		})
		// Sent again while the first is decided, and after.
		answers := make(chan string, 3)
		ask := func() {
			resp, err := wa.NC.RequestWithContext(ctx, streams.StoreSubject(schemas.WorkerRef{Host: "wa"}), req)
			if err != nil {
				answers <- err.Error()
				return
			}
			answers <- string(resp.Data)
		}
		go ask()
		go ask()
		for range 2 {
			if a := <-answers; a != "{}" {
				t.Fatalf("answer %s", a)
			}
		}
		ask()
		if a := <-answers; a != "{}" {
			t.Fatalf("answer %s", a)
		}
		readable(t, results, upload.JobKey(1, "retry.txt"), data)
	})

	// What follows is refused by NATS itself.
	victim := upload.JobKey(2, "victim.txt")
	if err := s.bus.PutBlob(ctx, streams.BucketResults, victim, strings.NewReader("kept")); err != nil {
		t.Fatal(err)
	}
	vinfo, err := results.GetInfo(ctx, victim)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("delete an object by its metadata", func(t *testing.T) {
		c, cancel := short()
		defer cancel()
		deleted := *vinfo
		deleted.Deleted, deleted.Size, deleted.Chunks = true, 0, 0
		data, _ := json.Marshal(deleted)
		subj := "$O." + streams.BucketResults + ".M." + base64.URLEncoding.EncodeToString([]byte(victim))
		m := nats.NewMsg(subj)
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
		m.Data = data
		if _, err := wa.JS.PublishMsg(c, m); err == nil {
			t.Fatal("a worker wrote an object's metadata")
		}
		violation(t, errs, subj)
	})
	t.Run("append to an object's chunks, or roll the bucket up", func(t *testing.T) {
		c, cancel := short()
		defer cancel()
		subj := "$O." + streams.BucketResults + ".C." + vinfo.NUID
		m := nats.NewMsg(subj)
		m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupAll)
		m.Data = []byte("junk")
		if _, err := wa.JS.PublishMsg(c, m); err == nil {
			t.Fatal("a worker wrote an object's chunks")
		}
		violation(t, errs, subj)
	})
	t.Run("stage as another host", func(t *testing.T) {
		subj := "jetqa.chunk.wb.x"
		if err := wa.NC.Publish(subj, []byte("x")); err != nil {
			t.Fatal(err)
		}
		violation(t, errs, subj)
	})
	t.Run("the object store API", func(t *testing.T) {
		c, cancel := short()
		defer cancel()
		store, err := wa.JS.ObjectStore(c, streams.BucketResults)
		if err != nil {
			t.Fatal(err)
		}
		if err := store.Delete(c, victim); err == nil {
			t.Fatal("a worker deleted an object")
		}
	})
	readable(t, results, victim, []byte("kept"))

	// Nothing staged is left behind.
	chunks, err := s.bus.JS.Stream(ctx, streams.StreamChunks)
	if err != nil {
		t.Fatal(err)
	}
	info, err := chunks.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Fatalf("%d staged chunks left", info.State.Msgs)
	}
}

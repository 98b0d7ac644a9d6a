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
	"jetqa/streams"
	"jetqa/streams/blobs"
)

// A worker's credentials store blobs only through the server: it stages
// chunks, the server checks the name (a result's or a needle's content
// hash) and stores them. It cannot delete an object, nor replace one.
func TestAWorkerStoresOnlyWhatItMay(t *testing.T) {
	s := startServerWithMatchers(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	wa, errs := connectWith(t, s, s.issue(t, streams.RoleWorker, "wa"))
	wa.AsWorker(schemas.WorkerRef{Host: "wa"})

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

	put := func(data []byte) (string, error) {
		return wa.PutResult(ctx, hexSum(data), bytes.NewReader(data), int64(len(data)))
	}
	t.Run("results by their content, readable by everyone", func(t *testing.T) {
		first := random(300 * 1024) // three chunks
		key, err := put(first)
		if err != nil {
			t.Fatal(err)
		}
		if key != blobs.ContentKey(hexSum(first)) {
			t.Fatalf("stored under %s", key)
		}
		readable(t, results, key, first)
		if have, err := wa.HasResult(ctx, hexSum(first), int64(len(first))); err != nil || !have {
			t.Fatalf("the worker asked after a stored result: %v, %v", have, err)
		}
		if have, err := wa.HasResult(ctx, hexSum([]byte("never stored")), 12); err != nil || have {
			t.Fatalf("the worker asked after a result never stored: %v, %v", have, err)
		}
		// Stored under its name, it stays: other bytes are not taken.
		if err := wa.PutBlob(ctx, streams.BucketResults, key, bytes.NewReader(random(2000))); !errors.Is(err, streams.ErrRefused) {
			t.Fatalf("other bytes under a stored result's name: %v, want refused", err)
		}
		readable(t, results, key, first)
		// An empty file is a file too.
		empty, err := put(nil)
		if err != nil {
			t.Fatal(err)
		}
		readable(t, results, empty, nil)
		// A new name must be the content's hash.
		err = wa.PutBlob(ctx, streams.BucketResults, blobs.ContentKey(hexSum([]byte("other"))), bytes.NewReader(first))
		if !errors.Is(err, streams.ErrRefused) {
			t.Fatalf("a result under another's hash: %v, want refused", err)
		}
		dead, err := s.bus.JS.Stream(ctx, streams.StreamDead)
		if err != nil {
			t.Fatal(err)
		}
		last, err := dead.GetLastMsgForSubject(ctx, "jetqa.dead.authority")
		if err != nil {
			t.Fatal(err)
		}
		if last.Header.Get("Jetqa-Worker") != "wa" || !strings.Contains(last.Header.Get("Jetqa-Reason"), hexSum([]byte("other"))) {
			t.Fatalf("dead letter %v does not name the worker and the key", last.Header)
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
			{streams.BucketResults, "jobs/1/serial0.txt"},
			{streams.BucketResults, "screens/" + hexSum([]byte("x")) + ".png"},
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
		key := blobs.ContentKey(hexSum(data))
		const id = "retry1"
		if _, err := wa.JS.Publish(ctx, "jetqa.chunk.wa."+id, data); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		req, _ := json.Marshal(map[string]any{
			"bucket": streams.BucketResults, "name": key, "nuid": id,
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
		readable(t, results, key, data)
	})

	// What follows is refused by NATS itself.
	victim := "jobs/2/victim.txt"
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

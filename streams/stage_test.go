package streams_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// flaky reads like r but fails once, at offset failAt.
type flaky struct {
	*bytes.Reader
	failAt int64
	failed bool
}

func (f *flaky) Read(p []byte) (int, error) {
	pos := f.Size() - int64(f.Len())
	if !f.failed && pos+int64(len(p)) > f.failAt {
		if pos == f.failAt {
			f.failed = true
			return 0, errors.New("the disk hiccuped")
		}
		p = p[:f.failAt-pos]
	}
	return f.Reader.Read(p)
}

// An upload cut half way goes on where it stopped: the chunks the stream
// took are not sent again, and the result is stored whole.
func TestAnUploadResumesAfterACut(t *testing.T) {
	s := natstest.Start(t)
	server := s.Bus("authority@server")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	serving, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- server.ServeReports(serving, streams.AuthorityConfig{
			Decide: func(context.Context, *schemas.JobAggregate, streams.Report) error { return nil },
		})
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	staged, err := server.NC.SubscribeSync("jetqa.chunk.>")
	if err != nil {
		t.Fatal(err)
	}
	// Unread, its messages would hold up the connection's drain.
	defer func() { _ = staged.Unsubscribe() }()

	data := make([]byte, 8*128*1024)
	_, _ = rand.Read(data)
	sum := sha256.Sum256(data)
	worker := s.Bus("upload@h")
	worker.AsWorker(schemas.WorkerRef{Host: "h"})
	r := &flaky{Reader: bytes.NewReader(data), failAt: 5*128*1024 + 10}
	key, err := worker.PutResult(ctx, hex.EncodeToString(sum[:]), r, int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if !r.failed {
		t.Fatal("the upload was never cut")
	}
	if err := server.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := staged.Pending(); n != 8 {
		t.Errorf("%d chunks sent for a blob of 8, cut after 5: sent again what was stored", n)
	}
	body, _, err := server.Results().Open(ctx, key, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer body.Close()
	if got, err := io.ReadAll(body); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("stored %d bytes (%v), not the %d uploaded", len(got), err, len(data))
	}
}

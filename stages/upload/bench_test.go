package upload

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/nats-io/nats.go/jetstream"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/blobs"
	"jetqa/streams/blobs/blobstest"
	"jetqa/streams/natstest"
)

// Screens of a test run repeat: a job of 1 000 screenshots here has 250
// different screens, each a 1024x768 PNG of a console with text lines.
const (
	benchShots    = 1000
	benchDistinct = 250
)

// screenPNG draws a screen that differs from the others by its text
// lines: blocks of noise in 16 gray levels, about as large as the PNG
// screenshots of a graphical installer.
func screenPNG(n int) []byte {
	pal := make(color.Palette, 16)
	for i := range pal {
		pal[i] = color.Gray{uint8(i * 17)}
	}
	img := image.NewPaletted(image.Rect(0, 0, 1024, 768), pal)
	rnd := rand.New(rand.NewPCG(uint64(n), 7))
	for line := 0; line < 40; line++ {
		for x := 0; x < 8*(10+(n*7+line*13)%50); x++ {
			for y := 0; y < 12; y++ {
				img.SetColorIndex(x, line*16+y+2, uint8(rnd.IntN(16)))
			}
		}
	}
	var b bytes.Buffer
	_ = png.Encode(&b, img)
	return b.Bytes()
}

// resultsDir writes a job's screenshots and returns the directory and
// their total size.
func resultsDir(b *testing.B) (string, int64) {
	dir := b.TempDir()
	distinct := make([][]byte, benchDistinct)
	for i := range distinct {
		distinct[i] = screenPNG(i)
	}
	var total int64
	for i := range benchShots {
		data := distinct[i%benchDistinct]
		total += int64(len(data))
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("step-%04d.png", i)), data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	return dir, total
}

// peakHeap samples the heap while run runs and returns its peak growth.
func peakHeap(run func()) uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	base := m.HeapInuse
	var peak atomic.Uint64
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			if m.HeapInuse > base && m.HeapInuse-base > peak.Load() {
				peak.Store(m.HeapInuse - base)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	run()
	close(done)
	return peak.Load()
}

// BenchmarkUpload stores a job of 1 000 screenshots (250 different) the
// way a worker does — hashed, asked after, staged over NATS, stored and
// verified by the server — into each results store, against a raw loop
// that puts every file into the same store directly, in the same run.
// It reports MB/s of screenshots handed in, the ratio to the raw loop,
// the bytes stored against those handed in (what deduplication saves),
// and the peak heap growth of the process during the upload.
func BenchmarkUpload(b *testing.B) {
	dir, total := resultsDir(b)
	files, err := os.ReadDir(dir)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("objectstore", func(b *testing.B) {
		srv := natstest.Start(b)
		raw := func(b *testing.B) {
			bus := srv.Bus("raw")
			ctx := context.Background()
			os, err := bus.JS.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: fmt.Sprintf("raw%d", time.Now().UnixNano())})
			if err != nil {
				b.Fatal(err)
			}
			for _, f := range files {
				data, err := readFile(dir, f.Name())
				if err != nil {
					b.Fatal(err)
				}
				if _, err := os.PutBytes(ctx, f.Name(), data); err != nil {
					b.Fatal(err)
				}
			}
		}
		benchUpload(b, srv, nil, dir, total, raw)
	})
	b.Run("s3", func(b *testing.B) {
		s3 := blobstest.StartS3(b)
		url := s3.Bucket(b, "results")
		s3.Bucket(b, "raw")
		for _, kv := range s3.Env() {
			k, v, _ := cutEnv(kv)
			b.Setenv(k, v)
		}
		store, err := blobs.OpenS3(context.Background(), url)
		if err != nil {
			b.Fatal(err)
		}
		client, err := minio.New(s3.Endpoint[len("http://"):], &minio.Options{Creds: credentials.NewStaticV4(s3.Access, s3.Secret, ""), BucketLookup: minio.BucketLookupPath})
		if err != nil {
			b.Fatal(err)
		}
		raw := func(b *testing.B) {
			ctx := context.Background()
			for _, f := range files {
				data, err := readFile(dir, f.Name())
				if err != nil {
					b.Fatal(err)
				}
				if _, err := client.PutObject(ctx, "raw", f.Name(), bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		}
		benchUpload(b, natstest.Start(b), store, dir, total, raw)
	})
}

func cutEnv(kv string) (string, string, bool) {
	for i := range kv {
		if kv[i] == '=' {
			return kv[:i], kv[i+1:], true
		}
	}
	return kv, "", false
}

func readFile(dir, name string) ([]byte, error) {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

func benchUpload(b *testing.B, srv *natstest.Server, store blobs.Store, dir string, total int64, raw func(*testing.B)) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	server := srv.Bus("authority@server")
	if store != nil {
		server.UseResults(store)
	}
	served := make(chan error, 1)
	go func() {
		served <- server.ServeReports(ctx, streams.AuthorityConfig{
			Decide: func(context.Context, *schemas.JobAggregate, streams.Report) error { return nil },
		})
	}()
	defer func() { cancel(); <-served }()
	worker := srv.Bus("upload@h")
	worker.AsWorker(schemas.WorkerRef{Host: "h"})
	stage := &Stage{cfg: Config{Host: "h"}, bus: worker, log: natstest.Logger(b)}

	var rawTime, jetqaTime time.Duration
	var peak uint64
	for i := 0; i < b.N; i++ {
		start := time.Now()
		raw(b)
		rawTime += time.Since(start)

		start = time.Now()
		var err error
		peak = max(peak, peakHeap(func() {
			_, err = stage.store(ctx, int64(i+1), &schemas.TestsFinished{ResultsDir: dir})
		}))
		if err != nil {
			b.Fatal(err)
		}
		jetqaTime += time.Since(start)
	}
	var stored int64
	if err := server.Results().List(ctx, "", func(i blobs.Info) error { stored += i.Size; return nil }); err != nil {
		b.Fatal(err)
	}
	mb := float64(total) / 1e6 * float64(b.N)
	b.ReportMetric(mb/jetqaTime.Seconds(), "MB/s")
	b.ReportMetric(mb/rawTime.Seconds(), "raw-MB/s")
	b.ReportMetric(jetqaTime.Seconds()/rawTime.Seconds(), "time/raw")
	b.ReportMetric(float64(stored)/float64(total), "stored/handed-in")
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(float64(total)/benchShots/1024, "KiB/screenshot")
}

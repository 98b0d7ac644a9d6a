package cache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const MiB = 1 << 20

// writeAsset writes size bytes of deterministic pseudo-random content to
// path and returns their SHA-256.
func writeAsset(t testing.TB, path string, size int64, seed byte) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(io.MultiWriter(f, h), io.LimitReader(rand.NewChaCha8([32]byte{seed}), size), make([]byte, MiB)); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// misbehaviour is what the test server does wrong with one request.
type misbehaviour struct {
	status      int   // answer with this status instead
	ignoreRange bool  // answer 200 with the whole file
	cutAfter    int64 // cut the connection after so many body bytes (>0)
	stallAfter  int64 // send so many body bytes, then nothing until the client leaves (>0)
	corruptAt   int64 // flip the byte at this offset of the file (>0)
}

// served is one request the test server got.
type served struct {
	path, rng string
	sent      int64 // body bytes written
}

// assetServer serves the files of a directory over loopback HTTP, with
// ranges, and misbehaves as its plan says; it records every request.
type assetServer struct {
	*httptest.Server
	dir string

	mu       sync.Mutex
	reqs     []served
	plan     func(i int) misbehaviour // by request number, from 0
	inFlight int
	maxIn    int
	gate     chan struct{} // when set, requests wait until it is closed
	arrived  chan int      // when set, gets each request's number
}

func newAssetServer(t *testing.T) *assetServer {
	s := &assetServer{dir: t.TempDir()}
	s.Server = httptest.NewServer(s)
	t.Cleanup(s.Close)
	return s
}

// add writes an asset of size bytes and returns its URL and SHA-256.
func (s *assetServer) add(t *testing.T, name string, size int64, seed byte) (string, string) {
	t.Helper()
	return s.URL + "/" + name, writeAsset(t, filepath.Join(s.dir, name), size, seed)
}

func (s *assetServer) setPlan(plan func(i int) misbehaviour) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.plan = plan
}

func (s *assetServer) requests() []served {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]served(nil), s.reqs...)
}

func (s *assetServer) sent() int64 {
	var n int64
	for _, r := range s.requests() {
		n += r.sent
	}
	return n
}

func (s *assetServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	i := len(s.reqs)
	s.reqs = append(s.reqs, served{path: r.URL.Path, rng: r.Header.Get("Range")})
	var mis misbehaviour
	if s.plan != nil {
		mis = s.plan(i)
	}
	s.inFlight++
	s.maxIn = max(s.maxIn, s.inFlight)
	gate, arrived := s.gate, s.arrived
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()
	if arrived != nil {
		arrived <- i
	}
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	if mis.status != 0 {
		http.Error(w, http.StatusText(mis.status), mis.status)
		return
	}
	if mis.ignoreRange {
		r.Header.Del("Range")
	}
	f, err := os.Open(filepath.Join(s.dir, filepath.Base(r.URL.Path)))
	if err != nil {
		http.NotFound(w, r)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	http.ServeContent(&misbehavingWriter{ResponseWriter: w, s: s, i: i, r: r, mis: mis}, r, fi.Name(), fi.ModTime(), f)
}

type misbehavingWriter struct {
	http.ResponseWriter
	s    *assetServer
	i    int
	r    *http.Request
	mis  misbehaviour
	sent int64
}

func (w *misbehavingWriter) Write(p []byte) (int, error) {
	limit := int64(-1)
	if w.mis.cutAfter > 0 {
		limit = w.mis.cutAfter
	} else if w.mis.stallAfter > 0 {
		limit = w.mis.stallAfter
	}
	stop := limit >= 0 && w.sent+int64(len(p)) >= limit
	if stop {
		p = p[:limit-w.sent]
	}
	if at := w.mis.corruptAt - w.bodyStart() - w.sent; w.mis.corruptAt > 0 && at >= 0 && at < int64(len(p)) {
		p = append([]byte(nil), p...)
		p[at] ^= 0xff
	}
	n, err := w.ResponseWriter.Write(p)
	w.sent += int64(n)
	w.s.mu.Lock()
	w.s.reqs[w.i].sent = w.sent
	w.s.mu.Unlock()
	if stop {
		w.ResponseWriter.(http.Flusher).Flush()
		if w.mis.stallAfter > 0 {
			<-w.r.Context().Done()
		}
		panic(http.ErrAbortHandler) // cuts the connection
	}
	return n, err
}

func (w *misbehavingWriter) bodyStart() int64 {
	start, _, ok := parseContentRange(w.Header().Get("Content-Range"))
	if !ok {
		return 0
	}
	return start
}

// newCache opens a cache in dir (a new temporary one if "") whose
// downloads retry quickly, and makes the test wait at its end until no
// download runs any more.
func newCache(t *testing.T, cfg Config) *Cache {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(t.TempDir(), "cache")
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = time.Millisecond
	}
	cfg.Log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		eventually(t, "downloads to end", func() bool { return len(c.Status().Downloading) == 0 })
	})
	return c
}

// eventually waits until cond holds, failing the test after a deadline.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func get(t *testing.T, c *Cache, url string, want Want) *Entry {
	t.Helper()
	e, err := c.Get(context.Background(), HTTPSource(url, nil), want, nil)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// checkFile fails the test unless the file at path has the SHA-256 sum.
func checkFile(t *testing.T, path, sum string) {
	t.Helper()
	got, _, err := hashFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got != sum {
		t.Fatalf("%s has SHA-256 %s, want %s", path, got, sum)
	}
}

func partPath(c *Cache, url string) string {
	src := HTTPSource(url, nil)
	return filepath.Join(c.cfg.Dir, partName(src.Key(), src.String()))
}

func TestConcurrentGetsShareOneDownload(t *testing.T) {
	srv := newAssetServer(t)
	const size = 200 * MiB
	url, sum := srv.add(t, "big.iso", size, 1)
	c := newCache(t, Config{})

	const jobs = 5
	entries := make([]*Entry, jobs)
	errs := make([]error, jobs)
	lastDone := make([]int64, jobs)
	var wg sync.WaitGroup
	for i := range jobs {
		wg.Go(func() {
			entries[i], errs[i] = c.Get(context.Background(), HTTPSource(url, nil), Want{SHA256: sum}, func(done, total int64) {
				if done < lastDone[i] || total != size {
					t.Errorf("job %d: progress went from %d to %d of %d", i, lastDone[i], done, total)
				}
				lastDone[i] = done
			})
		})
	}
	wg.Wait()
	for i := range jobs {
		if errs[i] != nil {
			t.Fatalf("job %d: %v", i, errs[i])
		}
		if entries[i].Path != entries[0].Path || entries[i].SHA256 != sum || entries[i].Size != size {
			t.Errorf("job %d got %+v, job 0 %+v", i, entries[i], entries[0])
		}
		if lastDone[i] != size && !entries[i].Hit {
			t.Errorf("job %d waited for the download but its progress ended at %d", i, lastDone[i])
		}
	}
	if reqs := srv.requests(); len(reqs) != 1 || srv.sent() != size {
		t.Errorf("server got %d requests and sent %d bytes, want 1 request of %d: %+v", len(reqs), srv.sent(), size, reqs)
	}
	checkFile(t, entries[0].Path, sum)
	st := c.Status()
	if st.Downloads != 1 || st.Hits+st.Misses != jobs || st.BytesDownloaded != size {
		t.Errorf("status: %d downloads, %d hits, %d misses, %d bytes downloaded; want 1 download of %d bytes for %d gets", st.Downloads, st.Hits, st.Misses, st.BytesDownloaded, size, jobs)
	}
	if len(st.Entries) != 1 || st.Entries[0].Users != jobs {
		t.Errorf("entries %+v, want one used by %d jobs", st.Entries, jobs)
	}
	for _, e := range entries {
		e.Release()
	}
	if st := c.Status(); st.Entries[0].Users != 0 {
		t.Errorf("after release: %d users", st.Entries[0].Users)
	}
}

func TestInterruptedDownloadResumes(t *testing.T) {
	srv := newAssetServer(t)
	const size = 8*MiB + 12345
	url, sum := srv.add(t, "disk.qcow2", size, 2)
	srv.setPlan(func(i int) misbehaviour {
		if i == 0 {
			return misbehaviour{cutAfter: 3*MiB + 777}
		}
		return misbehaviour{}
	})
	c := newCache(t, Config{})

	e := get(t, c, url, Want{SHA256: sum})
	defer e.Release()
	checkFile(t, e.Path, sum)
	reqs := srv.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2: %+v", len(reqs), reqs)
	}
	if reqs[0].rng != "" || reqs[1].rng != fmt.Sprintf("bytes=%d-", reqs[0].sent) {
		t.Errorf("second request asks for %q after the first sent %d bytes", reqs[1].rng, reqs[0].sent)
	}
	if srv.sent() != size {
		t.Errorf("server sent %d bytes for an asset of %d", srv.sent(), size)
	}
	if _, err := os.Stat(partPath(c, url)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf(".part left behind: %v", err)
	}
}

func TestServerIgnoringRangeRestartsFromZero(t *testing.T) {
	srv := newAssetServer(t)
	const size = 4 * MiB
	url, sum := srv.add(t, "kernel", size, 3)
	srv.setPlan(func(i int) misbehaviour {
		return [...]misbehaviour{{cutAfter: MiB + 5}, {ignoreRange: true}, {ignoreRange: true}}[min(i, 2)]
	})
	c := newCache(t, Config{})

	e := get(t, c, url, Want{})
	defer e.Release()
	checkFile(t, e.Path, sum)
	if e.SHA256 != sum || e.Size != size {
		t.Errorf("entry %+v", e)
	}
	reqs := srv.requests()
	if len(reqs) != 3 || reqs[1].rng == "" || reqs[2].rng != "" {
		t.Errorf("requests %+v: want a cut one, a range answered 200, then one from 0", reqs)
	}
}

func TestCorruptByteIsRefetched(t *testing.T) {
	srv := newAssetServer(t)
	const size = 3 * MiB
	url, sum := srv.add(t, "hdd.img", size, 4)
	c := newCache(t, Config{})
	final := filepath.Join(c.cfg.Dir, dataName(HTTPSource(url, nil).Key(), sum, url))

	t.Run("once", func(t *testing.T) {
		srv.setPlan(func(i int) misbehaviour {
			if i == 0 {
				return misbehaviour{corruptAt: 2*MiB + 3}
			}
			return misbehaviour{}
		})
		e := get(t, c, url, Want{SHA256: sum})
		defer e.Release()
		if e.Path != final {
			t.Errorf("path %s, want %s", e.Path, final)
		}
		checkFile(t, e.Path, sum)
		if n := len(srv.requests()); n != 2 {
			t.Errorf("%d requests, want 2", n)
		}
	})

	t.Run("always", func(t *testing.T) {
		url, sum := srv.add(t, "broken.img", size, 5)
		before := len(srv.requests())
		srv.setPlan(func(int) misbehaviour { return misbehaviour{corruptAt: 17} })
		_, err := c.Get(context.Background(), HTTPSource(url, nil), Want{SHA256: sum}, nil)
		if !errors.Is(err, ErrChecksum) || !errors.Is(err, ErrPermanent) {
			t.Fatalf("got %v, want a permanent checksum error", err)
		}
		for _, s := range []string{url, "expected SHA-256 " + sum, "got SHA-256 "} {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("error %q does not say %q", err, s)
			}
		}
		if n := len(srv.requests()) - before; n != 1+fromScratch {
			t.Errorf("%d downloads, want %d", n, 1+fromScratch)
		}
		des, _ := os.ReadDir(c.cfg.Dir)
		for _, de := range des {
			if strings.Contains(de.Name(), "broken") {
				t.Errorf("%s left in the cache", de.Name())
			}
		}
	})
}

func TestEvictsLeastRecentlyUsedUnusedEntry(t *testing.T) {
	srv := newAssetServer(t)
	urls, sums := map[string]string{}, map[string]string{}
	for i, name := range []string{"a", "b", "c", "d"} {
		urls[name], sums[name] = srv.add(t, name+".iso", MiB, byte(10+i))
	}
	c := newCache(t, Config{LimitBytes: 3 * MiB})

	get(t, c, urls["a"], Want{}).Release()
	b := get(t, c, urls["b"], Want{}) // a running job keeps it
	defer b.Release()
	cEntry := get(t, c, urls["c"], Want{})
	cEntry.Release()
	if a := get(t, c, urls["a"], Want{}); !a.Hit {
		t.Fatal("a was not a hit")
	} else {
		a.Release() // now c is the least recently used
	}

	d := get(t, c, urls["d"], Want{})
	defer d.Release()
	if _, err := os.Stat(cEntry.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("c was not evicted: %v", err)
	}
	if _, err := os.Stat(cEntry.Path + sidecarSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("c's sidecar was not deleted: %v", err)
	}
	checkFile(t, b.Path, sums["b"])
	st := c.Status()
	var left []string
	for _, e := range st.Entries {
		left = append(left, strings.TrimPrefix(e.Source, srv.URL+"/"))
	}
	if strings.Join(left, " ") != "d.iso a.iso b.iso" || st.TotalBytes != 3*MiB {
		t.Errorf("cache holds %v (%d bytes), want d, a, b (most recent first, b the oldest but in use)", left, st.TotalBytes)
	}
}

func TestCacheFullOfEntriesInUse(t *testing.T) {
	srv := newAssetServer(t)
	c := newCache(t, Config{LimitBytes: 2 * MiB})
	urlA, sumA := srv.add(t, "a.iso", MiB, 20)
	urlB, _ := srv.add(t, "b.iso", MiB, 21)
	urlC, sumC := srv.add(t, "c.iso", MiB, 22)
	a := get(t, c, urlA, Want{})
	b := get(t, c, urlB, Want{})
	defer b.Release()

	_, err := c.Get(context.Background(), HTTPSource(urlC, nil), Want{}, nil)
	if !errors.Is(err, ErrCacheFull) || errors.Is(err, ErrPermanent) {
		t.Fatalf("got %v, want a cache-full error that may pass", err)
	}
	for _, s := range []string{urlC, "in use by running jobs", "CACHELIMIT 2 MiB"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not say %q", err, s)
		}
	}
	checkFile(t, a.Path, sumA)

	a.Release()
	e := get(t, c, urlC, Want{})
	defer e.Release()
	checkFile(t, e.Path, sumC)
	if _, err := os.Stat(a.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a was not evicted once released: %v", err)
	}
	if st := c.Status(); st.TotalBytes != 2*MiB || st.PartialBytes != 0 {
		t.Errorf("cache holds %d bytes and %d partial, want 2 MiB", st.TotalBytes, st.PartialBytes)
	}
}

func TestAssetLargerThanLimit(t *testing.T) {
	srv := newAssetServer(t)
	url, sum := srv.add(t, "huge.iso", 4*MiB, 30)
	c := newCache(t, Config{LimitBytes: 3 * MiB})
	want := fmt.Sprintf("asset %s is 4 MiB, larger than CACHELIMIT 3 MiB", url)

	for _, tc := range []struct {
		name     string
		want     Want
		requests int
	}{
		{"size given", Want{SHA256: sum, Size: 4 * MiB}, 0},
		{"size from the server", Want{}, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(srv.requests())
			_, err := c.Get(context.Background(), HTTPSource(url, nil), tc.want, nil)
			if !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrPermanent) || err.Error() != want {
				t.Fatalf("got %v, want %q", err, want)
			}
			if n := len(srv.requests()) - before; n != tc.requests {
				t.Errorf("%d requests, want %d", n, tc.requests)
			}
		})
	}
	if st := c.Status(); st.TotalBytes != 0 || st.PartialBytes != 0 || len(st.Entries) != 0 {
		t.Errorf("status after refusing: %+v", st)
	}
}

func TestRestartKeepsEntries(t *testing.T) {
	srv := newAssetServer(t)
	url, sum := srv.add(t, "tw.iso", 2*MiB, 40)
	dir := filepath.Join(t.TempDir(), "cache")
	first := newCache(t, Config{Dir: dir})
	get(t, first, url, Want{}).Release()

	second := newCache(t, Config{Dir: dir})
	e := get(t, second, url, Want{SHA256: sum})
	if !e.Hit || len(srv.requests()) != 1 {
		t.Fatalf("after a restart: hit %v, %d requests; want a hit without a download", e.Hit, len(srv.requests()))
	}
	e.Release()
	if st := second.Status(); st.Hits != 1 || st.Downloads != 0 || len(st.Entries) != 1 || st.Entries[0].SHA256 != sum {
		t.Errorf("status after restart: %+v", st)
	}

	// Truncated while no cache ran: dropped when the next one opens.
	if err := os.Chmod(e.Path, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(e.Path, MiB); err != nil {
		t.Fatal(err)
	}
	third := newCache(t, Config{Dir: dir})
	if st := third.Status(); len(st.Entries) != 0 {
		t.Fatalf("a truncated file is in the index: %+v", st.Entries)
	}
	e = get(t, third, url, Want{})
	defer e.Release()
	if e.Hit || len(srv.requests()) != 2 {
		t.Errorf("truncated file: hit %v, %d requests; want it fetched again", e.Hit, len(srv.requests()))
	}
	checkFile(t, e.Path, sum)
}

func TestPartLeftByKilledProcessIsResumed(t *testing.T) {
	for _, tc := range []struct {
		name          string
		spoilPart     bool
		wantRequests  int
		wantSecondRng bool
	}{
		{name: "intact", wantRequests: 2},
		{name: "prefix spoilt on disk", spoilPart: true, wantRequests: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newAssetServer(t)
			const size = 5 * MiB
			url, sum := srv.add(t, "sle.iso", size, 50)
			srv.setPlan(func(i int) misbehaviour {
				if i == 0 {
					return misbehaviour{cutAfter: 2*MiB + 99}
				}
				return misbehaviour{}
			})
			dir := filepath.Join(t.TempDir(), "cache")
			first := newCache(t, Config{Dir: dir, Retries: -1})
			if _, err := first.Get(context.Background(), HTTPSource(url, nil), Want{SHA256: sum}, nil); err == nil || !strings.Contains(err.Error(), url) {
				t.Fatalf("got %v, want an error naming %s", err, url)
			}
			cut := srv.requests()[0].sent
			part := partPath(first, url)
			if fi, err := os.Stat(part); err != nil || fi.Size() != cut {
				t.Fatalf(".part after the cut: %v, %v; want %d bytes", fi, err, cut)
			}
			if tc.spoilPart {
				f, err := os.OpenFile(part, os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteAt([]byte("garbage"), 1000); err != nil {
					t.Fatal(err)
				}
				f.Close()
			}

			second := newCache(t, Config{Dir: dir})
			if st := second.Status(); st.PartialBytes != cut {
				t.Errorf("partial bytes after restart %d, want %d", st.PartialBytes, cut)
			}
			e := get(t, second, url, Want{SHA256: sum})
			defer e.Release()
			checkFile(t, e.Path, sum)
			reqs := srv.requests()
			if len(reqs) != tc.wantRequests || reqs[1].rng != fmt.Sprintf("bytes=%d-", cut) {
				t.Errorf("requests %+v: want %d, the second resuming at %d", reqs, tc.wantRequests, cut)
			}
			if st := second.Status(); st.PartialBytes != 0 || st.TotalBytes != size {
				t.Errorf("after resuming: %d partial, %d total", st.PartialBytes, st.TotalBytes)
			}
		})
	}
}

func TestTamperedEntryIsNotServed(t *testing.T) {
	srv := newAssetServer(t)
	url, sum := srv.add(t, "factory.iso", 2*MiB, 60)
	dir := filepath.Join(t.TempDir(), "cache")
	c := newCache(t, Config{Dir: dir})
	key := HTTPSource(url, nil).Key()
	tamper := func(path string, f func(*os.File) error) {
		t.Helper()
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		fh, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		if err := f(fh); err != nil {
			t.Fatal(err)
		}
	}
	flipByte := func(f *os.File) error { _, err := f.WriteAt([]byte{0}, 12345); return err }

	e := get(t, c, url, Want{})
	e.Release()
	tamper(e.Path, func(f *os.File) error { return f.Truncate(MiB) })
	e = get(t, c, url, Want{})
	if e.Hit || len(srv.requests()) != 2 {
		t.Errorf("truncated entry: hit %v after %d requests; want it fetched again", e.Hit, len(srv.requests()))
	}
	checkFile(t, e.Path, sum)
	e.Release()

	// The same size, other bytes: Verify finds it.
	tamper(e.Path, flipByte)
	if err := c.Verify(context.Background(), key); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), url) {
		t.Errorf("Verify: %v, want a corrupt entry of %s", err, url)
	}
	if st := c.Status(); len(st.Entries) != 0 {
		t.Errorf("corrupt entry still indexed: %+v", st.Entries)
	}
	e = get(t, c, url, Want{})
	e.Release()
	if err := c.Verify(context.Background(), key); err != nil {
		t.Errorf("Verify of a good entry: %v", err)
	}

	// With VerifyOnHit, Get finds it.
	verifying := newCache(t, Config{Dir: dir, VerifyOnHit: true})
	tamper(e.Path, flipByte)
	e = get(t, verifying, url, Want{})
	defer e.Release()
	if e.Hit {
		t.Error("a corrupt entry was served with VerifyOnHit")
	}
	checkFile(t, e.Path, sum)
}

func TestEntryFromEarlierBootIsRehashed(t *testing.T) {
	srv := newAssetServer(t)
	goodURL, goodSum := srv.add(t, "good.iso", MiB, 70)
	lostURL, lostSum := srv.add(t, "lost.iso", MiB, 71)
	dir := filepath.Join(t.TempDir(), "cache")
	c := newCache(t, Config{Dir: dir})
	good := get(t, c, goodURL, Want{})
	good.Release()
	lost := get(t, c, lostURL, Want{})
	lost.Release()

	// As after a power cut: the sidecars say another boot, and one file
	// kept its size but lost bytes.
	for _, e := range []*Entry{good, lost} {
		meta, lastUse, err := readSidecar(e.Path)
		if err != nil {
			t.Fatal(err)
		}
		meta.Boot = "an-earlier-boot"
		if err := writeSidecar(e.Path, meta, lastUse); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(lost.Path, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(lost.Path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, 4096), 8192); err != nil {
		t.Fatal(err)
	}
	f.Close()

	rebooted := newCache(t, Config{Dir: dir})
	e := get(t, rebooted, goodURL, Want{})
	e.Release()
	if !e.Hit {
		t.Error("an intact entry of an earlier boot was downloaded again")
	}
	if meta, _, err := readSidecar(e.Path); err != nil || !meta.Durable {
		t.Errorf("intact entry not marked durable after its re-hash: %+v, %v", meta, err)
	}
	checkFile(t, e.Path, goodSum)
	e = get(t, rebooted, lostURL, Want{})
	defer e.Release()
	if e.Hit {
		t.Error("an entry that lost bytes was served")
	}
	checkFile(t, e.Path, lostSum)
}

func TestHTTPErrors(t *testing.T) {
	srv := newAssetServer(t)
	c := newCache(t, Config{Retries: 2})

	t.Run("404", func(t *testing.T) {
		url := srv.URL + "/missing.iso"
		before := len(srv.requests())
		_, err := c.Get(context.Background(), HTTPSource(url, nil), Want{}, nil)
		if !errors.Is(err, ErrPermanent) || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "404 Not Found") {
			t.Errorf("got %v, want a permanent error naming %s and 404", err, url)
		}
		if n := len(srv.requests()) - before; n != 1 {
			t.Errorf("%d requests, want 1 (no retries)", n)
		}
		if _, err := os.Stat(partPath(c, url)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf(".part left behind: %v", err)
		}
	})

	t.Run("503 then 200", func(t *testing.T) {
		url, sum := srv.add(t, "busy.iso", MiB, 80)
		before := len(srv.requests())
		srv.setPlan(func(i int) misbehaviour {
			if i < before+2 {
				return misbehaviour{status: http.StatusServiceUnavailable}
			}
			return misbehaviour{}
		})
		defer srv.setPlan(nil)
		e := get(t, c, url, Want{SHA256: sum})
		e.Release()
		if n := len(srv.requests()) - before; n != 3 {
			t.Errorf("%d requests, want 3", n)
		}
	})

	t.Run("unreachable", func(t *testing.T) {
		url := "http://127.0.0.1:1/x.iso"
		_, err := c.Get(context.Background(), HTTPSource(url, nil), Want{}, nil)
		if err == nil || errors.Is(err, ErrPermanent) || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "failed 3 times") {
			t.Errorf("got %v, want an error naming %s after 3 tries", err, url)
		}
	})

	t.Run("untrusted certificate", func(t *testing.T) {
		tlsSrv := httptest.NewTLSServer(srv)
		defer tlsSrv.Close()
		url := tlsSrv.URL + "/x.iso"
		_, err := c.Get(context.Background(), HTTPSource(url, nil), Want{}, nil)
		if !errors.Is(err, ErrPermanent) || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "certificate") {
			t.Errorf("got %v, want a permanent certificate error naming %s", err, url)
		}
	})

	if st := c.Status(); len(st.Entries) != 1 || st.PartialBytes != 0 {
		t.Errorf("status: %+v", st)
	}
}

func TestDiskFull(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full:", err)
	}
	srv := newAssetServer(t)
	url, sum := srv.add(t, "full.iso", 2*MiB, 90)
	c := newCache(t, Config{})
	// Writes to the .part fail as on a full disk.
	part := partPath(c, url)
	if err := os.Symlink("/dev/full", part); err != nil {
		t.Fatal(err)
	}

	_, err := c.Get(context.Background(), HTTPSource(url, nil), Want{SHA256: sum}, nil)
	if !errors.Is(err, ErrPermanent) {
		t.Errorf("got %v, want a permanent error", err)
	}
	for _, s := range []string{url, c.cfg.Dir, "no space left on device"} {
		if err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("error %v does not say %q", err, s)
		}
	}
	if _, err := os.Lstat(part); !errors.Is(err, os.ErrNotExist) {
		t.Errorf(".part left behind: %v", err)
	}
	if st := c.Status(); st.TotalBytes != 0 || st.PartialBytes != 0 || len(st.Entries) != 0 || c.reserved != 0 {
		t.Errorf("status after a full disk: %+v, %d reserved", st, c.reserved)
	}
	e := get(t, c, url, Want{SHA256: sum})
	defer e.Release()
	checkFile(t, e.Path, sum)
}

func TestWorkersLimitParallelDownloads(t *testing.T) {
	srv := newAssetServer(t)
	gate, arrived := make(chan struct{}), make(chan int, 10)
	openGate := sync.OnceFunc(func() { close(gate) })
	srv.mu.Lock()
	srv.gate, srv.arrived = gate, arrived
	srv.mu.Unlock()
	const n = 4
	var urls [n]string
	for i := range n {
		urls[i], _ = srv.add(t, fmt.Sprintf("%d.iso", i), MiB, byte(100+i))
	}
	c := newCache(t, Config{Workers: 2})
	t.Cleanup(openGate) // before waiting for the downloads, should the test fail

	errs := make(chan error, n)
	for _, url := range urls {
		go func() {
			e, err := c.Get(context.Background(), HTTPSource(url, nil), Want{}, nil)
			if err == nil {
				e.Release()
			}
			errs <- err
		}()
	}
	for range 2 {
		select {
		case <-arrived:
		case <-time.After(30 * time.Second):
			t.Fatal("no two downloads started")
		}
	}
	eventually(t, "two downloads to wait for a worker", func() bool {
		queued := 0
		for _, d := range c.Status().Downloading {
			if d.Queued {
				queued++
			}
		}
		return queued == 2
	})
	if got := len(srv.requests()); got != 2 {
		t.Errorf("%d requests while two downloads wait for a worker", got)
	}
	openGate()
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.maxIn != 2 {
		t.Errorf("%d downloads at once, want 2", srv.maxIn)
	}
}

func TestStalledDownloadIsResumed(t *testing.T) {
	srv := newAssetServer(t)
	url, sum := srv.add(t, "slow.iso", 3*MiB, 110)
	srv.setPlan(func(i int) misbehaviour {
		if i == 0 {
			return misbehaviour{stallAfter: MiB + 1}
		}
		return misbehaviour{}
	})
	c := newCache(t, Config{StallTimeout: 200 * time.Millisecond})
	e := get(t, c, url, Want{SHA256: sum})
	defer e.Release()
	checkFile(t, e.Path, sum)
	if reqs := srv.requests(); len(reqs) != 2 || reqs[1].rng != fmt.Sprintf("bytes=%d-", MiB+1) {
		t.Errorf("requests %+v: want the second to resume at %d", reqs, MiB+1)
	}
}

func TestCancelledGetLeavesPartToResume(t *testing.T) {
	srv := newAssetServer(t)
	url, sum := srv.add(t, "cancel.iso", 4*MiB, 120)
	srv.setPlan(func(i int) misbehaviour {
		if i == 0 {
			return misbehaviour{stallAfter: 2 * MiB}
		}
		return misbehaviour{}
	})
	c := newCache(t, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, err := c.Get(ctx, HTTPSource(url, nil), Want{SHA256: sum}, func(done, total int64) {
		if done >= 2*MiB {
			cancel()
		}
	})
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), url) {
		t.Fatalf("got %v, want cancelled naming %s", err, url)
	}
	eventually(t, "the abandoned download to stop", func() bool { return len(c.Status().Downloading) == 0 })
	if st := c.Status(); st.PartialBytes != 2*MiB {
		t.Errorf("%d partial bytes kept, want %d", st.PartialBytes, 2*MiB)
	}
	e := get(t, c, url, Want{SHA256: sum})
	defer e.Release()
	checkFile(t, e.Path, sum)
	if reqs := srv.requests(); len(reqs) != 2 || reqs[1].rng != fmt.Sprintf("bytes=%d-", 2*MiB) {
		t.Errorf("requests %+v: want the second to resume at %d", reqs, 2*MiB)
	}
}

func TestDownloadOutlivesAWaiterThatGivesUp(t *testing.T) {
	srv := newAssetServer(t)
	url, sum := srv.add(t, "shared.iso", 2*MiB, 125)
	gate := make(chan struct{})
	openGate := sync.OnceFunc(func() { close(gate) })
	srv.mu.Lock()
	srv.gate = gate
	srv.mu.Unlock()
	c := newCache(t, Config{})
	t.Cleanup(openGate)
	waiters := func() int {
		if d := c.Status().Downloading; len(d) == 1 {
			return d[0].Waiters
		}
		return 0
	}

	ctx, cancel := context.WithCancel(context.Background())
	impatient := make(chan error, 1)
	go func() {
		_, err := c.Get(ctx, HTTPSource(url, nil), Want{SHA256: sum}, nil)
		impatient <- err
	}()
	patient := make(chan error, 1)
	go func() {
		e, err := c.Get(context.Background(), HTTPSource(url, nil), Want{SHA256: sum}, nil)
		if err == nil {
			defer e.Release()
			if got, _, herr := hashFile(e.Path); herr != nil || got != sum {
				err = fmt.Errorf("cached file has SHA-256 %s (%v), want %s", got, herr, sum)
			}
		}
		patient <- err
	}()
	eventually(t, "two Gets to wait for one download", func() bool { return waiters() == 2 })
	cancel()
	if err := <-impatient; !errors.Is(err, context.Canceled) {
		t.Errorf("the Get that gave up: %v", err)
	}
	eventually(t, "one Get to wait", func() bool { return waiters() == 1 })
	openGate()
	if err := <-patient; err != nil {
		t.Errorf("the Get that waited: %v", err)
	}
	if n := len(srv.requests()); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
}

func TestOtherSHA256IsAnotherAsset(t *testing.T) {
	srv := newAssetServer(t)
	url, oldSum := srv.add(t, "latest.iso", MiB, 130)
	c := newCache(t, Config{})
	old := get(t, c, url, Want{SHA256: oldSum})
	defer old.Release() // a job still runs the old build

	_, newSum := srv.add(t, "latest.iso", MiB, 131)
	fresh := get(t, c, url, Want{SHA256: strings.ToUpper(newSum)})
	defer fresh.Release()
	if fresh.Hit || fresh.Path == old.Path {
		t.Fatalf("new build: %+v, old %+v", fresh, old)
	}
	checkFile(t, fresh.Path, newSum)
	checkFile(t, old.Path, oldSum)
	for _, tc := range []struct {
		want Want
		sum  string
	}{{Want{}, newSum}, {Want{SHA256: oldSum}, oldSum}} {
		e := get(t, c, url, tc.want)
		if !e.Hit || e.SHA256 != tc.sum {
			t.Errorf("get %+v: %+v, want the hit with %s", tc.want, e, tc.sum)
		}
		e.Release()
	}
}

func TestLinkTo(t *testing.T) {
	srv := newAssetServer(t)
	url, sum := srv.add(t, "vars.fd", MiB, 140)
	c := newCache(t, Config{})
	e := get(t, c, url, Want{})
	defer e.Release()
	job := t.TempDir()

	dst := filepath.Join(job, "hdd.qcow2")
	for range 2 { // the second replaces the first
		if err := e.LinkTo(dst); err != nil {
			t.Fatal(err)
		}
	}
	cached, _ := os.Stat(e.Path)
	linked, err := os.Stat(dst)
	if err != nil || !os.SameFile(cached, linked) {
		t.Errorf("%s is not a hard link of %s: %v", dst, e.Path, err)
	}
	if cached.Mode().Perm()&0o222 != 0 {
		t.Errorf("cached file is writable: %v", cached.Mode())
	}

	vars := filepath.Join(job, "vars.fd")
	if err := e.CopyTo(vars); err != nil {
		t.Fatal(err)
	}
	copied, _ := os.Stat(vars)
	if os.SameFile(cached, copied) || copied.Mode().Perm()&0o200 == 0 {
		t.Errorf("copy %v is the cached file or not writable", copied.Mode())
	}
	checkFile(t, vars, sum)

	other, err := os.MkdirTemp("/dev/shm", "jetqa-cache-test")
	if err != nil {
		t.Skip("no other file system at /dev/shm:", err)
	}
	defer os.RemoveAll(other)
	dst = filepath.Join(other, "hdd.qcow2")
	if err := e.LinkTo(dst); err != nil {
		t.Fatalf("across file systems: %v", err)
	}
	checkFile(t, dst, sum)
}

func TestOpenDeletesWhatItCannotTrust(t *testing.T) {
	srv := newAssetServer(t)
	url, sum := srv.add(t, "x.iso", MiB, 150)
	c := newCache(t, Config{})
	e := get(t, c, url, Want{})
	e.Release()
	b, err := os.ReadFile(e.Path + sidecarSuffix)
	if err != nil {
		t.Fatal(err)
	}
	var meta sidecar
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	if meta.Key != "url:"+url || meta.SHA256 != sum || meta.Size != MiB || meta.Source != url {
		t.Errorf("sidecar %s", b)
	}
	// A file without its sidecar (a crash between rename and sidecar) and
	// stray temp files are deleted when the cache opens; other files stay.
	if err := os.Remove(e.Path + sidecarSuffix); err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(c.cfg.Dir, "x.iso.entry.tmp")
	mine := filepath.Join(c.cfg.Dir, "README")
	for _, p := range []string{stray, mine} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	newCache(t, Config{Dir: c.cfg.Dir})
	for p, kept := range map[string]bool{e.Path: false, stray: false, mine: true} {
		if _, err := os.Stat(p); (err == nil) != kept {
			t.Errorf("%s: kept %v, want %v", p, err == nil, kept)
		}
	}
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		in           string
		start, total int64
		ok           bool
	}{
		{"bytes 0-99/100", 0, 100, true},
		{"bytes 100-199/1000", 100, 1000, true},
		{"bytes 5-9/*", 5, -1, true},
		{"bytes */1000", -1, 1000, true},
		{"", 0, 0, false},
		{"bytes 5-9", 0, 0, false},
		{"items 0-1/2", 0, 0, false},
		{"bytes -5-9/10", 0, 0, false},
		{"bytes x-9/10", 0, 0, false},
		{"bytes 0-9/-1", 0, 0, false},
	} {
		start, total, ok := parseContentRange(tc.in)
		if ok != tc.ok || ok && (start != tc.start || total != tc.total) {
			t.Errorf("parseContentRange(%q) = %d, %d, %v; want %d, %d, %v", tc.in, start, total, ok, tc.start, tc.total, tc.ok)
		}
	}
}

func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-99/100", "bytes */5", "bytes 1-2/*", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		start, total, ok := parseContentRange(s)
		if ok && (start < -1 || total < -1) {
			t.Errorf("parseContentRange(%q) = %d, %d", s, start, total)
		}
	})
}

func TestBaseName(t *testing.T) {
	for in, want := range map[string]string{
		"http://h/iso/openSUSE-Tumbleweed-DVD-x86_64.iso?x=1#y": "openSUSE-Tumbleweed-DVD-x86_64.iso",
		"http://h/dir/":                        "dir",
		"http://h/a b/ü.qcow2":                 "__.qcow2",
		"http://h/../..":                       "asset",
		"http://h/resumed.part":                "resumed.part_",
		"sle-15-SP6.x86_64.qcow2":              "sle-15-SP6.x86_64.qcow2",
		"http://h/.hidden.entry":               "hidden.entry_",
		"http://h/" + strings.Repeat("x", 100): strings.Repeat("x", 80),
	} {
		if got := baseName(in); got != want {
			t.Errorf("baseName(%q) = %q, want %q", in, got, want)
		}
	}
}

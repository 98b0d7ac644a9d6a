package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"jetqa/schemas"
	"jetqa/stages/fetch/cache"
	"jetqa/streams"
)

// fetchAsset brings one asset of a job into the host's cache, verified by
// SHA-256 when the job (<SETTING>_SHA256) or the asset's registration gives
// one, and links it into the job's asset directory. The cache entry stays in
// use, and so is never evicted, until the job finishes.
func (s *Stage) fetchAsset(ctx context.Context, job int64, worker schemas.WorkerRef, setting, source, wantSHA, assetsDir string) (schemas.AssetFetched, error) {
	a := schemas.AssetFetched{Worker: worker, Setting: setting, Source: source}
	src, want, err := s.source(ctx, setting, source, wantSHA)
	if err != nil {
		return a, err
	}
	e, err := s.cache.Get(ctx, src, want, s.reporter(ctx, job, worker, setting, source))
	s.publishCacheStatus(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return a, err
		}
		return a, jobError("asset %s=%s: %v", setting, source, err)
	}
	s.hold(ctx, job, e)
	dst := filepath.Join(assetsDir, setting+"-"+filepath.Base(strings.TrimSuffix(src.String(), "/")))
	place := e.LinkTo
	if setting == "UEFI_PFLASH_VARS" {
		place = e.CopyTo // the VM writes its UEFI variables: a copy of its own
	}
	if err := place(dst); err != nil {
		return a, jobError("asset %s=%s: %v", setting, source, err)
	}
	a.Path, a.SHA256, a.Size, a.Cached = dst, e.SHA256, e.Size, e.Hit
	if isHDD(setting) {
		overlay, err := overlayFor(ctx, e.Path, filepath.Join(assetsDir, setting+"-overlay.qcow2"))
		if err != nil {
			return a, jobError("asset %s=%s: %v", setting, source, err)
		}
		a.Path = overlay
	}
	return a, nil
}

func isHDD(setting string) bool { return strings.HasPrefix(setting, "HDD_") }

// overlayFor makes a qcow2 overlay backed by the cached image, so the VM
// writes to the job's overlay and the cached image is never changed.
func overlayFor(ctx context.Context, backing, overlay string) (string, error) {
	format := "raw"
	if f, err := os.Open(backing); err == nil {
		magic := make([]byte, 4)
		if _, err := io.ReadFull(f, magic); err == nil && string(magic) == "QFI\xfb" {
			format = "qcow2"
		}
		f.Close()
	}
	out, err := exec.CommandContext(ctx, "qemu-img", "create", "-q", "-f", "qcow2", "-b", backing, "-F", format, overlay).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("qemu-img create overlay: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return overlay, nil
}

// source says where an asset's bytes come from: an http(s) URL, an asset
// registered on the server (fetched over NATS), or a file on this host (a
// path, or a name in the asset directory).
func (s *Stage) source(ctx context.Context, setting, source, wantSHA string) (cache.Source, cache.Want, error) {
	want := cache.Want{SHA256: strings.ToLower(wantSHA)}
	if isURL(source) {
		return cache.HTTPSource(source, s.cfg.HTTPClient), want, nil
	}
	reg, err := s.registered(ctx, source)
	if err != nil {
		return nil, want, err
	}
	if reg != nil {
		if want.SHA256 != "" && want.SHA256 != reg.SHA256 {
			return nil, want, jobError("asset %s=%s: %s_SHA256 says %s, but the server's asset is registered as %s", setting, source, setting, want.SHA256, reg.SHA256)
		}
		want.SHA256, want.Size = reg.SHA256, reg.Size
		return storeSource{bus: s.bus, reg: reg}, want, nil
	}
	p, err := s.localSource(setting, source)
	if err != nil {
		return nil, want, err
	}
	fi, err := os.Stat(p)
	if err != nil {
		return nil, want, jobError("asset %s=%s: %v", setting, source, err)
	}
	return fileSource{path: p, size: fi.Size(), mod: fi.ModTime()}, want, nil
}

// registered looks a bare asset name up among the assets registered on the
// server; paths and URLs are not names.
func (s *Stage) registered(ctx context.Context, source string) (*schemas.AssetRegistered, error) {
	if isURL(source) || strings.HasPrefix(source, "file://") || filepath.IsAbs(source) {
		return nil, nil
	}
	reg, err := s.bus.LookupAsset(ctx, source)
	if errors.Is(err, streams.ErrNoAsset) {
		return nil, nil
	}
	return reg, err
}

// localSource resolves a path, a file:// URL or a name in the asset
// directory.
func (s *Stage) localSource(setting, source string) (string, error) {
	p := strings.TrimPrefix(source, "file://")
	if !filepath.IsAbs(p) {
		if s.cfg.AssetDir == "" || strings.Contains(p, "..") {
			return "", jobError("asset %s=%s: no asset of that name is registered (jetqa asset add), and it is not an absolute path or URL", setting, source)
		}
		p = filepath.Join(s.cfg.AssetDir, p)
	}
	if filepath.IsAbs(strings.TrimPrefix(source, "file://")) {
		if err := s.mayRead(p); err != nil {
			return "", jobError("asset %s=%s: %v", setting, source, err)
		}
	}
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		if !filepath.IsAbs(strings.TrimPrefix(source, "file://")) {
			return "", jobError("asset %s=%s: no asset of that name is registered (register it with `jetqa asset add`), nor is it in %s", setting, source, s.cfg.AssetDir)
		}
		return "", jobError("asset %s=%s: %s does not exist: give an existing path or an http(s) URL", setting, source, p)
	}
	if err != nil {
		return "", jobError("asset %s=%s: %v", setting, source, err)
	}
	if !fi.Mode().IsRegular() {
		return "", jobError("asset %s=%s: %s is not a regular file", setting, source, p)
	}
	return p, nil
}

// mayRead says whether a job may name the host's file at path p: it must
// be inside AssetDir or one of AssetPaths once links are followed. It
// says nothing of whether the file exists outside them.
func (s *Stage) mayRead(p string) error {
	allowed := append([]string{s.cfg.AssetDir}, s.cfg.AssetPaths...)
	real, err := filepath.EvalSymlinks(p)
	if errors.Is(err, fs.ErrNotExist) {
		real = filepath.Clean(p) // told as missing once allowed
	} else if err != nil {
		real = ""
	}
	for _, dir := range allowed {
		if dir == "" {
			continue
		}
		if d, err := filepath.EvalSymlinks(dir); err == nil {
			dir = d
		}
		if rel, err := filepath.Rel(dir, real); real != "" && err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && !filepath.IsAbs(rel) {
			return nil
		}
	}
	return fmt.Errorf("this worker lets jobs name files by path only inside %s (jetqa worker --asset-paths): register the file with `jetqa asset add`, or give an http(s) URL", strings.Join(slices.DeleteFunc(allowed, func(d string) bool { return d == "" }), ", "))
}

// storeSource is an asset registered on the server: its bytes come from
// the object store over the worker's NATS connection.
type storeSource struct {
	bus Bus
	reg *schemas.AssetRegistered
}

func (s storeSource) Key() string    { return "obj:" + s.reg.Name + "@" + s.reg.SHA256 }
func (s storeSource) String() string { return s.reg.Name }

func (s storeSource) Open(ctx context.Context, offset int64) (io.ReadCloser, int64, error) {
	r, size, err := s.bus.OpenBlobAt(ctx, streams.BucketAssets, s.reg.Name, offset)
	if errors.Is(err, streams.ErrBlobNotFound) {
		return nil, 0, cache.Permanent(fmt.Errorf("registered, but its bytes are missing from the server's asset store: %w", err))
	}
	return r, size, err
}

// fileSource is a file on the worker host; its key changes with its size
// and modification time, so a replaced file is fetched again.
type fileSource struct {
	path string
	size int64
	mod  time.Time
}

func (f fileSource) Key() string {
	return fmt.Sprintf("file:%s@%d-%d", f.path, f.size, f.mod.UnixNano())
}
func (f fileSource) String() string { return f.path }

func (f fileSource) Open(_ context.Context, offset int64) (io.ReadCloser, int64, error) {
	file, err := os.Open(f.path)
	if err != nil {
		return nil, 0, cache.Permanent(err)
	}
	if _, err := file.Seek(offset, io.SeekStart); err != nil {
		file.Close()
		return nil, 0, err
	}
	return file, f.size, nil
}

// reporter sends download progress events, a few a second at most.
func (s *Stage) reporter(ctx context.Context, job int64, worker schemas.WorkerRef, setting, source string) cache.Progress {
	var mu sync.Mutex
	var last time.Time
	return func(done, total int64) {
		mu.Lock()
		finished := total >= 0 && done >= total
		if !finished && time.Since(last) < 500*time.Millisecond {
			mu.Unlock()
			return
		}
		last = time.Now()
		mu.Unlock()
		_, _ = s.bus.Append(ctx, 0, schemas.AssetProgress{Worker: worker, Job: job, Setting: setting, Source: source, Done: done, Total: total})
	}
}

// hold keeps a job's cache entries in use until the job finishes: the
// first entry a job holds starts the wait for its end.
func (s *Stage) hold(ctx context.Context, job int64, e *cache.Entry) {
	s.heldMu.Lock()
	defer s.heldMu.Unlock()
	if h := s.held[job]; h != nil {
		h.entries = append(h.entries, e)
		return
	}
	ctx, stop := context.WithCancel(ctx)
	s.held[job] = &heldJob{entries: []*cache.Entry{e}, stop: stop}
	go func() {
		if err := s.bus.OnJobEvent(ctx, job, "finished", func() { s.release(job) }); err != nil {
			s.log.Warn("following the end of a job; the sweep releases its assets", "job", job, "err", err)
		}
	}()
}

// release lets the cache evict a finished job's assets again.
func (s *Stage) release(job int64) {
	s.heldMu.Lock()
	h := s.held[job]
	delete(s.held, job)
	s.heldMu.Unlock()
	if h == nil {
		return
	}
	h.stop()
	for _, e := range h.entries {
		e.Release()
	}
}

// publishCacheStatus sends a snapshot of the cache for `jetqa cache status`.
func (s *Stage) publishCacheStatus(ctx context.Context) {
	st := s.cache.Status()
	cs := schemas.CacheStatus{
		Host: s.cfg.Host, Dir: st.Dir, LimitBytes: st.LimitBytes, TotalBytes: st.TotalBytes, PartialBytes: st.PartialBytes,
		Hits: st.Hits, Misses: st.Misses, Downloads: st.Downloads, BytesFetched: st.BytesDownloaded,
	}
	for _, e := range st.Entries {
		cs.Entries = append(cs.Entries, schemas.CachedAsset{Source: e.Source, SHA256: e.SHA256, Size: e.Size, LastUse: e.LastUse, Users: e.Users})
	}
	if _, err := s.bus.Append(ctx, 0, cs); err != nil && ctx.Err() == nil {
		s.log.Warn("cache status not sent", "err", err)
	}
}

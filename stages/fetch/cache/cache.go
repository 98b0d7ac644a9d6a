// Package cache is the asset cache of a worker host: the fetch stage gets
// each job's ISOs, disk images and kernels through it, verified by
// SHA-256, and links them into the job's directory. The worker instances
// of the host share one cache; it keeps itself under its size limit by
// evicting what was least recently used and no job is using.
package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Config of the cache of one worker host. The names in parentheses are
// openQA's workers.ini settings that mean the same.
type Config struct {
	// Dir holds the cached assets (CACHEDIRECTORY). The cache owns it.
	Dir string
	// LimitBytes bounds the size of the cache, downloads in progress
	// included (CACHELIMIT); default 50 GiB.
	LimitBytes int64
	// Workers is how many downloads run at once (CACHEWORKERS); default 5.
	Workers int
	// Retries is how many times a transfer that failed without receiving
	// anything is tried again; a transfer that made progress starts the
	// count afresh. Default 5; negative for none.
	Retries int
	// Backoff is the first pause before a retry; it doubles for each
	// further one, up to 30 s. Default 200 ms.
	Backoff time.Duration
	// StallTimeout cuts a transfer that received nothing for so long, so
	// that it is resumed instead of hanging; default 1 minute.
	StallTimeout time.Duration
	// VerifyOnHit re-hashes an entry each time it is served, instead of
	// only checking its size (and re-hashing once after a reboot).
	VerifyOnHit bool
	// Log gets a line for each download, retry and dropped entry.
	Log *slog.Logger
}

const maxBackoff = 30 * time.Second

func (c Config) withDefaults() Config {
	if c.LimitBytes == 0 {
		c.LimitBytes = 50 << 30
	}
	if c.Workers == 0 {
		c.Workers = 5
	}
	if c.Retries == 0 {
		c.Retries = 5
	}
	if c.Retries < 0 {
		c.Retries = 0
	}
	if c.Backoff == 0 {
		c.Backoff = 200 * time.Millisecond
	}
	if c.StallTimeout == 0 {
		c.StallTimeout = time.Minute
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.Dir == "":
		return errors.New("cache: no directory (CACHEDIRECTORY)")
	case c.LimitBytes < 0:
		return fmt.Errorf("cache: negative limit (CACHELIMIT) %d", c.LimitBytes)
	case c.Workers < 0:
		return fmt.Errorf("cache: negative number of download workers (CACHEWORKERS) %d", c.Workers)
	}
	return nil
}

// Errors that callers branch on. Each error returned by Get also names the
// asset.
var (
	// ErrTooLarge: the asset can never fit under the limit.
	ErrTooLarge = errors.New("larger than the cache limit")
	// ErrCacheFull: no room can be made because what fills the cache is in
	// use by running jobs; trying again after they end may succeed.
	ErrCacheFull = errors.New("cache full of assets in use")
	// ErrChecksum: the bytes do not have the SHA-256 (or size) asked for,
	// also after downloading them again from the start.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrCorrupt: a cached file no longer has the size or SHA-256 it was
	// stored with; it was dropped.
	ErrCorrupt = errors.New("cached file corrupt")
)

// Want is what the caller knows of an asset beforehand.
type Want struct {
	// SHA256, when given, is verified; a cached copy with another one is
	// another asset.
	SHA256 string
	// Size, when given, is checked before downloading and after.
	Size int64
}

// Progress is told how much of a download is done: total is -1 while the
// size is unknown. It is called from the downloading goroutine.
type Progress func(done, total int64)

// Cache is the asset cache of a worker host; it is safe for concurrent use
// by the host's worker instances. Only one Cache may use a directory at a
// time.
type Cache struct {
	cfg   Config
	boot  string
	slots chan struct{} // one per running download

	bytesDownloaded atomic.Int64

	mu       sync.Mutex
	byKey    map[string][]*entry // newest stored last
	parts    map[string]idlePart // .part files no download is using, by name
	flights  map[string]*flight  // by key
	stored   int64               // sizes of the entries
	partial  int64               // sizes of the idle parts
	reserved int64               // room held by downloads in progress
	hits     int64
	misses   int64
	started  int64 // downloads
}

type entry struct {
	sidecar
	path    string
	lastUse time.Time // guarded by Cache.mu
	users   int       // unreleased Entry handles; guarded by Cache.mu
	dropped bool      // guarded by Cache.mu

	// trusted: the size check suffices; otherwise the next hit re-hashes.
	trusted  atomic.Bool
	verifyMu sync.Mutex
}

type idlePart struct {
	size    int64
	modTime time.Time
}

// Open opens the cache in cfg.Dir, creating the directory if needed, and
// rebuilds its index from the sidecars there: entries whose file is
// missing or has another size are deleted, as are files without a sidecar
// and temp files; .part files stay to be resumed (or evicted first).
func Open(cfg Config) (*Cache, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	c := &Cache{
		cfg:     cfg,
		boot:    bootID(),
		slots:   make(chan struct{}, cfg.Workers),
		byKey:   map[string][]*entry{},
		parts:   map[string]idlePart{},
		flights: map[string]*flight{},
	}
	if err := c.load(); err != nil {
		return nil, fmt.Errorf("cache %s: %w", cfg.Dir, err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	// The limit may have been lowered since the last run.
	if err := c.makeRoom(0); err != nil {
		return nil, fmt.Errorf("cache %s: %w", cfg.Dir, err)
	}
	return c, nil
}

func (c *Cache) load() error {
	des, err := os.ReadDir(c.cfg.Dir)
	if err != nil {
		return err
	}
	names := map[string]bool{}
	for _, de := range des {
		if de.Type().IsRegular() || de.Type()&fs.ModeSymlink != 0 {
			names[de.Name()] = true
		}
	}
	referenced := map[string]bool{}
	for name := range names {
		switch {
		case strings.HasSuffix(name, tempSuffix):
			c.remove(name)
		case strings.HasSuffix(name, partSuffix):
			fi, err := os.Lstat(filepath.Join(c.cfg.Dir, name))
			if err != nil || !fi.Mode().IsRegular() {
				c.remove(name)
				continue
			}
			c.parts[name] = idlePart{size: fi.Size(), modTime: fi.ModTime()}
			c.partial += fi.Size()
		case strings.HasSuffix(name, sidecarSuffix):
			data := strings.TrimSuffix(name, sidecarSuffix)
			path := filepath.Join(c.cfg.Dir, data)
			meta, lastUse, err := readSidecar(path)
			if err == nil {
				var fi fs.FileInfo
				fi, err = os.Lstat(path)
				if err == nil && (!fi.Mode().IsRegular() || fi.Size() != meta.Size) {
					err = fmt.Errorf("%w: file is %d bytes, %d when stored", ErrCorrupt, fi.Size(), meta.Size)
				}
			}
			if err != nil {
				c.cfg.Log.Warn("dropping cache entry", "file", data, "why", err)
				c.remove(name)
				c.remove(data)
				continue
			}
			referenced[data] = true
			e := &entry{sidecar: meta, path: path, lastUse: lastUse}
			e.trusted.Store(meta.Durable || c.boot != "" && meta.Boot == c.boot)
			c.insert(e)
		}
	}
	for name := range names {
		if dataFile.MatchString(name) && !ourSuffix(name) && !referenced[name] {
			c.cfg.Log.Warn("deleting cached file without a sidecar", "file", name)
			c.remove(name)
		}
	}
	return nil
}

// remove deletes a file of the cache directory; it may be gone already.
func (c *Cache) remove(name string) {
	if err := os.Remove(filepath.Join(c.cfg.Dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.cfg.Log.Warn("cannot delete from the cache", "file", name, "err", err)
	}
}

// insert adds e to the index, replacing an entry with the same file.
// c.mu is held (or c is not shared yet).
func (c *Cache) insert(e *entry) {
	if i := slices.IndexFunc(c.byKey[e.Key], func(old *entry) bool { return old.path == e.path }); i >= 0 {
		c.unindex(c.byKey[e.Key][i])
	}
	c.byKey[e.Key] = append(c.byKey[e.Key], e)
	c.stored += e.Size
}

// unindex takes e out of the index; its files are the caller's to delete.
func (c *Cache) unindex(e *entry) {
	if e.dropped {
		return
	}
	e.dropped = true
	c.stored -= e.Size
	list := slices.DeleteFunc(c.byKey[e.Key], func(x *entry) bool { return x == e })
	if len(list) == 0 {
		delete(c.byKey, e.Key)
	} else {
		c.byKey[e.Key] = list
	}
}

// drop takes e out of the index and deletes its files. c.mu is held.
func (c *Cache) drop(e *entry) {
	if e.dropped {
		// Its file name may belong to a newer entry by now.
		return
	}
	c.unindex(e)
	c.remove(filepath.Base(e.path) + sidecarSuffix)
	c.remove(filepath.Base(e.path))
}

// lookup finds the newest entry of key that satisfies want. c.mu is held.
func (c *Cache) lookup(key string, want Want) *entry {
	list := c.byKey[key]
	for i := len(list) - 1; i >= 0; i-- {
		e := list[i]
		if (want.SHA256 == "" || e.SHA256 == want.SHA256) && (want.Size <= 0 || e.Size == want.Size) {
			return e
		}
	}
	return nil
}

// Get returns the asset of src, from the cache or downloaded into it
// (with at most Config.Workers downloads at once). Concurrent Gets of the
// same asset share one download, and its result. The entry stays in the
// cache at least until it is released.
func (c *Cache) Get(ctx context.Context, src Source, want Want, progress Progress) (*Entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("asset %s: %w", src, err)
	}
	want.SHA256 = strings.ToLower(want.SHA256)
	if want.SHA256 != "" && !isSHA256(want.SHA256) {
		return nil, Permanent(fmt.Errorf("asset %s: %q is not a SHA-256", src, want.SHA256))
	}
	if want.Size > c.cfg.LimitBytes {
		return nil, c.tooLarge(src, want.Size)
	}
	key := src.Key()
	for {
		c.mu.Lock()
		if e := c.lookup(key, want); e != nil {
			e.users++
			c.mu.Unlock()
			if err := c.check(e); err != nil {
				c.cfg.Log.Warn("dropping cache entry", "asset", src.String(), "file", e.path, "why", err)
				c.mu.Lock()
				e.users--
				c.drop(e)
				c.mu.Unlock()
				continue
			}
			now := time.Now()
			c.mu.Lock()
			c.hits++
			e.lastUse = now
			c.mu.Unlock()
			c.touch(e, now)
			if progress != nil {
				progress(e.Size, e.Size)
			}
			return &Entry{Path: e.path, SHA256: e.SHA256, Size: e.Size, Hit: true, c: c, e: e}, nil
		}
		if f := c.flights[key]; f != nil {
			if f.want != want || f.abandoned {
				// Another download of the key, for other bytes, or
				// one being stopped: look again once it is over.
				c.mu.Unlock()
				select {
				case <-f.ended:
					continue
				case <-ctx.Done():
					return nil, fmt.Errorf("asset %s: %w", src, ctx.Err())
				}
			}
			c.misses++
			f.waiters++
			id := f.listen(progress)
			c.mu.Unlock()
			return c.await(ctx, f, id, progress)
		}
		c.misses++
		c.started++
		f := c.startFlight(src, want)
		f.waiters++
		id := f.listen(progress)
		c.mu.Unlock()
		return c.await(ctx, f, id, progress)
	}
}

// check makes sure a cached file still is what it was stored as: always
// its size, and its SHA-256 when so configured or first after a reboot.
func (c *Cache) check(e *entry) error {
	if err := checkSize(e); err != nil {
		return err
	}
	if !c.cfg.VerifyOnHit && e.trusted.Load() {
		return nil
	}
	return c.rehash(e, !c.cfg.VerifyOnHit)
}

func checkSize(e *entry) error {
	fi, err := os.Lstat(e.path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() != e.Size {
		return fmt.Errorf("%w: file is %d bytes, %d when stored", ErrCorrupt, fi.Size(), e.Size)
	}
	return nil
}

// rehash hashes e's file again and compares with its sidecar, unless
// onlyUntrusted and another Get did so meanwhile. An entry of an earlier
// boot that passes is marked durable.
func (c *Cache) rehash(e *entry, onlyUntrusted bool) error {
	e.verifyMu.Lock()
	defer e.verifyMu.Unlock()
	if onlyUntrusted && e.trusted.Load() {
		return nil
	}
	sum, n, err := hashFile(e.path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	if n != e.Size || sum != e.SHA256 {
		return fmt.Errorf("%w: file has SHA-256 %s (%d bytes), %s (%d bytes) when stored", ErrCorrupt, sum, n, e.SHA256, e.Size)
	}
	if !e.trusted.Load() {
		e.trusted.Store(true)
		if !e.Durable {
			meta := e.sidecar
			meta.Durable = true
			c.mu.Lock()
			lastUse := e.lastUse
			c.mu.Unlock()
			if err := writeSidecar(e.path, meta, lastUse); err != nil {
				c.cfg.Log.Warn("cannot mark cache entry durable", "file", e.path, "err", err)
			}
		}
	}
	return nil
}

// touch records the last use in the sidecar's modification time.
func (c *Cache) touch(e *entry, t time.Time) {
	if err := os.Chtimes(e.path+sidecarSuffix, t, t); err != nil && !errors.Is(err, fs.ErrNotExist) {
		c.cfg.Log.Warn("cannot record the last use of a cache entry", "file", e.path, "err", err)
	}
}

// Verify re-hashes the cached copies of the asset named key. A copy whose
// bytes are not those it was stored with is dropped, and the error
// (ErrCorrupt) says which.
func (c *Cache) Verify(ctx context.Context, key string) error {
	c.mu.Lock()
	list := slices.Clone(c.byKey[key])
	for _, e := range list {
		e.users++
	}
	c.mu.Unlock()
	var errs []error
	for _, e := range list {
		err := ctx.Err()
		if err == nil {
			if err = checkSize(e); err == nil {
				err = c.rehash(e, false)
			}
		}
		c.mu.Lock()
		e.users--
		if errors.Is(err, ErrCorrupt) {
			c.drop(e)
		}
		c.mu.Unlock()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s (%s): %w", e.Source, filepath.Base(e.path), err))
		}
	}
	return errors.Join(errs...)
}

// Entry is an asset in the cache, held for a job until it is released.
type Entry struct {
	// Path is the cached file. It is read-only: give a job a link
	// (LinkTo) and write only to an overlay or a copy.
	Path   string
	SHA256 string
	Size   int64
	// Hit is true when the asset was in the cache already.
	Hit bool

	c    *Cache
	e    *entry
	once sync.Once
}

// Release says the job no longer uses the entry; it may be evicted from
// then on. Releasing twice is harmless.
func (e *Entry) Release() {
	e.once.Do(func() {
		now := time.Now()
		e.c.mu.Lock()
		e.e.users--
		e.e.lastUse = now
		dropped := e.e.dropped
		e.c.mu.Unlock()
		if !dropped {
			e.c.touch(e.e, now)
		}
	})
}

// LinkTo puts the asset at dst (replacing what is there) as a hard link,
// or as a copy when dst is on another file system. Link before Release:
// after it, the entry may be evicted; the link stays valid.
func (e *Entry) LinkTo(dst string) error {
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+tempSuffix)
	os.Remove(tmp)
	err := os.Link(e.Path, tmp)
	if errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EMLINK) {
		return e.CopyTo(dst)
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("link %s to %s: %w", e.Path, dst, err)
	}
	return nil
}

// CopyTo puts a writable copy of the asset at dst (replacing what is
// there), for a job that writes to it, like UEFI firmware variables.
func (e *Entry) CopyTo(dst string) error {
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+tempSuffix)
	err := copyFile(e.Path, tmp)
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("copy %s to %s: %w", e.Path, dst, err)
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	// io.Copy between files lets the kernel copy (copy_file_range).
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Status is a snapshot of the cache, for `jetqa cache status`.
type Status struct {
	Dir        string
	LimitBytes int64
	// TotalBytes is the size of the entries; PartialBytes of the .part
	// files of interrupted downloads, resumed when asked for again.
	TotalBytes   int64
	PartialBytes int64
	// Entries, most recently used first.
	Entries []EntryStatus
	// Downloading lists the downloads in progress or waiting for a worker.
	Downloading []Transfer
	// Hits and Misses count Gets; Downloads the downloads they started.
	Hits, Misses, Downloads int64
	BytesDownloaded         int64
}

// EntryStatus describes one cached asset.
type EntryStatus struct {
	Key, Source, Path, SHA256 string
	Size                      int64
	LastUse                   time.Time
	// Users is how many jobs hold the entry; it is not evicted while >0.
	Users int
}

// Transfer describes one download.
type Transfer struct {
	Key, Source string
	Done, Total int64
	// Waiters is how many Gets wait for it.
	Waiters int
	// Queued: waiting for one of the Config.Workers.
	Queued bool
}

// Status returns a snapshot of the cache.
func (c *Cache) Status() Status {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Status{
		Dir:             c.cfg.Dir,
		LimitBytes:      c.cfg.LimitBytes,
		TotalBytes:      c.stored,
		PartialBytes:    c.partial,
		Hits:            c.hits,
		Misses:          c.misses,
		Downloads:       c.started,
		BytesDownloaded: c.bytesDownloaded.Load(),
	}
	for _, list := range c.byKey {
		for _, e := range list {
			s.Entries = append(s.Entries, EntryStatus{Key: e.Key, Source: e.Source, Path: e.path, SHA256: e.SHA256, Size: e.Size, LastUse: e.lastUse, Users: e.users})
		}
	}
	slices.SortFunc(s.Entries, func(a, b EntryStatus) int { return b.LastUse.Compare(a.LastUse) })
	for _, f := range c.flights {
		s.Downloading = append(s.Downloading, Transfer{Key: f.key, Source: f.src.String(), Done: f.progressDone.Load(), Total: f.progressTotal.Load(), Waiters: f.waiters, Queued: f.queued.Load()})
	}
	slices.SortFunc(s.Downloading, func(a, b Transfer) int { return strings.Compare(a.Key, b.Key) })
	return s
}

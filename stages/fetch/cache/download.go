package cache

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// flight is one download, shared by all Gets of its key that want the
// same bytes.
type flight struct {
	key    string
	src    Source
	want   Want
	part   string // name of the .part file
	cancel context.CancelFunc
	ended  chan struct{} // closed, with Cache.mu held, when the flight is over

	// Guarded by Cache.mu.
	over      bool
	abandoned bool // all waiters gave up: it is being stopped
	waiters   int
	reserved  int64
	entry     *entry // one user per waiter at the end
	err       error

	pmu      sync.Mutex
	progress map[int]Progress
	nextID   int

	progressDone, progressTotal atomic.Int64
	queued                      atomic.Bool
}

// startFlight starts downloading src. c.mu is held.
func (c *Cache) startFlight(src Source, want Want) *flight {
	ctx, cancel := context.WithCancel(context.Background())
	f := &flight{
		key:      src.Key(),
		src:      src,
		want:     want,
		part:     partName(src.Key(), src.String()),
		cancel:   cancel,
		ended:    make(chan struct{}),
		progress: map[int]Progress{},
	}
	f.progressTotal.Store(-1)
	f.queued.Store(true)
	// A .part left by an earlier try is this download's now: its room
	// is held for it.
	if p, ok := c.parts[f.part]; ok {
		delete(c.parts, f.part)
		c.partial -= p.size
		c.reserved += p.size
		f.reserved = p.size
	}
	c.flights[f.key] = f
	go c.run(ctx, f)
	return f
}

// listen adds p to those told about the progress of f.
func (f *flight) listen(p Progress) int {
	f.pmu.Lock()
	defer f.pmu.Unlock()
	f.nextID++
	if p != nil {
		f.progress[f.nextID] = p
	}
	return f.nextID
}

func (f *flight) leave(id int) {
	f.pmu.Lock()
	defer f.pmu.Unlock()
	delete(f.progress, id)
}

func (f *flight) report(done, total int64) {
	f.progressDone.Store(done)
	f.pmu.Lock()
	listeners := make([]Progress, 0, len(f.progress))
	for _, p := range f.progress {
		listeners = append(listeners, p)
	}
	f.pmu.Unlock()
	// Without the lock: a listener may ask the cache for its status.
	for _, p := range listeners {
		p(done, total)
	}
}

// await waits for f to end. A waiter that gives up leaves the download
// running for the others; the last one to give up stops it, and its .part
// stays to be resumed.
func (c *Cache) await(ctx context.Context, f *flight, id int, progress Progress) (*Entry, error) {
	select {
	case <-f.ended:
	case <-ctx.Done():
		f.leave(id)
		c.mu.Lock()
		over := f.over
		if !over {
			f.waiters--
			if f.waiters == 0 {
				f.abandoned = true
				f.cancel()
			}
		}
		c.mu.Unlock()
		if over && f.err == nil {
			// The flight counted this waiter as a user.
			(&Entry{c: c, e: f.entry}).Release()
		}
		return nil, fmt.Errorf("asset %s: %w", f.src, ctx.Err())
	}
	if f.err != nil {
		return nil, f.err
	}
	e := f.entry
	if progress != nil {
		// Also to a waiter that joined after the last report.
		f.leave(id)
		progress(e.Size, e.Size)
	}
	return &Entry{Path: e.path, SHA256: e.SHA256, Size: e.Size, c: c, e: e}, nil
}

// run downloads f and publishes the result to its waiters.
func (c *Cache) run(ctx context.Context, f *flight) {
	defer f.cancel()
	start := time.Now()
	e, err := c.download(ctx, f)
	var part idlePart
	hasPart := false
	if err != nil {
		if ctx.Err() != nil {
			c.cfg.Log.Info("download stopped: nobody waits for it any more", "asset", f.src.String())
		} else {
			c.cfg.Log.Warn("download failed", "asset", f.src.String(), "err", err)
		}
		fi, serr := os.Lstat(filepath.Join(c.cfg.Dir, f.part))
		switch {
		case serr == nil && fi.Mode().IsRegular() && fi.Size() > 0:
			part, hasPart = idlePart{size: fi.Size(), modTime: fi.ModTime()}, true
		case serr == nil:
			c.remove(f.part)
		}
	} else {
		c.cfg.Log.Info("downloaded", "asset", f.src.String(), "bytes", e.Size, "sha256", e.SHA256, "took", time.Since(start).Round(time.Millisecond))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.flights, f.key)
	c.reserved -= f.reserved
	f.reserved = 0
	if err == nil {
		c.insert(e)
		e.users = f.waiters
	} else if hasPart {
		c.parts[f.part] = part
		c.partial += part.size
	}
	f.over = true
	f.entry, f.err = e, err
	close(f.ended)
}

// fromScratch is how many times a download whose bytes do not match is
// done again from the start before giving up.
const fromScratch = 2

func (c *Cache) download(ctx context.Context, f *flight) (*entry, error) {
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("asset %s: %w", f.src, ctx.Err())
	}
	defer func() { <-c.slots }()
	f.queued.Store(false)
	if f.want.Size > 0 {
		if err := c.reserve(f, f.want.Size); err != nil {
			return nil, err
		}
	}
	part := filepath.Join(c.cfg.Dir, f.part)
	for round := 0; ; round++ {
		sum, size, err := c.transfer(ctx, f, part)
		if err != nil {
			return nil, err
		}
		if (f.want.SHA256 == "" || sum == f.want.SHA256) && (f.want.Size <= 0 || size == f.want.Size) {
			return c.commit(f, part, sum, size)
		}
		os.Remove(part)
		var expected []string
		if f.want.SHA256 != "" {
			expected = append(expected, "SHA-256 "+f.want.SHA256)
		}
		if f.want.Size > 0 {
			expected = append(expected, strconv.FormatInt(f.want.Size, 10)+" bytes")
		}
		err = kindError{ErrChecksum, fmt.Sprintf("asset %s: expected %s, got SHA-256 %s, %d bytes", f.src, strings.Join(expected, ", "), sum, size)}
		if round == fromScratch {
			return nil, Permanent(fmt.Errorf("%w (downloaded %d times)", err, round+1))
		}
		c.cfg.Log.Warn("discarding a download that does not match; downloading it again", "asset", f.src.String(), "err", err)
	}
}

// transfer completes the .part file, continuing what it holds, and
// returns its SHA-256 and size. A failed transfer leaves the .part to
// be resumed, unless trying again cannot help.
func (c *Cache) transfer(ctx context.Context, f *flight, part string) (string, int64, error) {
	file, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return "", 0, c.diskError(f, err)
	}
	defer file.Close()
	discard := func(err error) (string, int64, error) {
		file.Close()
		os.Remove(part)
		return "", 0, err
	}
	hs := newHasher()
	defer hs.close()
	// What a .part holds was written by an earlier try, maybe by another
	// process: hash it again rather than trust a saved hash state.
	fi, err := file.Stat()
	if err != nil {
		return discard(c.diskError(f, err))
	}
	offset, err := hs.addFile(file, fi.Size())
	if err != nil {
		return discard(c.diskError(f, err))
	}
	if _, err := file.Seek(offset, io.SeekStart); err != nil {
		return discard(c.diskError(f, err))
	}
	if offset > 0 {
		c.cfg.Log.Info("resuming download", "asset", f.src.String(), "from", offset)
	}
	furthest, failures := offset, 0
	for {
		n, err := c.attempt(ctx, f, file, hs, offset)
		offset += n
		if err == nil {
			if err := file.Close(); err != nil {
				return discard(c.diskError(f, err))
			}
			return hs.sum(), offset, nil
		}
		var disk diskError
		switch {
		case ctx.Err() != nil:
			return "", 0, fmt.Errorf("asset %s: %w", f.src, ctx.Err())
		case errors.As(err, &disk):
			return discard(err)
		case errors.Is(err, ErrPermanent):
			return discard(nameAsset(f.src, err))
		case errors.Is(err, ErrCacheFull):
			return "", 0, err
		case errors.Is(err, ErrNoResume) && offset > 0:
			c.cfg.Log.Info("download cannot resume; starting again from 0", "asset", f.src.String(), "why", err)
			if err := file.Truncate(0); err != nil {
				return discard(c.diskError(f, err))
			}
			if _, err := file.Seek(0, io.SeekStart); err != nil {
				return discard(c.diskError(f, err))
			}
			hs.reset()
			offset = 0
			continue
		}
		if offset > furthest {
			furthest, failures = offset, 0
		}
		failures++
		if failures > c.cfg.Retries {
			tries := "once"
			if failures > 1 {
				tries = strconv.Itoa(failures) + " times in a row"
			}
			return "", 0, nameAsset(f.src, fmt.Errorf("download failed %s at byte %d, giving up: %w", tries, offset, err))
		}
		wait := c.backoff(failures)
		c.cfg.Log.Warn("download interrupted; retrying", "asset", f.src.String(), "at", offset, "in", wait.Round(time.Millisecond), "err", err)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return "", 0, fmt.Errorf("asset %s: %w", f.src, ctx.Err())
		}
	}
}

// attempt asks the source once for the bytes from offset on and appends
// them to w and hs; it returns how many it appended.
func (c *Cache) attempt(ctx context.Context, f *flight, w io.Writer, hs *hasher, offset int64) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rc, total, err := f.src.Open(ctx, offset)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	held := offset
	if total >= 0 {
		switch {
		case total > c.cfg.LimitBytes:
			return 0, c.tooLarge(f.src, total)
		case f.want.Size > 0 && total != f.want.Size:
			return 0, Permanent(kindError{ErrChecksum, fmt.Sprintf("asset %s is %d bytes, expected %d", f.src, total, f.want.Size)})
		case total < offset:
			return 0, fmt.Errorf("asset is %d bytes, %d are downloaded already: %w", total, offset, ErrNoResume)
		}
		if err := c.reserve(f, total); err != nil {
			return 0, err
		}
		held = total
		f.progressTotal.Store(total)
	}
	// A connection that delivers nothing for StallTimeout is cut, so that
	// the download resumes instead of hanging.
	var stalled atomic.Bool
	stall := time.AfterFunc(c.cfg.StallTimeout, func() { stalled.Store(true); cancel() })
	defer stall.Stop()
	var n int64
	for {
		buf := hs.buffer()
		m, rerr := c.fill(rc, buf, stall)
		if m == 0 {
			hs.giveBack(buf)
		} else {
			end := offset + n + int64(m)
			if total >= 0 && end > total {
				hs.giveBack(buf)
				return n, fmt.Errorf("source sent more than the %d bytes it announced", total)
			}
			if end > held {
				// Size unknown: hold room ahead of the bytes.
				held = min(end+64<<20, max(end, c.cfg.LimitBytes))
				if err := c.reserve(f, held); err != nil {
					hs.giveBack(buf)
					return n, err
				}
			}
			if err := writeAll(w, buf[:m]); err != nil {
				hs.giveBack(buf)
				return n, c.diskError(f, err)
			}
			hs.add(buf[:m])
			n += int64(m)
			c.bytesDownloaded.Add(int64(m))
			f.report(offset+n, total)
		}
		switch {
		case rerr == io.EOF && total >= 0 && offset+n < total:
			return n, fmt.Errorf("connection closed after %d of %d bytes: %w", offset+n, total, io.ErrUnexpectedEOF)
		case rerr == io.EOF:
			return n, nil
		case rerr != nil && stalled.Load():
			return n, fmt.Errorf("nothing received for %v: %w", c.cfg.StallTimeout, rerr)
		case rerr != nil:
			return n, rerr
		}
	}
}

// fill reads into buf until it is full or r fails, so that the file gets
// large writes; each read that brings something re-arms the stall timer.
func (c *Cache) fill(r io.Reader, buf []byte, stall *time.Timer) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		if m > 0 {
			n += m
			stall.Reset(c.cfg.StallTimeout)
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// writeSize is the most writeAll gives the file at once. Larger writes
// make the page cache take large folios from the buddy allocator; on a
// virtual machine that reports free memory to its host (Firecracker,
// virtio-balloon) that is often memory the host must fault in again, and
// 1 MiB writes took twice as long as curl's. Writes of 32 KiB take pages
// the kernel keeps per CPU, recently freed, and cost little more in
// system calls.
const writeSize = 32 << 10

func writeAll(w io.Writer, b []byte) error {
	for len(b) > 0 {
		n, err := w.Write(b[:min(len(b), writeSize)])
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

func (c *Cache) backoff(failures int) time.Duration {
	d := c.cfg.Backoff
	for i := 1; i < failures && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	// ±20 %, so that the hosts of a farm do not retry in step.
	return time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
}

// commit puts a verified .part in place and writes its sidecar.
func (c *Cache) commit(f *flight, part, sum string, size int64) (*entry, error) {
	path := filepath.Join(c.cfg.Dir, dataName(f.key, sum, f.src.String()))
	if err := os.Rename(part, path); err != nil {
		os.Remove(part)
		return nil, c.diskError(f, err)
	}
	// Read-only, so that a job writing to its link gets an error instead
	// of changing the cached bytes.
	if err := os.Chmod(path, 0o444); err != nil {
		os.Remove(path)
		return nil, c.diskError(f, err)
	}
	now := time.Now()
	meta := sidecar{Key: f.key, Source: f.src.String(), SHA256: sum, Size: size, Stored: now, Boot: c.boot}
	if err := writeSidecar(path, meta, now); err != nil {
		os.Remove(path)
		return nil, c.diskError(f, err)
	}
	e := &entry{sidecar: meta, path: path, lastUse: now}
	e.trusted.Store(true)
	return e, nil
}

// reserve holds room for n bytes of f's download, evicting what it must.
func (c *Cache) reserve(f *flight, n int64) error {
	if n > c.cfg.LimitBytes {
		return c.tooLarge(f.src, n)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if n <= f.reserved {
		return nil
	}
	if err := c.makeRoom(n - f.reserved); err != nil {
		return fmt.Errorf("asset %s (%s): %w", f.src, human(n), err)
	}
	c.reserved += n - f.reserved
	f.reserved = n
	return nil
}

// makeRoom evicts until need more bytes fit under the limit: first .part
// files no download uses, then entries no job uses, least recently used
// first. c.mu is held.
func (c *Cache) makeRoom(need int64) error {
	for c.stored+c.partial+c.reserved+need > c.cfg.LimitBytes {
		if !c.evictOne() {
			var inUse int64
			users := 0
			for _, list := range c.byKey {
				for _, e := range list {
					if e.users > 0 {
						inUse += e.Size
						users++
					}
				}
			}
			return kindError{ErrCacheFull, fmt.Sprintf("cache %s is full: %s more are needed under CACHELIMIT %s, but %d assets in use by running jobs take %s and downloads in progress hold %s; nothing can be evicted until jobs release their assets",
				c.cfg.Dir, human(c.stored+c.partial+c.reserved+need-c.cfg.LimitBytes), human(c.cfg.LimitBytes), users, human(inUse), human(c.reserved))}
		}
	}
	return nil
}

// evictOne deletes the oldest idle .part, else the least recently used
// entry nobody uses. c.mu is held.
func (c *Cache) evictOne() bool {
	oldest := ""
	for name, p := range c.parts {
		if oldest == "" || p.modTime.Before(c.parts[oldest].modTime) {
			oldest = name
		}
	}
	if oldest != "" {
		c.cfg.Log.Info("evicting an interrupted download", "file", oldest, "bytes", c.parts[oldest].size)
		c.partial -= c.parts[oldest].size
		delete(c.parts, oldest)
		c.remove(oldest)
		return true
	}
	var victim *entry
	for _, list := range c.byKey {
		for _, e := range list {
			if e.users == 0 && (victim == nil || e.lastUse.Before(victim.lastUse)) {
				victim = e
			}
		}
	}
	if victim == nil {
		return false
	}
	c.cfg.Log.Info("evicting the least recently used asset", "asset", victim.Source, "file", victim.path, "bytes", victim.Size, "last_use", victim.lastUse)
	c.drop(victim)
	return true
}

func (c *Cache) tooLarge(src Source, size int64) error {
	return Permanent(kindError{ErrTooLarge, fmt.Sprintf("asset %s is %s, larger than CACHELIMIT %s", src, human(size), human(c.cfg.LimitBytes))})
}

// diskError is a failure to write into the cache directory.
type diskError struct{ err error }

func (e diskError) Error() string { return e.err.Error() }
func (e diskError) Unwrap() error { return e.err }

func (c *Cache) diskError(f *flight, err error) error {
	return Permanent(diskError{fmt.Errorf("asset %s: cannot write to the cache directory %s: %w", f.src, c.cfg.Dir, err)})
}

// kindError has its own message and matches a sentinel error.
type kindError struct {
	kind error
	msg  string
}

func (e kindError) Error() string        { return e.msg }
func (e kindError) Is(target error) bool { return target == e.kind }

// nameAsset makes sure err names the asset; errors of HTTPSource name the
// URL already.
func nameAsset(src Source, err error) error {
	if strings.Contains(err.Error(), src.String()) {
		return err
	}
	return fmt.Errorf("asset %s: %w", src, err)
}

// human writes a size as people read it: 60 GiB, 1.5 MiB, 12 bytes.
func human(n int64) string {
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " bytes"
	}
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB"}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return strings.TrimSuffix(strconv.FormatFloat(v, 'f', 1, 64), ".0") + " " + units[i]
}

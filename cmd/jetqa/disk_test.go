package main

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams/natstest"
)

// diskUsage is what the files below dirs take on disk, each inode once
// (a job's links to cached assets cost nothing more).
func diskUsage(t *testing.T, dirs ...string) int64 {
	t.Helper()
	seen := map[uint64]bool{}
	var total int64
	for _, dir := range dirs {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if os.IsNotExist(err) {
				return nil
			}
			if err != nil {
				return err
			}
			info, err := d.Info()
			if err != nil {
				return nil // gone meanwhile
			}
			st, ok := info.Sys().(*syscall.Stat_t)
			if !ok || seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
			total += st.Blocks * 512
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return total
}

// A worker host's disk does not grow with the jobs it runs: once a job's
// results are stored its directory goes, and what stays is the asset
// cache. JETQA_DISK_JOBS sets how many jobs (default 2; 50 for the figure
// in docs/results.md).
func TestWorkerDiskStaysBounded(t *testing.T) {
	testos := testosDir(t)
	n := 2
	if v := os.Getenv("JETQA_DISK_JOBS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 2 {
			t.Fatalf("JETQA_DISK_JOBS=%q: want a number ≥ 2", v)
		}
	}
	s := startSystemWith(t, func(c *upConfig) { c.Cache.CacheLimitGiB = 1 })
	host := []string{filepath.Join(s.data, "cache"), filepath.Join(s.data, "jobs"), filepath.Join(s.data, "assets")}
	var first, peak int64
	for i := range n {
		id := s.post(t, demoSettings(testos))
		if fin := s.finish(t, id, 5*time.Minute); fin.Result != schemas.ResultPassed {
			t.Fatalf("job %d: %s (%s)", id, fin.Result, fin.Reason)
		}
		// The upload stage removes the job's directory just after the verdict.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		natstest.WaitUntil(t, ctx, func() error {
			if entries, err := os.ReadDir(filepath.Join(s.data, "jobs")); err != nil || len(entries) > 0 {
				return fmt.Errorf("after job %d, the jobs directory holds %d entries (%v)", id, len(entries), err)
			}
			return nil
		})
		cancel()
		used := diskUsage(t, host...)
		peak = max(peak, used)
		if i == 0 {
			first = used
		}
		t.Logf("after %d jobs the worker host uses %.1f MiB", i+1, float64(used)/(1<<20))
	}
	if peak > first+(1<<20) {
		t.Errorf("the worker host's disk grew from %.1f MiB after one job to %.1f MiB over %d", float64(first)/(1<<20), float64(peak)/(1<<20), n)
	}
}

package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

func newStage(t *testing.T) *Stage {
	t.Helper()
	dir := t.TempDir()
	bus := natstest.Start(t).Bus("fetch")
	s, err := New(Config{Host: "h", CacheDir: filepath.Join(dir, "cache"), AssetDir: filepath.Join(dir, "assets"), JobsDir: filepath.Join(dir, "jobs")}, bus, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func TestFetchAsset(t *testing.T) {
	s := newStage(t)
	content := []byte(strings.Repeat("testos image ", 1000))
	local := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(local, content, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(s.cfg.AssetDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.cfg.AssetDir, "named.iso"), content, 0o644); err != nil {
		t.Fatal(err)
	}
	serve := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/disk.img" {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(content)
	})
	srv := httptest.NewServer(serve)
	defer srv.Close()
	// A server whose certificate nobody trusts.
	tlsSrv := httptest.NewTLSServer(serve)
	defer tlsSrv.Close()
	ctx := context.Background()
	bus := s.bus.(*streams.Bus)
	assetsDir := t.TempDir()
	for name, reg := range map[string]schemas.AssetRegistered{
		"stored.iso": {Name: "stored.iso", SHA256: sum(content), Size: int64(len(content))},
		"lying.iso":  {Name: "lying.iso", SHA256: sum([]byte("not these bytes")), Size: int64(len(content))},
	} {
		if err := bus.PutBlob(ctx, streams.BucketAssets, name, bytes.NewReader(content)); err != nil {
			t.Fatal(err)
		}
		if _, err := bus.Append(ctx, 0, reg); err != nil {
			t.Fatal(err)
		}
	}

	for _, tc := range []struct {
		name, source, sha string
		cached            bool
		errWant           string
	}{
		{name: "local path", source: local, sha: sum(content)},
		{name: "local path again is cached", source: local, cached: true},
		{name: "name in the asset directory", source: "named.iso"},
		{name: "registered on the server", source: "stored.iso"},
		{name: "registered again is cached", source: "stored.iso", cached: true},
		{name: "registered with another checksum", source: "lying.iso", errWant: "expected SHA-256 " + sum([]byte("not these bytes"))},
		{name: "neither registered nor in the asset directory", source: "nothing.iso", errWant: "jetqa asset add"},
		{name: "URL", source: srv.URL + "/disk.img", sha: strings.ToUpper(sum(content))},
		{name: "URL again is cached", source: srv.URL + "/disk.img", cached: true},
		{name: "wrong checksum", source: local, sha: sum([]byte("other")), errWant: "got SHA-256 " + sum(content)},
		{name: "missing file", source: "/nonexistent/x.iso", errWant: "/nonexistent/x.iso does not exist"},
		{name: "escaping the asset directory", source: "../etc/passwd", errWant: "not an absolute path"},
		{name: "404", source: srv.URL + "/nothing.iso", errWant: "404"},
		{name: "unreachable", source: "http://127.0.0.1:1/x.iso", errWant: "download failed"},
		{name: "TLS error", source: tlsSrv.URL + "/disk.img", errWant: "certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := s.fetchAsset(ctx, 1, schemas.WorkerRef{Host: "h", Instance: 1}, "ISO", tc.source, tc.sha, assetsDir)
			if tc.errWant != "" {
				var je errJob
				if err == nil || !errors.As(err, &je) || !strings.Contains(err.Error(), tc.errWant) || !strings.Contains(err.Error(), "ISO=") {
					t.Fatalf("error %v, want a job error naming ISO and %q", err, tc.errWant)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(a.Path)
			if err != nil || sum(got) != sum(content) || a.SHA256 != sum(content) || a.Size != int64(len(content)) {
				t.Errorf("asset %+v: bytes differ (%v)", a, err)
			}
			if a.Cached != tc.cached {
				t.Errorf("cached = %v, want %v", a.Cached, tc.cached)
			}
			if !strings.HasPrefix(a.Path, assetsDir) {
				t.Errorf("asset at %s, outside the job's asset directory %s", a.Path, assetsDir)
			}
		})
	}
}

// TestHDDGetsAnOverlay: a disk image is given to the VM as a qcow2 overlay
// backed by the cached image, so the VM never writes to the cache.
func TestHDDGetsAnOverlay(t *testing.T) {
	s := newStage(t)
	img := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := s.fetchAsset(context.Background(), 1, schemas.WorkerRef{Host: "h", Instance: 1}, "HDD_1", img, "", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(a.Path, "HDD_1-overlay.qcow2") {
		t.Fatalf("HDD_1 at %s, want an overlay", a.Path)
	}
	out, err := exec.Command("qemu-img", "info", "--output=json", a.Path).Output()
	if err != nil {
		t.Fatalf("qemu-img info: %v", err)
	}
	var info struct {
		Format  string `json:"format"`
		Backing string `json:"full-backing-filename"`
	}
	if err := json.Unmarshal(out, &info); err != nil {
		t.Fatal(err)
	}
	if info.Format != "qcow2" || !strings.HasPrefix(info.Backing, s.cfg.CacheDir) {
		t.Errorf("overlay %s: format %s, backed by %s (want a file in %s)", a.Path, info.Format, info.Backing, s.cfg.CacheDir)
	}
}

func commit(t *testing.T, repo *git.Repository, dir, file, content string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, file), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wt.Add(file); err != nil {
		t.Fatal(err)
	}
	h, err := wt.Commit(content, &git.CommitOptions{Author: &object.Signature{Name: "t", Email: "t@localhost", When: time.Now()}})
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

func TestCheckoutPinsTheRef(t *testing.T) {
	s := newStage(t)
	src := t.TempDir()
	repo, err := git.PlainInit(src, false)
	if err != nil {
		t.Fatal(err)
	}
	first := commit(t, repo, src, "main.star", "first")
	if _, err := repo.CreateTag("v1", mustHash(t, first), nil); err != nil {
		t.Fatal(err)
	}
	second := commit(t, repo, src, "main.star", "second")

	for i, tc := range []struct {
		value, want, content, errWant string
	}{
		{value: src, want: second, content: "second"},
		{value: src + "#v1", want: first, content: "first"},
		{value: src + "#" + first[:10], want: first, content: "first"},
		{value: src + "#master", want: second, content: "second"},
		{value: src + "#no-such-branch", errWant: `ref "no-such-branch" is not a branch, tag or commit`},
		{value: "/nonexistent/repo", errWant: "does not exist"},
		{value: "relative/repo", errWant: "absolute path"},
	} {
		dir := filepath.Join(t.TempDir(), "co")
		rc, err := s.checkout(context.Background(), "CASEDIR", tc.value, dir)
		if tc.errWant != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errWant) || !strings.Contains(err.Error(), "CASEDIR=") {
				t.Errorf("%d %s: error %v, want one naming CASEDIR and %q", i, tc.value, err, tc.errWant)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%d %s: %v", i, tc.value, err)
		}
		if rc.Commit != tc.want {
			t.Errorf("%d %s: commit %s, want %s", i, tc.value, rc.Commit, tc.want)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "main.star")); string(b) != tc.content {
			t.Errorf("%d %s: main.star holds %q, want %q", i, tc.value, b, tc.content)
		}
	}

	// The branch moves: the next job gets, and records, the new commit.
	third := commit(t, repo, src, "main.star", "third")
	rc, err := s.checkout(context.Background(), "CASEDIR", src, filepath.Join(t.TempDir(), "co"))
	if err != nil || rc.Commit != third {
		t.Errorf("after the branch moved: commit %s (%v), want %s", rc.Commit, err, third)
	}
}

func mustHash(t *testing.T, h string) plumbing.Hash {
	t.Helper()
	return plumbing.NewHash(h)
}

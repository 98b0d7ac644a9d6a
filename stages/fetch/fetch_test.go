package fetch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
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
	s, err := New(Config{Host: "h", CacheDir: filepath.Join(dir, "cache"), AssetDir: filepath.Join(dir, "assets"), JobsDir: filepath.Join(dir, "jobs"),
		AssetPaths: []string{filepath.Join(dir, "local")}}, bus, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// localFile writes a file in the directory the stage lets jobs name
// files in by path, and returns its path.
func localFile(t *testing.T, s *Stage, name string, content []byte) string {
	t.Helper()
	if err := os.MkdirAll(s.cfg.AssetPaths[0], 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(s.cfg.AssetPaths[0], name)
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func sum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

func TestFetchAsset(t *testing.T) {
	s := newStage(t)
	content := []byte(strings.Repeat("testos image ", 1000))
	local := localFile(t, s, "disk.img", content)
	localDir := filepath.Dir(local)
	// Elsewhere on the host, and a link to it from an allowed directory.
	outside := filepath.Join(t.TempDir(), "secret.img")
	if err := os.WriteFile(outside, content, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(localDir, "link.img")); err != nil {
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
		{name: "missing file", source: filepath.Join(localDir, "x.iso"), errWant: filepath.Join(localDir, "x.iso") + " does not exist"},
		{name: "a path outside the allowed directories", source: outside, errWant: "only inside"},
		{name: "a file:// URL outside them", source: "file://" + outside, errWant: "only inside"},
		{name: "the host's files", source: "/etc/passwd", errWant: "only inside"},
		{name: "a link out of an allowed directory", source: filepath.Join(localDir, "link.img"), errWant: "only inside"},
		{name: "climbing out of an allowed directory", source: localDir + "/../" + filepath.Base(localDir) + "/../../../etc/passwd", errWant: "only inside"},
		{name: "a missing file outside is not told apart", source: "/nonexistent/x.iso", errWant: "only inside"},
		{name: "a device", source: "/dev/zero", errWant: "only inside"},
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
	img := localFile(t, s, "disk.raw", make([]byte, 1<<20))
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

// A worker that forbids networks refuses downloads from them: by address,
// by a name resolving into one, and by a redirect from an allowed host;
// each is a job error naming the setting, and nothing is fetched.
func TestForbiddenNetworksAreRefused(t *testing.T) {
	nets, err := ParseNetworks("127.0.0.0/8, 169.254.169.254")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ParseNetworks("10.0.0.0/8,internal"); err == nil {
		t.Error(`ParseNetworks("internal") took a name`)
	}
	dir := t.TempDir()
	s, err := New(Config{Host: "h", CacheDir: filepath.Join(dir, "cache"), JobsDir: filepath.Join(dir, "jobs"), ForbidNetworks: nets},
		natstest.Start(t).Bus("fetch"), slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	var served atomic.Int64
	inside := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		_, _ = w.Write([]byte("internal secrets"))
	}))
	defer inside.Close()
	_, port, _ := net.SplitHostPort(inside.Listener.Addr().String())
	sources := map[string]string{
		"an address": inside.URL + "/x.iso",
		"a name":     "http://localhost:" + port + "/x.iso",
		"metadata":   "http://169.254.169.254/latest/meta-data/",
	}
	// An allowed host (IPv6 loopback, where the machine has one) that
	// redirects into a forbidden network.
	if ln, err := net.Listen("tcp", "[::1]:0"); err == nil {
		outside := httptest.NewUnstartedServer(http.RedirectHandler(inside.URL+"/x.iso", http.StatusFound))
		outside.Listener = ln
		outside.Start()
		defer outside.Close()
		sources["a redirect"] = outside.URL + "/x.iso"
	}
	for name, source := range sources {
		t.Run(name, func(t *testing.T) {
			_, err := s.fetchAsset(context.Background(), 1, schemas.WorkerRef{Host: "h", Instance: 1}, "ISO", source, "", t.TempDir())
			var je errJob
			if err == nil || !errors.As(err, &je) || !strings.Contains(err.Error(), "ISO=") || !strings.Contains(err.Error(), "does not let jobs download from") {
				t.Fatalf("error %v, want a job error refusing the network", err)
			}
		})
	}
	if n := served.Load(); n != 0 {
		t.Errorf("the forbidden server answered %d requests", n)
	}
}

// Test and needle repositories are refused too when their host is in a
// forbidden network, whichever way the URL is written.
func TestRepositoriesInForbiddenNetworksAreRefused(t *testing.T) {
	nets, err := ParseNetworks("127.0.0.0/8")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s, err := New(Config{Host: "h", CacheDir: filepath.Join(dir, "cache"), JobsDir: filepath.Join(dir, "jobs"), ForbidNetworks: nets},
		natstest.Start(t).Bus("fetch"), slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	for _, repo := range []string{"http://127.0.0.1:1/tests.git", "https://localhost/tests.git#main", "ssh://git@127.0.0.1/tests.git", "git@localhost:tests.git"} {
		_, err := s.checkout(context.Background(), "CASEDIR", repo, filepath.Join(t.TempDir(), "co"))
		if err == nil || !strings.Contains(err.Error(), "CASEDIR=") || !strings.Contains(err.Error(), "does not let jobs fetch from") {
			t.Errorf("%s: %v, want it refused", repo, err)
		}
	}
}

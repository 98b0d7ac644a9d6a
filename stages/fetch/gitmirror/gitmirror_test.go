package gitmirror

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
)

// source is a real repository of tests, changed by the test as a
// developer would push to it.
type source struct {
	t    testing.TB
	dir  string
	repo *git.Repository
}

func newSource(t testing.TB) *source {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "os-autoinst-distri-example")
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	return &source{t: t, dir: dir, repo: repo}
}

func (s *source) worktree() *git.Worktree {
	s.t.Helper()
	wt, err := s.repo.Worktree()
	if err != nil {
		s.t.Fatal(err)
	}
	return wt
}

func (s *source) write(name, content string, perm os.FileMode) {
	s.t.Helper()
	p := filepath.Join(s.dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), perm); err != nil {
		s.t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.worktree().Add(name); err != nil {
		s.t.Fatal(err)
	}
}

func (s *source) symlink(name, target string) {
	s.t.Helper()
	if err := os.Symlink(target, filepath.Join(s.dir, name)); err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.worktree().Add(name); err != nil {
		s.t.Fatal(err)
	}
}

func (s *source) remove(name string) {
	s.t.Helper()
	if _, err := s.worktree().Remove(name); err != nil {
		s.t.Fatal(err)
	}
}

func (s *source) commit(msg string) string {
	s.t.Helper()
	h, err := s.worktree().Commit(msg, &git.CommitOptions{Author: &object.Signature{Name: "t", Email: "t@localhost", When: time.Now()}})
	if err != nil {
		s.t.Fatal(err)
	}
	return h.String()
}

func (s *source) branch(name string) {
	s.t.Helper()
	if err := s.worktree().Checkout(&git.CheckoutOptions{Branch: plumbing.NewBranchReferenceName(name), Create: true}); err != nil {
		s.t.Fatal(err)
	}
}

func (s *source) switchTo(name string) {
	s.t.Helper()
	if err := s.worktree().Checkout(&git.CheckoutOptions{Branch: plumbing.NewBranchReferenceName(name)}); err != nil {
		s.t.Fatal(err)
	}
}

// tag points an annotated tag at commit, moving it if it exists.
func (s *source) tag(name, commit string) {
	s.t.Helper()
	_ = s.repo.DeleteTag(name)
	opts := &git.CreateTagOptions{Tagger: &object.Signature{Name: "t", Email: "t@localhost", When: time.Now()}, Message: name}
	if _, err := s.repo.CreateTag(name, plumbing.NewHash(commit), opts); err != nil {
		s.t.Fatal(err)
	}
}

// unreachable hides the repository from every transport until the test
// calls the returned func.
func (s *source) unreachable() (restore func()) {
	s.t.Helper()
	moved := s.dir + ".moved"
	if err := os.Rename(s.dir, moved); err != nil {
		s.t.Fatal(err)
	}
	return func() {
		if err := os.Rename(moved, s.dir); err != nil {
			s.t.Fatal(err)
		}
	}
}

// gitServer serves a source directory and gives the URL a job would name.
type gitServer struct {
	name string
	url  func(t testing.TB, dir string) string
}

var gitServers = []gitServer{
	{"path", func(_ testing.TB, dir string) string { return dir }},
	{"file URL", func(_ testing.TB, dir string) string { return "file://" + dir }},
	{"http", func(t testing.TB, dir string) string {
		return gitHTTP(t, filepath.Dir(dir)) + "/" + filepath.Base(dir)
	}},
}

// gitHTTP serves the repositories under root with git's own smart HTTP
// server, git http-backend, on loopback.
func gitHTTP(t testing.TB, root string) string {
	t.Helper()
	out, err := exec.Command("git", "--exec-path").Output()
	if err != nil {
		t.Skipf("HTTP transport untested: no git binary to run git http-backend: %v", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		t.Skipf("HTTP transport untested: git http-backend is not installed: %v", err)
	}
	srv := httptest.NewServer(&cgi.Handler{
		Path:   backend,
		Env:    []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
		Stderr: testLog{t},
	})
	t.Cleanup(srv.Close)
	return srv.URL
}

// testLog shows what the mirrors and git http-backend say beside the test
// that caused it.
type testLog struct{ t testing.TB }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Logf("%s", b)
	return len(b), nil
}

func newMirrors(t testing.TB) *Mirrors {
	t.Helper()
	m, err := New(Config{Dir: filepath.Join(t.TempDir(), "mirrors"), Log: slog.New(slog.NewTextHandler(testLog{t}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// tree describes what a checkout directory holds, path by path.
func tree(t testing.TB, dir string) map[string]string {
	t.Helper()
	got := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			got[rel] = "-> " + target
			return err
		case info.IsDir():
			got[rel] = "dir"
		default:
			b, err := os.ReadFile(p)
			got[rel] = fmt.Sprintf("%s %q", info.Mode().Perm(), b)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func sameTree(t testing.TB, dir string, want map[string]string) {
	t.Helper()
	got := tree(t, dir)
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s: %q, want %q", p, got[p], w)
		}
	}
	for p, g := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: %q is not in the commit", p, g)
		}
	}
}

// TestCheckout follows one repository of tests through the life a worker
// sees: first job, jobs with nothing new, a push, a moved tag, pinned
// commits while the remote is away, and refs that do not exist.
func TestCheckout(t *testing.T) {
	for _, tr := range gitServers {
		t.Run(tr.name, func(t *testing.T) {
			src := newSource(t)
			url := tr.url(t, src.dir)
			m := newMirrors(t)
			ctx := context.Background()

			src.write("tests/boot.pm", "boot A", 0o644)
			src.write("old.txt", "gone soon", 0o644)
			first := src.commit("first")
			src.tag("v1", first)
			treeOfFirst := map[string]string{
				"tests":         "dir",
				"tests/boot.pm": `-rw-r--r-- "boot A"`,
				"old.txt":       `-rw-r--r-- "gone soon"`,
			}

			checkout := func(ref, wantCommit string, wantFetched bool, wantTree map[string]string) {
				t.Helper()
				dest := filepath.Join(t.TempDir(), "job")
				res, err := m.Checkout(ctx, url, ref, dest)
				if err != nil {
					t.Fatalf("checkout %q: %v", ref, err)
				}
				want := Result{URL: url, Ref: ref, Commit: wantCommit, Fetched: wantFetched}
				if res != want {
					t.Errorf("checkout %q: %+v, want %+v", ref, res, want)
				}
				sameTree(t, dest, wantTree)
			}

			checkout("", first, true, treeOfFirst)
			checkout("", first, false, treeOfFirst)
			checkout("master", first, false, treeOfFirst)
			checkout("v1", first, false, treeOfFirst)

			// A push: the branch moved, so the next job fetches and gets
			// exactly the new tree, without the deleted file.
			src.write("tests/boot.pm", "boot B", 0o644)
			src.write("run.sh", "#!/bin/sh\n", 0o755)
			src.symlink("main.pm", "tests/boot.pm")
			src.remove("old.txt")
			second := src.commit("second")
			treeOfSecond := map[string]string{
				"tests":         "dir",
				"tests/boot.pm": `-rw-r--r-- "boot B"`,
				"run.sh":        `-rwxr-xr-x "#!/bin/sh\n"`,
				"main.pm":       "-> tests/boot.pm",
			}
			checkout("master", second, true, treeOfSecond)
			checkout("master", second, false, treeOfSecond)
			checkout("v1", first, false, treeOfFirst)
			checkout(second[:7], second, false, treeOfSecond)
			checkout(first, first, false, treeOfFirst)

			src.tag("v1", second)
			checkout("v1", second, true, treeOfSecond)

			// A branch the mirror has not seen, named by a short hash.
			src.branch("feature")
			src.write("tests/feature.pm", "feature", 0o644)
			feature := src.commit("feature")
			src.switchTo("master")
			treeOfFeature := map[string]string{"tests/feature.pm": `-rw-r--r-- "feature"`}
			for p, v := range treeOfSecond {
				treeOfFeature[p] = v
			}
			checkout(feature[:9], feature, true, treeOfFeature)

			// Pinned commits need no remote: it is gone and they still
			// check out, while a branch cannot be asked for.
			restore := src.unreachable()
			checkout(first, first, false, treeOfFirst)
			checkout(second, second, false, treeOfSecond)
			checkout(second[:12], second, false, treeOfSecond)
			_, err := m.Checkout(ctx, url, "master", filepath.Join(t.TempDir(), "job"))
			if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "repository "+url+" does not exist or cannot be reached: ") {
				t.Errorf("checkout of a branch of an unreachable remote: %v, want ErrUnreachable naming %s", err, url)
			}
			restore()

			for _, ref := range []string{"nope", "abcdef12", strings.Repeat("ab", 20), "../config"} {
				dest := filepath.Join(t.TempDir(), "job")
				_, err := m.Checkout(ctx, url, ref, dest)
				want := fmt.Sprintf("ref %q is not a branch, tag or commit of %s", ref, url)
				if !errors.Is(err, ErrUnknownRef) || err.Error() != want {
					t.Errorf("checkout %q: %v, want %q", ref, err, want)
				}
				if _, err := os.Stat(dest); !errors.Is(err, fs.ErrNotExist) {
					t.Errorf("checkout %q failed and left %s: %v", ref, dest, err)
				}
			}
		})
	}
}

func TestCheckoutOfMissingRepositories(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-repo")
	cases := []struct{ name, url string }{
		{"path", missing},
		{"file URL", "file://" + missing},
		{"nothing listening", "http://127.0.0.1:1/os-autoinst-needles.git"},
		{"http 404", gitHTTP(t, t.TempDir()) + "/no-such-repo.git"},
	}
	m := newMirrors(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := m.Checkout(context.Background(), tc.url, "", filepath.Join(t.TempDir(), "job"))
			if !errors.Is(err, ErrUnreachable) || !strings.HasPrefix(err.Error(), "repository "+tc.url+" does not exist or cannot be reached: ") {
				t.Errorf("%v, want ErrUnreachable naming %s", err, tc.url)
			}
		})
	}
	_, err := m.Checkout(context.Background(), "relative/repo", "", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "absolute path") {
		t.Errorf("relative path: %v, want an error asking for an absolute path", err)
	}
}

func TestCheckoutIntoADirectoryInUse(t *testing.T) {
	src := newSource(t)
	src.write("a", "a", 0o644)
	src.commit("a")
	dest := t.TempDir()
	if err := os.WriteFile(filepath.Join(dest, "left-over"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := newMirrors(t).Checkout(context.Background(), src.dir, "", dest)
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("%v, want an error saying %s is not empty", err, dest)
	}
	if _, err := os.Stat(filepath.Join(dest, "left-over")); err != nil {
		t.Errorf("the refused directory was changed: %v", err)
	}
}

// TestConcurrentCheckoutsFetchOnce: jobs of the same repository that start
// together wait for one fetch and find the ref current.
func TestConcurrentCheckoutsFetchOnce(t *testing.T) {
	for _, tr := range gitServers {
		t.Run(tr.name, func(t *testing.T) {
			src := newSource(t)
			src.write("tests/boot.pm", "boot", 0o644)
			want := src.commit("first")
			url := tr.url(t, src.dir)
			m := newMirrors(t)

			const jobs = 4
			results := make([]Result, jobs)
			errs := make([]error, jobs)
			dests := make([]string, jobs)
			var wg sync.WaitGroup
			for i := range jobs {
				dests[i] = filepath.Join(t.TempDir(), "job")
				wg.Go(func() {
					results[i], errs[i] = m.Checkout(context.Background(), url, "master", dests[i])
				})
			}
			wg.Wait()
			fetches := 0
			for i := range jobs {
				if errs[i] != nil {
					t.Fatalf("job %d: %v", i, errs[i])
				}
				if results[i].Fetched {
					fetches++
				}
				if results[i].Commit != want {
					t.Errorf("job %d: commit %s, want %s", i, results[i].Commit, want)
				}
				sameTree(t, dests[i], map[string]string{"tests": "dir", "tests/boot.pm": `-rw-r--r-- "boot"`})
			}
			if fetches != 1 {
				t.Errorf("%d jobs fetched, want exactly 1", fetches)
			}
		})
	}
}

// TestWaitingForAFetchGivesWayToTheJob: a job cancelled while another job
// of the same repository fetches stops waiting.
func TestWaitingForAFetchGivesWayToTheJob(t *testing.T) {
	src := newSource(t)
	src.write("a", "a", 0o644)
	src.commit("a")
	m := newMirrors(t)
	lock := m.lock(filepath.Join(m.cfg.Dir, mirrorName(src.dir)))
	if err := lock.lockUpdate(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dest := filepath.Join(t.TempDir(), "job")
	_, err := m.Checkout(ctx, src.dir, "", dest)
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), src.dir) {
		t.Errorf("%v, want context.Canceled naming %s", err, src.dir)
	}
	lock.unlockUpdate()
	if _, err := m.Checkout(context.Background(), src.dir, "", dest); err != nil {
		t.Errorf("after the other job: %v", err)
	}
}

// TestBrokenMirrorIsMadeAgain: whatever broke the mirror on disk, the next
// job removes it, fetches afresh and gets the right tree.
func TestBrokenMirrorIsMadeAgain(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, dir string)
	}{
		{"garbage config", func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "config"), []byte("[[[ not git"), 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"truncated packs", func(t *testing.T, dir string) {
			packs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "*.pack"))
			if len(packs) == 0 {
				t.Fatal("the mirror has no packs to break")
			}
			for _, p := range packs {
				if err := os.Truncate(p, 40); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"a byte flipped in every pack", func(t *testing.T, dir string) {
			packs, _ := filepath.Glob(filepath.Join(dir, "objects", "pack", "*.pack"))
			if len(packs) == 0 {
				t.Fatal("the mirror has no packs to break")
			}
			for _, p := range packs {
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				// Past the 12-byte header, inside the objects.
				b[12+(len(b)-12)/2] ^= 0x5a
				if err := os.WriteFile(p, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}},
		{"empty directory", func(t *testing.T, dir string) {
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
		}},
		{"another repository's mirror", func(t *testing.T, dir string) {
			other := newSource(t)
			other.write("x", "x", 0o644)
			other.commit("x")
			if err := os.RemoveAll(dir); err != nil {
				t.Fatal(err)
			}
			if _, err := git.PlainClone(dir, true, &git.CloneOptions{URL: other.dir}); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		// A full hash trusts the mirror most: no remote is asked before the
		// mirror is read. A branch that moved is fetched into the broken
		// mirror first.
		for _, ask := range []string{"pinned commit", "branch after a push"} {
			t.Run(tc.name+"/"+ask, func(t *testing.T) {
				src := newSource(t)
				src.write("tests/boot.pm", "boot", 0o644)
				src.write("tests/shutdown.pm", "shutdown", 0o644)
				want := src.commit("first")
				m := newMirrors(t)
				ctx := context.Background()
				if _, err := m.Checkout(ctx, src.dir, "", filepath.Join(t.TempDir(), "job")); err != nil {
					t.Fatal(err)
				}
				tc.damage(t, filepath.Join(m.cfg.Dir, mirrorName(src.dir)))
				ref := want
				if ask == "branch after a push" {
					src.write("tests/boot.pm", "boot 2", 0o644)
					want = src.commit("second")
					ref = "master"
				}

				dest := filepath.Join(t.TempDir(), "job")
				res, err := m.Checkout(ctx, src.dir, ref, dest)
				if err != nil {
					t.Fatal(err)
				}
				if !res.Fetched || res.Commit != want {
					t.Errorf("%+v, want a fetch of %s", res, want)
				}
				b, _ := src.repo.CommitObject(plumbing.NewHash(want))
				boot, _ := b.File("tests/boot.pm")
				content, _ := boot.Contents()
				sameTree(t, dest, map[string]string{"tests": "dir", "tests/boot.pm": fmt.Sprintf("-rw-r--r-- %q", content), "tests/shutdown.pm": `-rw-r--r-- "shutdown"`})
			})
		}
	}
}

func TestMirrorName(t *testing.T) {
	for _, tc := range []struct{ url, suffix string }{
		{"https://github.com/os-autoinst/os-autoinst-needles-opensuse.git", "-os-autoinst-needles-opensuse.git"},
		{"https://github.com/os-autoinst/os-autoinst-needles-opensuse", "-os-autoinst-needles-opensuse.git"},
		{"git@github.com:os-autoinst/os-autoinst-distri-opensuse.git", "-os-autoinst-distri-opensuse.git"},
		{"git@github.com:distri.git", "-distri.git"},
		{"file:///srv/tests/", "-tests.git"},
		{"/srv/tests", "-tests.git"},
		{"https://host/..", "-.git"},
	} {
		got := mirrorName(tc.url)
		if !strings.HasSuffix(got, tc.suffix) || len(got) != 16+len(tc.suffix) {
			t.Errorf("mirrorName(%q) = %q, want 16 hex digits and %q", tc.url, got, tc.suffix)
		}
	}
	if mirrorName("/srv/tests") == mirrorName("/srv2/tests") {
		t.Error("two repositories share a mirror")
	}
}

// FuzzMirrorName: whatever URL a job names, its mirror is one directory
// inside the mirrors' directory.
func FuzzMirrorName(f *testing.F) {
	for _, s := range []string{"https://x/y.git", "/a/b", "git@h:p.git", "..", "a/../../b", "\x00/."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, url string) {
		name := mirrorName(url)
		if name != filepath.Base(name) || strings.HasPrefix(name, ".") || !filepath.IsLocal(name) || !strings.HasSuffix(name, ".git") {
			t.Errorf("mirrorName(%q) = %q is not one directory name", url, name)
		}
	})
}

// BenchmarkCheckout compares, on a small repository of tests, a job's first
// checkout (empty mirror) and a warm one (mirror current, so only the
// remote's refs are listed) with the full clone per job that the fetch
// stage did before, measured in the same run.
func BenchmarkCheckout(b *testing.B) {
	src := newSource(b)
	for c := range 10 {
		for f := range 100 {
			src.write(fmt.Sprintf("tests/t%03d.pm", f), strings.Repeat(fmt.Sprintf("commit %d file %d\n", c, f), 40), 0o644)
		}
		src.commit(fmt.Sprintf("commit %d", c))
	}
	ctx := context.Background()
	quiet := func() *Mirrors {
		m, err := New(Config{Dir: filepath.Join(b.TempDir(), "mirrors")})
		if err != nil {
			b.Fatal(err)
		}
		return m
	}
	warm := quiet()
	if _, err := warm.Checkout(ctx, src.dir, "master", b.TempDir()); err != nil {
		b.Fatal(err)
	}
	var cold, hot, clone time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := quiet().Checkout(ctx, src.dir, "master", b.TempDir()); err != nil {
			b.Fatal(err)
		}
		cold += time.Since(start)

		start = time.Now()
		res, err := warm.Checkout(ctx, src.dir, "master", b.TempDir())
		if err != nil || res.Fetched {
			b.Fatal(res, err)
		}
		hot += time.Since(start)

		start = time.Now()
		repo, err := git.PlainCloneContext(ctx, b.TempDir(), false, &git.CloneOptions{URL: src.dir, NoCheckout: true, Tags: git.AllTags})
		if err != nil {
			b.Fatal(err)
		}
		head, err := repo.Head()
		if err != nil {
			b.Fatal(err)
		}
		wt, err := repo.Worktree()
		if err != nil {
			b.Fatal(err)
		}
		if err := wt.Checkout(&git.CheckoutOptions{Hash: head.Hash(), Force: true}); err != nil {
			b.Fatal(err)
		}
		clone += time.Since(start)
	}
	n := float64(b.N)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(cold.Nanoseconds())/n, "cold-ns/op")
	b.ReportMetric(float64(hot.Nanoseconds())/n, "warm-ns/op")
	b.ReportMetric(float64(clone.Nanoseconds())/n, "clone-ns/op")
	b.ReportMetric(float64(hot)/float64(clone), "warm/clone")
	b.ReportMetric(float64(cold)/float64(clone), "cold/clone")
}

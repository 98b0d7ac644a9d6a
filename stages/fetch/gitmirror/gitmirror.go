// Package gitmirror keeps one bare mirror per test or needle repository on a
// worker host, so the fetch stage can check out CASEDIR and NEEDLES_DIR at
// the exact commit for each job without re-cloning, and record that commit
// in the job's events.
package gitmirror

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/filemode"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
)

// Errors a caller branches on. The error Checkout returns wraps one of them
// in a message naming the repository and ref, fit to end a job with.
var (
	// ErrUnreachable: the repository does not exist or cannot be reached.
	ErrUnreachable = errors.New("repository does not exist or cannot be reached")
	// ErrUnknownRef: the ref is not a branch, tag or commit of the repository.
	ErrUnknownRef = errors.New("ref is not a branch, tag or commit of the repository")
)

// Config of the mirrors of one worker host.
type Config struct {
	// Dir holds the mirrors, one bare repository per URL. Only one Mirrors
	// may use a directory at a time: locks are held in memory.
	Dir string
	Log *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	if c.Dir == "" {
		return errors.New("gitmirror: no directory for the mirrors")
	}
	return nil
}

// Mirrors checks out commits of remote repositories through local bare
// mirrors, asking the remote for objects only when the requested ref moved.
type Mirrors struct {
	cfg Config

	mu    sync.Mutex
	locks map[string]*repoLock // by mirror directory
}

// New returns the mirrors kept in cfg.Dir, creating it if needed.
func New(cfg Config) (*Mirrors, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("gitmirror: %w", err)
	}
	return &Mirrors{cfg: cfg, locks: map[string]*repoLock{}}, nil
}

// Result says which commit a checkout holds.
type Result struct {
	URL, Ref string
	// Commit is the full hash checked out; it is what a job records.
	Commit string
	// Fetched says the mirror was updated from the remote for this checkout.
	Fetched bool
}

// Checkout puts the files of the commit that ref names in the repository at
// url into dest, which must not exist or be empty; dest gets no .git. The
// ref is a branch, a tag, a full or abbreviated commit hash, or empty for
// the remote's default branch. The remote is asked for its refs on every
// checkout by name, and for objects only when the ref moved; a full hash
// the mirror already has needs no network. A mirror found broken is
// removed and made again once. On error dest is removed.
func (m *Mirrors) Checkout(ctx context.Context, url, ref, dest string) (Result, error) {
	res := Result{URL: url, Ref: ref}
	if err := checkURL(url); err != nil {
		return res, err
	}
	if err := emptyDir(dest); err != nil {
		return res, err
	}
	dir := filepath.Join(m.cfg.Dir, mirrorName(url))
	lock := m.lock(dir)
	err := m.checkout(ctx, &res, dir, dest, lock)
	var broken *brokenMirror
	if errors.As(err, &broken) {
		m.cfg.Log.Warn("removing a broken git mirror", "url", url, "dir", dir, "err", err)
		if err = lock.remove(ctx, dir); err == nil {
			if err = clearDir(dest); err == nil {
				err = m.checkout(ctx, &res, dir, dest, lock)
			}
		}
	}
	if err != nil {
		_ = os.RemoveAll(dest)
	}
	return res, err
}

// checkout brings the mirror up to date, one job of the repository at a
// time, then writes the commit's files alongside other jobs' checkouts.
func (m *Mirrors) checkout(ctx context.Context, res *Result, dir, dest string, lock *repoLock) error {
	if err := lock.lockUpdate(ctx); err != nil {
		return fmt.Errorf("waiting for the mirror of %s: %w", res.URL, err)
	}
	mr, err := openMirror(dir, res.URL)
	var commit plumbing.Hash
	if err == nil {
		var fetched bool
		commit, fetched, err = mr.resolve(ctx, res.Ref)
		res.Fetched = res.Fetched || fetched
		if fetched {
			m.cfg.Log.Info("fetched git mirror", "url", res.URL, "ref", res.Ref, "commit", commit)
		}
	}
	lock.unlockUpdate()
	if err != nil {
		return err
	}
	res.Commit = commit.String()
	// A fetch only adds packs and moves refs, so it may run while a
	// checkout reads objects by hash; removing the mirror may not.
	lock.files.RLock()
	defer lock.files.RUnlock()
	return mr.export(commit, dest)
}

// repoLock orders the jobs of one repository.
type repoLock struct {
	// update is held while the mirror is brought up to date; waiting for
	// it gives way to the job's context, as a fetch may take minutes.
	update chan struct{}
	// files is shared by checkouts reading the mirror and exclusive to
	// removing it.
	files sync.RWMutex
}

func (l *repoLock) lockUpdate(ctx context.Context) error {
	select {
	case l.update <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (l *repoLock) unlockUpdate() { <-l.update }

func (l *repoLock) remove(ctx context.Context, dir string) error {
	if err := l.lockUpdate(ctx); err != nil {
		return fmt.Errorf("waiting to remove the broken mirror %s: %w", dir, err)
	}
	defer l.unlockUpdate()
	l.files.Lock()
	defer l.files.Unlock()
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("gitmirror: removing the broken mirror: %w", err)
	}
	return nil
}

func (m *Mirrors) lock(dir string) *repoLock {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.locks[dir]
	if !ok {
		l = &repoLock{update: make(chan struct{}, 1)}
		m.locks[dir] = l
	}
	return l
}

// mirrorName is unique per URL and still tells a person which repository
// a directory mirrors.
func mirrorName(url string) string {
	sum := sha256.Sum256([]byte(url))
	base := strings.TrimSuffix(strings.TrimRight(url, "/"), ".git")
	base = base[strings.LastIndexAny(base, "/:")+1:]
	readable := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '.':
			return r
		}
		return '_'
	}, base)
	readable = strings.TrimLeft(readable, ".")
	if len(readable) > 40 {
		readable = readable[:40]
	}
	return hex.EncodeToString(sum[:8]) + "-" + readable + ".git"
}

// checkURL refuses a relative local path, which would depend on the
// worker's working directory.
func checkURL(url string) error {
	ep, err := transport.NewEndpoint(url)
	if err != nil {
		return fmt.Errorf("repository %s: %w", url, err)
	}
	// go-git would make a relative path absolute against the working directory.
	if ep.Protocol == "file" && !strings.Contains(url, "://") && !filepath.IsAbs(url) {
		return fmt.Errorf("repository %s: a local repository must be an absolute path", url)
	}
	return nil
}

func emptyDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("gitmirror: checkout directory: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("gitmirror: checkout directory: %w", err)
	}
	if len(entries) > 0 {
		return fmt.Errorf("gitmirror: checkout directory %s is not empty", dir)
	}
	return nil
}

func clearDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Mkdir(dir, 0o755)
}

// brokenMirror marks an error that reading the mirror's own storage gave:
// the mirror is removed and made again.
type brokenMirror struct{ err error }

func (e *brokenMirror) Error() string { return "broken git mirror: " + e.err.Error() }
func (e *brokenMirror) Unwrap() error { return e.err }

// jobError reads as the message a job ends with and still matches its
// sentinel with errors.Is.
type jobError struct {
	msg  string
	errs []error
}

func (e *jobError) Error() string   { return e.msg }
func (e *jobError) Unwrap() []error { return e.errs }

func unreachable(url string, cause error) error {
	return &jobError{fmt.Sprintf("repository %s does not exist or cannot be reached: %v", url, cause), []error{ErrUnreachable, cause}}
}

func unknownRef(url, ref string) error {
	return &jobError{fmt.Sprintf("ref %q is not a branch, tag or commit of %s", ref, url), []error{ErrUnknownRef}}
}

const remoteName = "origin"

// mirror is one bare repository opened for one checkout.
type mirror struct {
	repo *git.Repository
	url  string
}

// openMirror opens the mirror in dir, or makes it if there is none. A
// directory that is not a mirror of url is reported broken.
func openMirror(dir, url string) (*mirror, error) {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := createMirror(dir, url); err != nil {
			return nil, err
		}
	}
	repo, err := git.PlainOpen(dir)
	if err != nil {
		return nil, &brokenMirror{err}
	}
	remote, err := repo.Remote(remoteName)
	if err != nil {
		return nil, &brokenMirror{err}
	}
	if urls := remote.Config().URLs; len(urls) != 1 || urls[0] != url {
		return nil, &brokenMirror{fmt.Errorf("%s mirrors %v, not %s", dir, urls, url)}
	}
	return &mirror{repo: repo, url: url}, nil
}

// createMirror makes the bare repository beside dir and renames it into
// place, so a crash never leaves a half-made mirror.
func createMirror(dir, url string) error {
	tmp, err := os.MkdirTemp(filepath.Dir(dir), filepath.Base(dir)+".new-*")
	if err != nil {
		return fmt.Errorf("gitmirror: %w", err)
	}
	defer os.RemoveAll(tmp)
	repo, err := git.PlainInit(tmp, true)
	if err != nil {
		return fmt.Errorf("gitmirror: %w", err)
	}
	_, err = repo.CreateRemote(&config.RemoteConfig{
		Name:   remoteName,
		URLs:   []string{url},
		Mirror: true,
		Fetch:  []config.RefSpec{"+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"},
	})
	if err != nil {
		return fmt.Errorf("gitmirror: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("gitmirror: %w", err)
	}
	return nil
}

// resolve finds the commit ref names, fetching only when the mirror cannot
// know it or the remote's ref differs from the mirror's.
func (mr *mirror) resolve(ctx context.Context, ref string) (commit plumbing.Hash, fetched bool, err error) {
	if ref != "" && plumbing.NewBranchReferenceName(ref).Validate() != nil {
		return commit, false, unknownRef(mr.url, ref)
	}
	if isHex(ref) && len(ref) == 2*len(plumbing.ZeroHash) {
		return mr.resolveHash(ctx, ref)
	}
	if isHex(ref) && len(ref) >= 4 {
		// A short hash the mirror knows needs no network, unless the same
		// string is also a branch or tag name, which must be asked for.
		named, err := mr.localName(ref)
		if err != nil {
			return commit, false, err
		}
		if !named {
			if c, ok, err := mr.byPrefix(ref); err != nil || ok {
				return c, false, err
			}
		}
	}
	refs, head, err := mr.remoteRefs(ctx)
	if err != nil {
		return commit, false, err
	}
	if ref == "" {
		if _, ok := refs[head]; !ok {
			return commit, false, &jobError{fmt.Sprintf("repository %s has no default branch", mr.url), []error{ErrUnknownRef}}
		}
		return mr.resolveName(ctx, head, refs[head])
	}
	for _, name := range []plumbing.ReferenceName{plumbing.NewBranchReferenceName(ref), plumbing.NewTagReferenceName(ref)} {
		if want, ok := refs[name]; ok {
			return mr.resolveName(ctx, name, want)
		}
	}
	if isHex(ref) && len(ref) >= 4 {
		if fetched, err = mr.fetch(ctx); err != nil {
			return commit, fetched, err
		}
		c, ok, err := mr.byPrefix(ref)
		if err != nil || ok {
			return c, fetched, err
		}
	}
	return commit, fetched, unknownRef(mr.url, ref)
}

// resolveHash finds a full commit hash, asking the remote only when the
// mirror lacks it.
func (mr *mirror) resolveHash(ctx context.Context, ref string) (plumbing.Hash, bool, error) {
	h := plumbing.NewHash(ref)
	c, ok, err := mr.commitOf(h)
	if err != nil || ok {
		return c, false, err
	}
	fetched, err := mr.fetch(ctx)
	if err != nil {
		return c, fetched, err
	}
	c, ok, err = mr.commitOf(h)
	if err == nil && !ok {
		err = unknownRef(mr.url, ref)
	}
	return c, fetched, err
}

// resolveName brings the mirror's ref name to the remote's hash want,
// fetching if they differ, and returns the commit it names.
func (mr *mirror) resolveName(ctx context.Context, name plumbing.ReferenceName, want plumbing.Hash) (plumbing.Hash, bool, error) {
	have, err := mr.localRef(name)
	if err != nil {
		return plumbing.ZeroHash, false, err
	}
	fetched := false
	if have != want {
		if fetched, err = mr.fetch(ctx); err != nil {
			return plumbing.ZeroHash, fetched, err
		}
		if have, err = mr.localRef(name); err != nil {
			return plumbing.ZeroHash, fetched, err
		}
		if have.IsZero() {
			return plumbing.ZeroHash, fetched, unreachable(mr.url, fmt.Errorf("it advertises %s but a fetch did not bring it", name))
		}
	}
	c, ok, err := mr.commitOf(have)
	if err == nil && !ok {
		err = &brokenMirror{fmt.Errorf("%s points to %s, which the mirror lacks", name, have)}
	}
	return c, fetched, err
}

// remoteRefs asks the remote for its refs only, no objects, and the
// branch its HEAD points to.
func (mr *mirror) remoteRefs(ctx context.Context) (refs map[plumbing.ReferenceName]plumbing.Hash, head plumbing.ReferenceName, err error) {
	remote, err := mr.repo.Remote(remoteName)
	if err != nil {
		return nil, "", &brokenMirror{err}
	}
	list, err := remote.ListContext(ctx, &git.ListOptions{PeelingOption: git.IgnorePeeled})
	if err != nil {
		return nil, "", unreachable(mr.url, err)
	}
	refs = map[plumbing.ReferenceName]plumbing.Hash{}
	for _, r := range list {
		switch {
		case r.Name() == plumbing.HEAD && r.Type() == plumbing.SymbolicReference:
			head = r.Target()
		case r.Type() == plumbing.HashReference:
			refs[r.Name()] = r.Hash()
		}
	}
	return refs, head, nil
}

// fetch updates all branches and tags of the mirror, so the next job asking
// for another ref of the same repository likely finds it current. A fetch
// that fails while the mirror's own refs cannot be read blames the mirror,
// not the remote.
func (mr *mirror) fetch(ctx context.Context) (bool, error) {
	err := mr.repo.FetchContext(ctx, &git.FetchOptions{RemoteName: remoteName, Tags: git.NoTags, Force: true})
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, git.NoErrAlreadyUpToDate):
		return false, nil
	case ctx.Err() != nil:
		return false, fmt.Errorf("fetching %s: %w", mr.url, ctx.Err())
	}
	if verr := mr.verify(); verr != nil {
		return false, verr
	}
	return false, unreachable(mr.url, err)
}

// verify reads the object every ref of the mirror points to.
func (mr *mirror) verify() error {
	refs, err := mr.repo.References()
	if err != nil {
		return &brokenMirror{err}
	}
	defer refs.Close()
	return refs.ForEach(func(r *plumbing.Reference) error {
		if r.Type() != plumbing.HashReference {
			return nil
		}
		if _, err := mr.repo.Storer.EncodedObject(plumbing.AnyObject, r.Hash()); err != nil {
			return &brokenMirror{fmt.Errorf("%s: %w", r.Name(), err)}
		}
		return nil
	})
}

// localRef is the mirror's hash for name, zero if it has none.
func (mr *mirror) localRef(name plumbing.ReferenceName) (plumbing.Hash, error) {
	r, err := mr.repo.Storer.Reference(name)
	switch {
	case errors.Is(err, plumbing.ErrReferenceNotFound):
		return plumbing.ZeroHash, nil
	case err != nil:
		return plumbing.ZeroHash, &brokenMirror{err}
	}
	return r.Hash(), nil
}

// localName says whether the mirror has a branch or tag called ref.
func (mr *mirror) localName(ref string) (bool, error) {
	for _, name := range []plumbing.ReferenceName{plumbing.NewBranchReferenceName(ref), plumbing.NewTagReferenceName(ref)} {
		h, err := mr.localRef(name)
		if err != nil || !h.IsZero() {
			return !h.IsZero(), err
		}
	}
	return false, nil
}

// commitOf peels h to the commit it names: itself, or the target of an
// annotated tag. ok is false when the mirror lacks h or h is no commit.
func (mr *mirror) commitOf(h plumbing.Hash) (commit plumbing.Hash, ok bool, err error) {
	for range 10 { // tags of tags, but not forever
		obj, err := mr.repo.Object(plumbing.AnyObject, h)
		switch {
		case errors.Is(err, plumbing.ErrObjectNotFound):
			return plumbing.ZeroHash, false, nil
		case err != nil:
			return plumbing.ZeroHash, false, &brokenMirror{fmt.Errorf("reading %s: %w", h, err)}
		}
		switch o := obj.(type) {
		case *object.Commit:
			return o.Hash, true, nil
		case *object.Tag:
			h = o.Target
		default:
			return plumbing.ZeroHash, false, nil
		}
	}
	return plumbing.ZeroHash, false, nil
}

// byPrefix finds the one commit whose hash starts with the hex prefix.
func (mr *mirror) byPrefix(prefix string) (plumbing.Hash, bool, error) {
	st, ok := mr.repo.Storer.(interface {
		HashesWithPrefix([]byte) ([]plumbing.Hash, error)
	})
	if !ok {
		return plumbing.ZeroHash, false, fmt.Errorf("gitmirror: storage %T cannot look up hash prefixes", mr.repo.Storer)
	}
	b, err := hex.DecodeString(prefix[:len(prefix)&^1])
	if err != nil {
		return plumbing.ZeroHash, false, err
	}
	hashes, err := st.HashesWithPrefix(b)
	if err != nil {
		return plumbing.ZeroHash, false, &brokenMirror{err}
	}
	var found []plumbing.Hash
	for _, h := range hashes {
		if !strings.HasPrefix(h.String(), prefix) {
			continue
		}
		c, ok, err := mr.commitOf(h)
		if err != nil {
			return plumbing.ZeroHash, false, err
		}
		if ok && !slices.Contains(found, c) {
			found = append(found, c)
		}
	}
	switch len(found) {
	case 0:
		return plumbing.ZeroHash, false, nil
	case 1:
		return found[0], true, nil
	}
	return plumbing.ZeroHash, false, &jobError{fmt.Sprintf("ref %q of %s is ambiguous: it abbreviates %d commits", prefix, mr.url, len(found)), []error{ErrUnknownRef}}
}

func isHex(s string) bool {
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return s != ""
}

// export writes the tree of commit into dest. It walks the tree itself
// rather than through go-git's TreeWalker, which ends quietly at a subtree
// it cannot read; a checkout must hold all of the commit or fail.
func (mr *mirror) export(commit plumbing.Hash, dest string) error {
	c, err := mr.repo.CommitObject(commit)
	if err != nil {
		return &brokenMirror{fmt.Errorf("reading commit %s: %w", commit, err)}
	}
	tree, err := c.Tree()
	if err != nil {
		return &brokenMirror{fmt.Errorf("reading the tree of %s: %w", commit, err)}
	}
	// os.Root keeps every write inside dest whatever names the tree holds.
	root, err := os.OpenRoot(dest)
	if err != nil {
		return fmt.Errorf("gitmirror: %w", err)
	}
	defer root.Close()
	return mr.writeTree(root, tree, "")
}

// writeTree writes tree into the directory root opens, which is dir in
// the checkout. Each directory gets its own root, so a file is created with
// one openat of its own name rather than a walk from dest.
func (mr *mirror) writeTree(root *os.Root, tree *object.Tree, dir string) error {
	for _, e := range tree.Entries {
		if !validName(e.Name) {
			return fmt.Errorf("gitmirror: %s of %s holds the unsafe name %q", dir, mr.url, e.Name)
		}
		name := path.Join(dir, e.Name)
		var err error
		switch e.Mode {
		case filemode.Dir:
			err = mr.writeSubtree(root, e, name)
		case filemode.Submodule:
			// As git leaves a submodule that is not initialised.
			err = root.Mkdir(e.Name, 0o755)
		case filemode.Symlink:
			var target []byte
			if target, err = mr.blob(e.Hash, name); err == nil {
				err = root.Symlink(string(target), e.Name)
			}
		case filemode.Regular, filemode.Deprecated, filemode.Executable:
			err = mr.writeFile(root, e, name)
		default:
			err = fmt.Errorf("gitmirror: %s has the unknown mode %s", name, e.Mode)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (mr *mirror) writeSubtree(root *os.Root, e object.TreeEntry, name string) error {
	tree, err := mr.repo.TreeObject(e.Hash)
	if err != nil {
		return &brokenMirror{fmt.Errorf("reading tree %s: %w", name, err)}
	}
	if err := root.Mkdir(e.Name, 0o755); err != nil {
		return fmt.Errorf("gitmirror: %w", err)
	}
	sub, err := root.OpenRoot(e.Name)
	if err != nil {
		return fmt.Errorf("gitmirror: %w", err)
	}
	defer sub.Close()
	return mr.writeTree(sub, tree, name)
}

func (mr *mirror) writeFile(root *os.Root, e object.TreeEntry, name string) error {
	blob, err := mr.repo.BlobObject(e.Hash)
	if err != nil {
		return &brokenMirror{fmt.Errorf("reading %s: %w", name, err)}
	}
	r, err := blob.Reader()
	if err != nil {
		return &brokenMirror{fmt.Errorf("reading %s: %w", name, err)}
	}
	defer r.Close()
	perm := os.FileMode(0o644)
	if e.Mode == filemode.Executable {
		perm = 0o755
	}
	f, err := root.OpenFile(e.Name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("gitmirror: %w", err)
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return fmt.Errorf("gitmirror: writing %s: %w", name, err)
	}
	return f.Close()
}

func (mr *mirror) blob(h plumbing.Hash, name string) ([]byte, error) {
	blob, err := mr.repo.BlobObject(h)
	if err != nil {
		return nil, &brokenMirror{fmt.Errorf("reading %s: %w", name, err)}
	}
	r, err := blob.Reader()
	if err != nil {
		return nil, &brokenMirror{fmt.Errorf("reading %s: %w", name, err)}
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, &brokenMirror{fmt.Errorf("reading %s: %w", name, err)}
	}
	return b, nil
}

// validName refuses tree entry names git itself would not check out.
func validName(name string) bool {
	if name == "" || name == "." || name == ".." || strings.EqualFold(name, ".git") {
		return false
	}
	for _, r := range name {
		if r == '/' || r == '\\' || r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

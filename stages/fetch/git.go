package fetch

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/plumbing"

	"jetqa/schemas"
)

// SplitRef splits openQA's "URL#ref" notation.
func SplitRef(v string) (url, ref string) {
	if i := strings.LastIndex(v, "#"); i >= 0 {
		return v[:i], v[i+1:]
	}
	return v, ""
}

// checkout clones the repository named by a CASEDIR or NEEDLES_DIR value
// into dir and checks out the requested ref (default: the remote's HEAD).
func (s *Stage) checkout(ctx context.Context, setting, value, dir string) (schemas.RepoCheckedOut, error) {
	url, ref := SplitRef(value)
	rc := schemas.RepoCheckedOut{Setting: setting, URL: url, Ref: ref, Path: dir}
	if !isURL(url) && !strings.Contains(url, "://") && !strings.HasPrefix(url, "git@") {
		local := strings.TrimPrefix(url, "file://")
		if !filepath.IsAbs(local) {
			return rc, jobError("%s=%s: a local repository must be an absolute path", setting, value)
		}
		if _, err := os.Stat(local); err != nil {
			return rc, jobError("%s=%s: repository %s does not exist", setting, value, local)
		}
	}
	repo, err := git.PlainCloneContext(ctx, dir, false, &git.CloneOptions{URL: url, NoCheckout: true, Tags: git.AllTags})
	if err != nil {
		return rc, jobError("%s=%s: cannot clone %s: %v", setting, value, url, err)
	}
	hash, err := resolve(repo, ref)
	if err != nil {
		return rc, jobError("%s=%s: %v", setting, value, err)
	}
	wt, err := repo.Worktree()
	if err != nil {
		return rc, fmt.Errorf("%s: worktree: %w", setting, err)
	}
	if err := wt.Checkout(&git.CheckoutOptions{Hash: hash, Force: true}); err != nil {
		return rc, fmt.Errorf("%s: checkout %s: %w", setting, hash, err)
	}
	rc.Commit = hash.String()
	return rc, nil
}

// resolve finds the commit a ref names: a branch of the remote, a tag, or a
// (possibly abbreviated) commit hash.
func resolve(repo *git.Repository, ref string) (plumbing.Hash, error) {
	if ref == "" {
		head, err := repo.Head()
		if err != nil {
			return plumbing.ZeroHash, fmt.Errorf("repository has no HEAD: %w", err)
		}
		return head.Hash(), nil
	}
	for _, rev := range []string{"refs/remotes/origin/" + ref, "refs/tags/" + ref, ref} {
		if h, err := repo.ResolveRevision(plumbing.Revision(rev)); err == nil {
			return *h, nil
		}
	}
	return plumbing.ZeroHash, fmt.Errorf("ref %q is not a branch, tag or commit of the repository", ref)
}

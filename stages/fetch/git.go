package fetch

import (
	"context"
	"strings"

	"jetqa/schemas"
)

// SplitRef splits openQA's "URL#ref" notation.
func SplitRef(v string) (url, ref string) {
	if i := strings.LastIndex(v, "#"); i >= 0 {
		return v[:i], v[i+1:]
	}
	return v, ""
}

// checkout puts the commit that a CASEDIR or NEEDLES_DIR value names into
// dir, from the host's mirror of the repository (fetched only when the ref
// moved), and says which commit that is.
func (s *Stage) checkout(ctx context.Context, setting, value, dir string) (schemas.RepoCheckedOut, error) {
	url, ref := SplitRef(value)
	rc := schemas.RepoCheckedOut{Setting: setting, URL: url, Ref: ref, Path: dir}
	if err := s.reachable(ctx, url); err != nil {
		return rc, jobError("%s=%s: %v", setting, value, err)
	}
	res, err := s.mirrors.Checkout(ctx, url, ref, dir)
	if err != nil {
		if ctx.Err() != nil {
			return rc, err
		}
		return rc, jobError("%s=%s: %v", setting, value, err)
	}
	rc.Commit = res.Commit
	return rc, nil
}

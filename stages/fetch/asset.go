package fetch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"

	"jetqa/schemas"
	"jetqa/streams"
)

// fetchAsset brings one asset into the cache and verifies its SHA-256 when
// the job gives one (<SETTING>_SHA256).
func (s *Stage) fetchAsset(ctx context.Context, setting, source, wantSHA string) (schemas.AssetFetched, error) {
	a := schemas.AssetFetched{Setting: setting, Source: source}
	var err error
	switch reg, lerr := s.registered(ctx, source); {
	case isURL(source):
		a.Path, a.SHA256, a.Size, a.Cached, err = s.download(ctx, setting, source)
	case lerr != nil:
		return a, lerr
	case reg != nil:
		a.Path, a.SHA256, a.Size, a.Cached, err = s.fromStore(ctx, setting, reg)
	default:
		a.Path, a.SHA256, a.Size, a.Cached, err = s.copyLocal(setting, source)
	}
	if err != nil {
		return a, err
	}
	if wantSHA != "" && !strings.EqualFold(wantSHA, a.SHA256) {
		if !a.Cached || isURL(source) {
			_ = os.Remove(a.Path)
		}
		return a, jobError("asset %s=%s: SHA-256 is %s, but %s_SHA256 says %s", setting, source, a.SHA256, setting, wantSHA)
	}
	return a, nil
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

// fromStore copies a registered asset from the server's asset store into
// the cache, verifying it against its registration.
func (s *Stage) fromStore(ctx context.Context, setting string, reg *schemas.AssetRegistered) (p, sum string, size int64, cached bool, err error) {
	dst := filepath.Join(s.cfg.CacheDir, reg.SHA256[:min(16, len(reg.SHA256))]+"-"+filepath.Base(reg.Name))
	if fi, err := os.Stat(dst); err == nil && fi.Size() == reg.Size {
		return dst, reg.SHA256, reg.Size, true, nil
	}
	r, _, err := s.bus.OpenBlob(ctx, streams.BucketAssets, reg.Name)
	if err != nil {
		return "", "", 0, false, jobError("asset %s=%s: %v", setting, reg.Name, err)
	}
	defer r.Close()
	tmp := dst + ".part"
	f, err := os.Create(tmp)
	if err != nil {
		return "", "", 0, false, err
	}
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(f, h), r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return "", "", 0, false, jobError("asset %s=%s: copy from the server failed after %d bytes: %v", setting, reg.Name, size, err)
	}
	sum = hex.EncodeToString(h.Sum(nil))
	if sum != reg.SHA256 {
		_ = os.Remove(tmp)
		return "", "", 0, false, jobError("asset %s=%s: the server's copy has SHA-256 %s, registered as %s", setting, reg.Name, sum, reg.SHA256)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", "", 0, false, err
	}
	return dst, sum, size, false, nil
}

// localSource resolves a path, a file:// URL or a bare asset name.
func (s *Stage) localSource(setting, source string) (string, error) {
	p := strings.TrimPrefix(source, "file://")
	if !filepath.IsAbs(p) {
		if s.cfg.AssetDir == "" || strings.Contains(p, "..") {
			return "", jobError("asset %s=%s: no asset of that name is registered (jetqa asset add), and it is not an absolute path or URL", setting, source)
		}
		p = filepath.Join(s.cfg.AssetDir, p)
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

func (s *Stage) copyLocal(setting, source string) (p, sum string, size int64, cached bool, err error) {
	src, err := s.localSource(setting, source)
	if err != nil {
		return "", "", 0, false, err
	}
	sum, size, err = hashFile(src)
	if err != nil {
		return "", "", 0, false, jobError("asset %s=%s: %v", setting, source, err)
	}
	dst := filepath.Join(s.cfg.CacheDir, sum[:16]+"-"+filepath.Base(src))
	if fi, err := os.Stat(dst); err == nil && fi.Size() == size {
		return dst, sum, size, true, nil
	}
	tmp := dst + ".part"
	_ = os.Remove(tmp)
	if err := os.Link(src, tmp); err != nil {
		if err := copyFile(src, tmp); err != nil {
			return "", "", 0, false, fmt.Errorf("asset %s=%s: copy into cache: %w", setting, source, err)
		}
	}
	if err := os.Rename(tmp, dst); err != nil {
		return "", "", 0, false, err
	}
	return dst, sum, size, false, nil
}

func (s *Stage) download(ctx context.Context, setting, source string) (p, sum string, size int64, cached bool, err error) {
	u, err := url.Parse(source)
	if err != nil {
		return "", "", 0, false, jobError("asset %s=%s: bad URL: %v", setting, source, err)
	}
	key := sha256.Sum256([]byte(source))
	dst := filepath.Join(s.cfg.CacheDir, hex.EncodeToString(key[:8])+"-"+path.Base(u.Path))
	if b, err := os.ReadFile(dst + ".sha256"); err == nil {
		if fi, err := os.Stat(dst); err == nil {
			return dst, strings.TrimSpace(string(b)), fi.Size(), true, nil
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, source, nil)
	if err != nil {
		return "", "", 0, false, jobError("asset %s=%s: %v", setting, source, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", "", 0, false, jobError("asset %s=%s: download failed: %v", setting, source, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", "", 0, false, jobError("asset %s=%s: download failed: HTTP %s", setting, source, resp.Status)
	}
	tmp := dst + ".part"
	f, err := os.Create(tmp)
	if err != nil {
		return "", "", 0, false, err
	}
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(f, h), resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(tmp)
		return "", "", 0, false, jobError("asset %s=%s: download failed after %d bytes: %v", setting, source, size, err)
	}
	sum = hex.EncodeToString(h.Sum(nil))
	if err := os.Rename(tmp, dst); err != nil {
		return "", "", 0, false, err
	}
	if err := os.WriteFile(dst+".sha256", []byte(sum+"\n"), 0o644); err != nil {
		return "", "", 0, false, err
	}
	return dst, sum, size, false, nil
}

func hashFile(p string) (string, int64, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

package boot

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"jetqa/schemas"
	"jetqa/streams"
)

// needle is one needle of the job's needle directory.
type needle struct {
	spec      schemas.Needle
	hash      string
	jsonPath  string
	pngPath   string
	published bool
}

// needleSet is the job's needle directory, parsed once at job start so a
// broken needle stops the job before the VM boots.
type needleSet struct {
	dir     string
	needles []*needle
	mu      sync.Mutex
}

// loadNeedles parses every *.json below dir. A needle that does not parse
// or has no PNG is an error naming its file.
func loadNeedles(dir string) (*needleSet, error) {
	set := &needleSet{dir: dir}
	if _, err := os.Stat(dir); err != nil {
		return set, fmt.Errorf("needle directory %s: %w", dir, err)
	}
	seen := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".json") {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		name := strings.TrimSuffix(filepath.Base(p), ".json")
		if other, dup := seen[name]; dup {
			return fmt.Errorf("needle %s: the name is used twice (%s and %s)", name, other, rel)
		}
		seen[name] = rel
		js, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		spec, err := schemas.ParseNeedle(name, js)
		if err != nil {
			return fmt.Errorf("needle file %s: %w", rel, err)
		}
		pngPath := strings.TrimSuffix(p, ".json") + ".png"
		png, err := os.ReadFile(pngPath)
		if err != nil {
			return fmt.Errorf("needle file %s: its image %s: %w", rel, strings.TrimSuffix(rel, ".json")+".png", err)
		}
		h := sha256.New()
		h.Write(js)
		h.Write(png)
		set.needles = append(set.needles, &needle{spec: spec, hash: hex.EncodeToString(h.Sum(nil)), jsonPath: p, pngPath: pngPath})
		return nil
	})
	if err != nil {
		return set, err
	}
	sort.Slice(set.needles, func(a, b int) bool { return set.needles[a].spec.Name < set.needles[b].spec.Name })
	return set, nil
}

// withTags lists the needles that carry any of the tags, as openQA does.
func (s *needleSet) withTags(tags []string) []*needle {
	var out []*needle
	for _, n := range s.needles {
		for _, t := range tags {
			if n.spec.HasTag(t) {
				out = append(out, n)
				break
			}
		}
	}
	return out
}

// blobStore is what publishing needles needs of the blob store.
type blobStore interface {
	PutBlob(ctx context.Context, bucket, key string, r io.Reader) error
	HasBlob(ctx context.Context, bucket, key string) (bool, error)
}

// publish makes sure the matcher pool can read the needles: each is stored
// once under its content hash.
func (s *needleSet) publish(ctx context.Context, store blobStore, needles []*needle) ([]schemas.NeedleRef, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	refs := make([]schemas.NeedleRef, 0, len(needles))
	for _, n := range needles {
		refs = append(refs, schemas.NeedleRef{Name: n.spec.Name, Hash: n.hash})
		if n.published {
			continue
		}
		jsonKey, pngKey := streams.NeedleBlobKeys(n.hash)
		have, err := store.HasBlob(ctx, streams.BucketNeedles, pngKey)
		if err != nil {
			return nil, err
		}
		if !have {
			for key, p := range map[string]string{jsonKey: n.jsonPath, pngKey: n.pngPath} {
				data, err := os.ReadFile(p)
				if err != nil {
					return nil, err
				}
				if err := store.PutBlob(ctx, streams.BucketNeedles, key, bytes.NewReader(data)); err != nil {
					return nil, fmt.Errorf("publish needle %s: %w", n.spec.Name, err)
				}
			}
		}
		n.published = true
	}
	return refs, nil
}

package boot

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"jetqa/schemas"
	"jetqa/streams"
)

// needleSet is the job's needle directory, read once at job start so a
// broken needle stops the job before the VM boots.
type needleSet struct {
	dir       *schemas.NeedleDir
	mu        sync.Mutex
	published map[string]bool      // content hashes known to be in the blob store
	added     []schemas.NeedleFile // a developer's, kept over a reload
}

// loadNeedles reads the needle directory. Any problem with a needle fails
// the job: a test run against a partly loaded needle set would fail later
// and less clearly, on a screen that only the missing needle matches.
func loadNeedles(dir string) (*needleSet, error) {
	nd, err := schemas.ReadNeedleDir(dir)
	if err != nil {
		return nil, err
	}
	if errs := nd.Errors(); len(errs) > 0 {
		more := ""
		if len(errs) > 1 {
			more = fmt.Sprintf(" (and %d more problems: `jetqa needle check` on the needle directory lists them all)", len(errs)-1)
		}
		return nil, fmt.Errorf("needle file %w%s", errs[0], more)
	}
	return &needleSet{dir: nd, published: map[string]bool{}}, nil
}

// loadNeedlesAsOSAutoinst reads the needle directory of an os-autoinst
// distribution as os-autoinst does: a needle it would skip (no match
// area, no image, broken JSON; the second of two with one name) is left
// out with a warning, and the job goes on. Real needle repositories have
// a few such needles, and their jobs run under openQA.
func loadNeedlesAsOSAutoinst(dir string, log *slog.Logger) (*needleSet, error) {
	nd, err := schemas.ReadNeedleDir(dir)
	if err != nil {
		return nil, err
	}
	for _, p := range nd.Errors() {
		log.Warn("needle left out, as os-autoinst leaves it out", "problem", p.Error())
	}
	return &needleSet{dir: nd, published: map[string]bool{}}, nil
}

// withTags lists the needles that carry any of the tags, as openQA does,
// and those a tag names with needleNameTag.
func (s *needleSet) withTags(tags []string) []schemas.NeedleFile {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	tags = slices.DeleteFunc(slices.Clone(tags), func(t string) bool {
		name, ok := strings.CutPrefix(t, needleNameTag)
		if ok {
			names = append(names, name)
		}
		return ok
	})
	found := s.dir.WithTags(tags)
	for _, n := range s.dir.Needles {
		if slices.Contains(names, n.Name) && !slices.ContainsFunc(found, func(f schemas.NeedleFile) bool { return f.Name == n.Name }) {
			found = append(found, n)
		}
	}
	return found
}

// byName is the needle of that name.
func (s *needleSet) byName(name string) (schemas.NeedleFile, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := slices.IndexFunc(s.dir.Needles, func(n schemas.NeedleFile) bool { return n.Name == name })
	if i < 0 {
		return schemas.NeedleFile{}, false
	}
	return s.dir.Needles[i], true
}

// hashSteps names by content hash the needles a match step shows: the
// matched one and the candidates, for the web UI's needle images.
func (s *needleSet) hashSteps(step *schemas.Step) {
	hash := func(name string) string {
		n, _ := s.byName(name)
		return n.Hash
	}
	if step.Needle != "" {
		step.NeedleHash = hash(step.Needle)
	}
	for i := range step.Candidates {
		step.Candidates[i].Hash = hash(step.Candidates[i].Needle)
	}
}

// keepOnly keeps the needles whose JSON file (relative to the directory)
// is listed: those an os-autoinst distribution left registered.
func (s *needleSet) keepOnly(files []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := *s.dir
	dir.Needles = slices.DeleteFunc(slices.Clone(dir.Needles), func(n schemas.NeedleFile) bool {
		_, found := slices.BinarySearch(files, n.File)
		return !found
	})
	s.dir = &dir
}

// overlay adds needles to the set, over those of the same name: a
// developer's fixed needles.
func (s *needleSet) overlay(needles []schemas.NeedleFile) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := *s.dir
	dir.Needles = slices.DeleteFunc(slices.Clone(dir.Needles), func(n schemas.NeedleFile) bool {
		return slices.ContainsFunc(needles, func(m schemas.NeedleFile) bool { return m.Name == n.Name })
	})
	dir.Needles = append(dir.Needles, needles...)
	s.dir = &dir
	s.added = append(s.added, needles...)
}

// place copies needle n into the set's directory, over the needle of its
// name if there is one (else at the top), and gives it as found there.
// Each file is written anew, never through a link it may share with the
// cache.
func (s *needleSet) place(n schemas.NeedleFile) (schemas.NeedleFile, error) {
	s.mu.Lock()
	root := s.dir.Dir
	file := n.Name + ".json"
	if i := slices.IndexFunc(s.dir.Needles, func(o schemas.NeedleFile) bool { return o.Name == n.Name }); i >= 0 {
		file = s.dir.Needles[i].File
	}
	s.mu.Unlock()
	placed := n
	placed.File = file
	placed.JSONPath = filepath.Join(root, filepath.FromSlash(file))
	placed.PNGPath = strings.TrimSuffix(placed.JSONPath, ".json") + ".png"
	for _, f := range [][2]string{{n.JSONPath, placed.JSONPath}, {n.PNGPath, placed.PNGPath}} {
		data, err := os.ReadFile(f[0])
		if err != nil {
			return n, err
		}
		tmp := f[1] + ".developer"
		if err := os.WriteFile(tmp, data, 0o644); err != nil {
			return n, err
		}
		if err := os.Rename(tmp, f[1]); err != nil {
			return n, err
		}
	}
	return placed, nil
}

// reloaded is s read again from its directory by load and narrowed to
// the JSON files keep, with what a developer added kept over it.
func (s *needleSet) reloaded(load func(dir string) (*needleSet, error), keep []string) (*needleSet, error) {
	s.mu.Lock()
	dir, added := s.dir.Dir, slices.Clone(s.added)
	s.mu.Unlock()
	fresh, err := load(dir)
	if err != nil {
		return nil, err
	}
	fresh.keepOnly(keep)
	if len(added) > 0 {
		fresh.overlay(added)
	}
	return fresh, nil
}

// blobStore is what publishing needles needs of the blob store.
type blobStore interface {
	PutBlob(ctx context.Context, bucket, key string, r io.Reader) error
	HasBlob(ctx context.Context, bucket, key string) (bool, error)
}

// publish makes sure the matcher pool can read the needles: each is stored
// once under its content hash.
func (s *needleSet) publish(ctx context.Context, store blobStore, needles []schemas.NeedleFile) ([]schemas.NeedleRef, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	refs := make([]schemas.NeedleRef, 0, len(needles))
	for _, n := range needles {
		refs = append(refs, schemas.NeedleRef{Name: n.Name, Hash: n.Hash})
		if s.published[n.Hash] {
			continue
		}
		// Each file on its own: a worker killed between the two puts
		// leaves one, and the next job must still store the other.
		jsonKey, pngKey := streams.NeedleBlobKeys(n.Hash)
		for _, f := range []struct{ key, path string }{{jsonKey, n.JSONPath}, {pngKey, n.PNGPath}} {
			have, err := store.HasBlob(ctx, streams.BucketNeedles, f.key)
			if err != nil {
				return nil, err
			}
			if have {
				continue
			}
			data, err := os.ReadFile(f.path)
			if err != nil {
				return nil, err
			}
			if err := store.PutBlob(ctx, streams.BucketNeedles, f.key, bytes.NewReader(data)); err != nil {
				return nil, fmt.Errorf("publish needle %s: %w", n.Name, err)
			}
		}
		s.published[n.Hash] = true
	}
	return refs, nil
}

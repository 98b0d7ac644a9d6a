package schemas

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"image/png"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// NeedleFile is one usable needle of a needle directory: its JSON parsed,
// its PNG's header read and every area inside it.
type NeedleFile struct {
	Needle
	File     string // the JSON's path relative to the directory, with slashes
	JSONPath string // the JSON's path on disk
	PNGPath  string // the PNG's path on disk
	Width    int    // of the PNG, in pixels
	Height   int
	// Hash is the hex SHA-256 of the JSON's bytes followed by the PNG's:
	// the matcher pool stores and caches a needle under it, so a needle
	// edited in place is a new needle.
	Hash string
}

// NeedleProblem is one thing wrong in a needle directory. File is the path
// relative to the directory (the JSON, or the PNG when the PNG is at
// fault); Err names the field when there is one.
type NeedleProblem struct {
	File string
	Err  error
	// Warning marks what does not stop a needle from being used, such as
	// a PNG no JSON refers to, or what Needle.Warnings lists.
	Warning bool
}

func (p NeedleProblem) Error() string { return p.File + ": " + p.Err.Error() }

func (p NeedleProblem) Unwrap() error { return p.Err }

// NeedleDir is a needle directory as a job and `jetqa needle check` see it:
// the needles that can be used and everything wrong with the others, all
// of it at once so that one look shows every broken needle.
type NeedleDir struct {
	Dir      string
	JSONs    int          // *.json files found
	Needles  []NeedleFile // the usable ones, by name
	Problems []NeedleProblem
}

// ReadNeedleDir reads every *.json below dir (leaving out .git) with the
// PNG of the same name beside it. Needles are named by their file name
// without .json, in whichever subdirectory they are, so a name may occur
// only once. The error is only for a directory that cannot be read at
// all; what is wrong with single needles is in Problems.
func ReadNeedleDir(dir string) (*NeedleDir, error) {
	if fi, err := os.Stat(dir); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is said already
		}
		return nil, fmt.Errorf("needle directory %s: %w", dir, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("needle directory %s: not a directory", dir)
	}
	d := &NeedleDir{Dir: dir}
	seen := map[string]string{} // needle name → its JSON's relative path
	pngs := map[string]bool{}   // relative paths of *.png
	jsons := map[string]bool{}  // relative paths of *.json, without .json
	// WalkDir hands its own errors (an unreadable subdirectory) to the
	// callback, which records them and goes on, so it returns none.
	_ = filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		rel := relative(dir, p)
		if err != nil {
			d.Problems = append(d.Problems, NeedleProblem{File: rel, Err: err})
			return nil
		}
		if e.IsDir() {
			if e.Name() == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case strings.HasSuffix(rel, ".png"):
			pngs[rel] = true
		case strings.HasSuffix(rel, ".json"):
			d.JSONs++
			jsons[strings.TrimSuffix(rel, ".json")] = true
			name := strings.TrimSuffix(e.Name(), ".json")
			n, problem := readNeedleFile(dir, rel, name)
			if problem != nil {
				d.Problems = append(d.Problems, *problem)
			} else {
				for _, w := range n.Warnings(n.Width, n.Height) {
					d.Problems = append(d.Problems, NeedleProblem{File: rel, Err: w, Warning: true})
				}
			}
			if other, dup := seen[name]; dup {
				d.Problems = append(d.Problems, NeedleProblem{File: rel,
					Err: fmt.Errorf("the needle name %q is used twice (%s and %s): rename one", name, other, rel)})
				return nil
			}
			seen[name] = rel
			if problem == nil {
				d.Needles = append(d.Needles, n)
			}
		}
		return nil
	})
	for rel := range pngs {
		if !jsons[strings.TrimSuffix(rel, ".png")] {
			d.Problems = append(d.Problems, NeedleProblem{File: rel, Warning: true,
				Err: fmt.Errorf("no %s beside it, so no needle uses this image", filepath.Base(strings.TrimSuffix(rel, ".png"))+".json")})
		}
	}
	sort.SliceStable(d.Problems, func(a, b int) bool { return d.Problems[a].File < d.Problems[b].File })
	sort.Slice(d.Needles, func(a, b int) bool { return d.Needles[a].Name < d.Needles[b].Name })
	return d, nil
}

// readNeedleFile reads the needle whose JSON is rel, and its PNG.
func readNeedleFile(dir, rel, name string) (NeedleFile, *NeedleProblem) {
	fail := func(file string, err error) (NeedleFile, *NeedleProblem) {
		return NeedleFile{}, &NeedleProblem{File: file, Err: err}
	}
	n := NeedleFile{File: rel, JSONPath: filepath.Join(dir, filepath.FromSlash(rel))}
	relPNG := strings.TrimSuffix(rel, ".json") + ".png"
	n.PNGPath = filepath.Join(dir, filepath.FromSlash(relPNG))
	js, err := ReadRepoFile(dir, n.JSONPath, MaxNeedleFileBytes)
	if err != nil {
		return fail(rel, err)
	}
	if n.Needle, err = ParseNeedle(name, js); err != nil {
		return fail(rel, err)
	}
	img, err := ReadRepoFile(dir, n.PNGPath, MaxNeedleFileBytes)
	if os.IsNotExist(err) {
		return fail(rel, fmt.Errorf("its image %s is missing", relPNG))
	} else if err != nil {
		return fail(rel, fmt.Errorf("its image %s: %w", relPNG, err))
	}
	cfg, err := png.DecodeConfig(bytes.NewReader(img))
	if err != nil {
		return fail(relPNG, fmt.Errorf("not a PNG: %w", err))
	}
	n.Width, n.Height = cfg.Width, cfg.Height
	if err := n.Validate(n.Width, n.Height); err != nil {
		return fail(rel, fmt.Errorf("%w (%s)", err, relPNG))
	}
	h := sha256.New()
	h.Write(js)
	h.Write(img)
	n.Hash = hex.EncodeToString(h.Sum(nil))
	return n, nil
}

// Errors lists the problems that are not warnings.
func (d *NeedleDir) Errors() []NeedleProblem {
	var out []NeedleProblem
	for _, p := range d.Problems {
		if !p.Warning {
			out = append(out, p)
		}
	}
	return out
}

// WithTags lists the usable needles that carry any of the tags, as openQA
// chooses the needles for assert_screen.
func (d *NeedleDir) WithTags(tags []string) []NeedleFile {
	var out []NeedleFile
	for _, n := range d.Needles {
		for _, t := range tags {
			if n.HasTag(t) {
				out = append(out, n)
				break
			}
		}
	}
	return out
}

// relative is p relative to dir, with slashes, as problems name files.
func relative(dir, p string) string {
	rel, err := filepath.Rel(dir, p)
	if err != nil {
		return p
	}
	return filepath.ToSlash(rel)
}

package schemas

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"image"
	"image/png"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// testPNG is a w×h PNG with a little gradient, so that pictures of
// different sizes have different bytes.
func testPNG(t *testing.T, w, h int) string {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = uint8(i)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// writeTree writes files (slash path → content) below a fresh directory.
func writeTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, content := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestReadNeedleDir(t *testing.T) {
	good := `{"tags":["a"],"area":[{"xpos":0,"ypos":0,"width":10,"height":10}]}`
	img := testPNG(t, 16, 16)
	tests := []struct {
		name     string
		files    map[string]string
		needles  []string // names of the usable needles, in order
		problems []string // "FILE: message" of each problem, in order
		warnings int      // how many of the problems are warnings
	}{
		{
			name:    "needles in subdirectories, sorted by name, .git left out",
			files:   map[string]string{"z/b.json": good, "z/b.png": img, "a.json": good, "a.png": img, ".git/c.json": "{", "README.md": "x"},
			needles: []string{"a", "b"},
		},
		{
			name:     "JSON that does not parse",
			files:    map[string]string{"bad.json": `{"tags":`, "bad.png": img},
			problems: []string{`bad.json: needle "bad": not a JSON object: unexpected end of JSON input`},
		},
		{
			name:     "a field of the wrong type",
			files:    map[string]string{"n.json": `{"tags":"a","area":[]}`, "n.png": img},
			problems: []string{`n.json: needle "n": tags: want a list, got "a": os-autoinst dies registering the needle's tags`},
		},
		{
			name:     "an only area of unknown type",
			files:    map[string]string{"n.json": strings.Replace(good, `}]`, `,"type":"matc"}]`, 1), "n.png": img},
			problems: []string{`n.json: needle "n": no area of type "match": os-autoinst cannot search for the needle`},
		},
		{
			name: "what os-autoinst accepts but is surely a mistake is a warning",
			files: map[string]string{"n.json": `{"tags":["a"],"area":[{"xpos":"0","ypos":0,"width":"10","height":10,"match":"abc"},
				{"xpos":0,"ypos":0,"width":4,"height":4,"type":"matc"},{"xpos":10,"ypos":10,"width":10,"height":10,"type":"exclude"}]}`, "n.png": img},
			needles: []string{"n"},
			problems: []string{
				`n.json: needle "n": area 1: match "abc" is not a number: os-autoinst reads it as 0`,
				`n.json: needle "n": area 1: match 0: at 0 or below the area passes whatever the screen shows`,
				`n.json: needle "n": area 2: type "matc": os-autoinst ignores areas of types other than "match", "exclude" and "ocr"`,
				`n.json: needle "n": area 3: 10x10 at (10,10) is not inside the image: os-autoinst excludes nothing with it`,
			},
			warnings: 4,
		},
		{
			name:     "missing PNG",
			files:    map[string]string{"sub/n.json": good},
			problems: []string{`sub/n.json: its image sub/n.png is missing`},
		},
		{
			name:     "PNG that does not decode",
			files:    map[string]string{"n.json": good, "n.png": "GIF89a, a picture of another kind"},
			problems: []string{`n.png: not a PNG: png: invalid format: not a PNG file`},
		},
		{
			name:     "area outside the PNG",
			files:    map[string]string{"n.json": good, "n.png": testPNG(t, 8, 12)},
			problems: []string{`n.json: needle "n": area 1: 10x10 at (0,0) is outside the 8x12 image (n.png)`},
		},
		{
			name:     "duplicate name in two subdirectories, both files named",
			files:    map[string]string{"a/n.json": good, "a/n.png": img, "b/n.json": good, "b/n.png": img},
			needles:  []string{"n"},
			problems: []string{`b/n.json: the needle name "n" is used twice (a/n.json and b/n.json): rename one`},
		},
		{
			name:     "a broken duplicate gets both problems",
			files:    map[string]string{"a/n.json": good, "a/n.png": img, "b/n.json": "[]"},
			needles:  []string{"n"},
			problems: []string{`b/n.json: needle "n": not a JSON object: []`, `b/n.json: the needle name "n" is used twice (a/n.json and b/n.json): rename one`},
		},
		{
			name:     "PNG without JSON is a warning",
			files:    map[string]string{"n.json": good, "n.png": img, "old/gone.png": img},
			needles:  []string{"n"},
			problems: []string{`old/gone.png: no gone.json beside it, so no needle uses this image`},
			warnings: 1,
		},
		{
			name:  "every problem, in file order",
			files: map[string]string{"a.json": "{", "a.png": img, "b.json": good, "c.json": good, "c.png": "GIF89a, a picture of another kind", "d.json": good, "d.png": img, "e.png": img},
			problems: []string{
				`a.json: needle "a": not a JSON object: unexpected end of JSON input`,
				`b.json: its image b.png is missing`,
				`c.png: not a PNG: png: invalid format: not a PNG file`,
				`e.png: no e.json beside it, so no needle uses this image`,
			},
			needles:  []string{"d"},
			warnings: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ReadNeedleDir(writeTree(t, tc.files))
			if err != nil {
				t.Fatal(err)
			}
			var names, problems []string
			for _, n := range d.Needles {
				names = append(names, n.Name)
			}
			for _, p := range d.Problems {
				problems = append(problems, p.Error())
			}
			if strings.Join(names, ",") != strings.Join(tc.needles, ",") {
				t.Errorf("needles %q, want %q", names, tc.needles)
			}
			if strings.Join(problems, "\n") != strings.Join(tc.problems, "\n") {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(problems, "\n"), strings.Join(tc.problems, "\n"))
			}
			if got := len(d.Problems) - len(d.Errors()); got != tc.warnings {
				t.Errorf("%d warnings, want %d", got, tc.warnings)
			}
		})
	}
}

// TestNeedleFileHash pins the content hash to SHA-256 of the JSON's bytes
// followed by the PNG's: the matcher pool stores needles under it.
func TestNeedleFileHash(t *testing.T) {
	js := `{"tags":["a"],"area":[{"xpos":0,"ypos":0,"width":4,"height":4}]}`
	img := testPNG(t, 4, 4)
	dir := writeTree(t, map[string]string{"sub/n.json": js, "sub/n.png": img})
	d, err := ReadNeedleDir(dir)
	if err != nil || len(d.Needles) != 1 {
		t.Fatalf("%v, %+v", err, d)
	}
	n := d.Needles[0]
	sum := sha256.Sum256([]byte(js + img))
	if n.Hash != hex.EncodeToString(sum[:]) {
		t.Errorf("hash %s, want sha256(JSON+PNG) %x", n.Hash, sum)
	}
	if n.File != "sub/n.json" || n.JSONPath != filepath.Join(dir, "sub", "n.json") || n.PNGPath != filepath.Join(dir, "sub", "n.png") || n.Width != 4 || n.Height != 4 {
		t.Errorf("needle file %+v", n)
	}
	if !n.HasTag("a") || len(d.WithTags([]string{"b", "a"})) != 1 || len(d.WithTags([]string{"b"})) != 0 {
		t.Errorf("tags of %+v", n.Needle)
	}
}

func TestReadNeedleDirNeedsADirectory(t *testing.T) {
	file := writeTree(t, map[string]string{"n.json": "{}"})
	for _, dir := range []string{filepath.Join(file, "none"), filepath.Join(file, "n.json")} {
		if _, err := ReadNeedleDir(dir); err == nil || !strings.Contains(err.Error(), "needle directory "+dir) {
			t.Errorf("ReadNeedleDir(%s): %v, want an error naming the directory", dir, err)
		}
	}
	if _, err := ReadNeedleDir(filepath.Join(file, "none")); !errors.Is(err, fs.ErrNotExist) || strings.Count(err.Error(), "none") != 1 {
		t.Errorf("missing directory: %v, want fs.ErrNotExist naming it once", err)
	}
}

func TestNeedleProblemUnwraps(t *testing.T) {
	d, err := ReadNeedleDir(writeTree(t, map[string]string{
		"n.json": `{"area":[{"width":1,"height":1,"type":"x"}]}`, "n.png": testPNG(t, 2, 2),
		"w.json": `{"area":[{"width":1,"height":1},{"width":1,"height":1,"type":"x"}]}`, "w.png": testPNG(t, 2, 2)}))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Problems) != 2 {
		t.Fatalf("problems %v: want an error and a warning", d.Problems)
	}
	for i, name := range []string{"n", "w"} {
		var ne *NeedleError
		if !errors.As(d.Problems[i], &ne) || ne.Needle != name || d.Problems[i].Warning != (name == "w") {
			t.Errorf("problem %v: want one wrapping a NeedleError for %s", d.Problems[i], name)
		}
	}
}

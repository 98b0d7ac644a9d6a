package needle

import (
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"jetqa/schemas"
)

// needleCorpus is the needle JSON variants TestNeedleCorpus checks.
const needleCorpus = "testdata/needle-corpus"

// corpusVariant is one needle of needleCorpus/variants.txt.
type corpusVariant struct {
	name    string
	image   string // the PNG's path in the corpus, without .png
	verdict string // "ok", "warn" or "refuse"
	message string // in the first warning, or in the error
	json    []byte
}

// readCorpus reads needleCorpus/variants.txt: paragraphs of comment lines,
// then "NAME IMAGE VERDICT [MESSAGE]" and the JSON or "file PATH".
func readCorpus(t *testing.T) []corpusVariant {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(needleCorpus, "variants.txt"))
	if err != nil {
		t.Fatal(err)
	}
	var variants []corpusVariant
	names := map[string]bool{}
	for _, para := range bytes.Split(data, []byte("\n\n")) {
		lines := bytes.Split(bytes.Trim(para, "\n"), []byte("\n"))
		comments := 0
		for comments < len(lines) && bytes.HasPrefix(lines[comments], []byte("#")) {
			comments++
		}
		rest := lines[comments:]
		if len(rest) == 0 {
			continue // the file's own comment
		}
		fields := strings.SplitN(string(rest[0]), " ", 4)
		if comments == 0 || len(rest) != 2 || len(fields) < 3 {
			t.Fatalf("variants.txt: want comments, a line NAME IMAGE VERDICT [MESSAGE] and the JSON, got:\n%s", para)
		}
		v := corpusVariant{name: fields[0], image: fields[1], verdict: fields[2], json: rest[1]}
		if len(fields) == 4 {
			v.message = fields[3]
		}
		if path, ok := bytes.CutPrefix(v.json, []byte("file ")); ok {
			if v.json, err = os.ReadFile(filepath.Join(needleCorpus, string(path))); err != nil {
				t.Fatal(err)
			}
		}
		if names[v.name] || !slices.Contains([]string{"ok", "warn", "refuse"}, v.verdict) || (v.verdict == "ok") != (v.message == "") {
			t.Fatalf("variants.txt: variant %q: a name used twice, an unknown verdict, or a message missing or where none belongs", v.name)
		}
		names[v.name] = true
		variants = append(variants, v)
	}
	return variants
}

// corpusSearch is one search a variant gets, on a screen made from its
// image.
type corpusSearch struct {
	screen image.Image
	ratio  float64
	file   string // the screen's PNG, for os-autoinst
}

// corpusScreens are the searches of a variant cut from img: on img itself
// (near the areas and whole), 5 greys brighter (similarities around 0.94,
// between match levels 90 and 96), moved 3 right and 50 down (as far as
// margin 30.7 reaches and margin 30 does not), and at the top left of a
// screen twice its size (where an area outside img is searched).
func corpusScreens(t *testing.T, img image.Image, dir string) []corpusSearch {
	t.Helper()
	rgba := image.NewRGBA(img.Bounds())
	draw.Draw(rgba, rgba.Bounds(), img, img.Bounds().Min, draw.Src)
	b := img.Bounds()
	padded := canvas(2*b.Dx(), 2*b.Dy(), color.RGBA{A: 255})
	draw.Draw(padded, b, rgba, b.Min, draw.Src)
	searches := []corpusSearch{
		{screen: rgba, ratio: schemas.AssertScreenRatio},
		{screen: rgba, ratio: 1},
		{screen: brighten(rgba, constant(5)), ratio: schemas.AssertScreenRatio},
		{screen: shifted(rgba, image.Pt(3, 50)), ratio: schemas.AssertScreenRatio},
		{screen: padded, ratio: schemas.AssertScreenRatio},
	}
	for i := range searches {
		searches[i].file = filepath.Join(dir, fmt.Sprintf("screen-%d.png", i))
		write(t, searches[i].file, pngOf(t, searches[i].screen))
	}
	return searches
}

// TestNeedleCorpus reads every variant of testdata/needle-corpus as a job
// and `jetqa needle check` do, and requires the verdict variants.txt
// gives. When os-autoinst is installed, it also loads each variant with
// os-autoinst and searches for it beside a plain needle on screens made
// from its image (testdata/needle_load.pl): os-autoinst must accept
// exactly the variants jetqa accepts (accept meaning: needle->new returns
// it, and searching for it neither dies nor crashes), and decide each
// search as jetqa does, as TestAgreesWithOsAutoinst requires.
func TestNeedleCorpus(t *testing.T) {
	variants := readCorpus(t)
	needlesDir, screensDir := t.TempDir(), t.TempDir()
	const companionJSON = `{"tags":["t"],"area":[{"xpos":0,"ypos":0,"width":16,"height":16}]}`
	pictures := map[string]image.Image{}
	searches := map[string][]corpusSearch{} // by image
	for _, v := range variants {
		pngData, err := os.ReadFile(filepath.Join(needleCorpus, v.image+".png"))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := pictures[v.image]; !ok {
			img, err := png.Decode(bytes.NewReader(pngData))
			if err != nil {
				t.Fatalf("%s.png: %v", v.image, err)
			}
			pictures[v.image] = img
			dir := filepath.Join(screensDir, strings.ReplaceAll(v.image, "/", "-"))
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			searches[v.image] = corpusScreens(t, img, dir)
		}
		write(t, filepath.Join(needlesDir, v.name+".json"), v.json)
		write(t, filepath.Join(needlesDir, v.name+".png"), pngData)
		// Named to come first on a tie, unless the variant is a workaround.
		write(t, filepath.Join(needlesDir, companion(v)+".json"), []byte(companionJSON))
		write(t, filepath.Join(needlesDir, companion(v)+".png"), pngData)
	}

	nd, err := schemas.ReadNeedleDir(needlesDir)
	if err != nil {
		t.Fatal(err)
	}
	problems := map[string][]schemas.NeedleProblem{} // by needle name
	for _, p := range nd.Problems {
		name := strings.TrimSuffix(strings.TrimSuffix(p.File, ".json"), ".png")
		problems[name] = append(problems[name], p)
	}
	specs := map[string]schemas.NeedleFile{}
	for _, n := range nd.Needles {
		specs[n.Name] = n
	}

	var osAutoinst map[string]osAutoinstLoad
	if _, err := os.Stat("/usr/lib/os-autoinst/needle.pm"); err == nil {
		osAutoinst = osAutoinstLoadAll(t, needlesDir, variants, searches)
	} else {
		t.Log("os-autoinst is not installed: checking jetqa's verdicts alone")
	}

	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			if ps := problems[companion(v)]; len(ps) > 0 {
				t.Fatalf("the plain companion has problems: %v", ps)
			}
			needles, refusal, warnings := prepareCorpusNeedles(t, v, specs, problems[v.name])
			switch {
			case v.verdict == "refuse" && !strings.Contains(refusal, v.message):
				t.Errorf("jetqa accepts it, or refuses it with %q; want a refusal with %q", refusal, v.message)
			case v.verdict != "refuse" && refusal != "":
				t.Errorf("jetqa refuses it: %s", refusal)
			case v.verdict == "ok" && len(warnings) > 0:
				t.Errorf("jetqa warns: %q", warnings)
			case v.verdict == "warn" && (len(warnings) == 0 || !strings.Contains(warnings[0], v.message)):
				t.Errorf("jetqa warns %q; want a first warning with %q", warnings, v.message)
			}
			if refusal != "" && !strings.Contains(refusal, v.name+".json") {
				t.Errorf("the refusal %q does not name the file %s.json", refusal, v.name)
			}
			if osAutoinst == nil {
				return
			}
			theirs, ok := osAutoinst[v.name]
			switch {
			case !ok:
				t.Fatal("os-autoinst did not answer for it")
			case theirs.Loaded != (refusal == ""):
				t.Fatalf("os-autoinst accepts it: %v (%s); jetqa: %v (%s)", theirs.Loaded, theirs.Reason, refusal == "", refusal)
			case !theirs.Loaded:
				t.Logf("both refuse it; os-autoinst: %s", theirs.Reason)
				return
			}
			for i, s := range searches[v.image] {
				best, all := Search(decodeScreen(t, s.screen), needles, 0, s.ratio)
				t.Run(fmt.Sprintf("search %d", i), func(t *testing.T) {
					t.Logf("os-autoinst: %s", describeResult(theirs.Searches[i]))
					agreeWithOsAutoinst(t, theirs.Searches[i], s.screen, s.ratio, needles, best, all)
				})
			}
		})
	}
}

// companion is the plain needle searched beside v.
func companion(v corpusVariant) string { return "0-plain-" + v.name }

// prepareCorpusNeedles judges v as `jetqa needle check` does: refused for
// a problem of its files that is not a warning, or when the matcher
// cannot prepare it. When it is accepted, needles are it and its
// companion, prepared.
func prepareCorpusNeedles(t *testing.T, v corpusVariant, specs map[string]schemas.NeedleFile, problems []schemas.NeedleProblem) (needles []*Needle, refusal string, warnings []string) {
	t.Helper()
	for _, p := range problems {
		if p.Warning {
			warnings = append(warnings, p.Error())
		} else if refusal == "" {
			refusal = p.Error()
		}
	}
	if refusal != "" {
		return nil, refusal, warnings
	}
	for _, name := range []string{v.name, companion(v)} {
		spec, ok := specs[name]
		if !ok {
			t.Fatalf("no problem, yet %s is not usable", name)
		}
		pngData, err := os.ReadFile(spec.PNGPath)
		if err != nil {
			t.Fatal(err)
		}
		n, err := Prepare(spec.Needle, pngData)
		if err != nil {
			return nil, spec.File + ": " + err.Error(), warnings
		}
		t.Cleanup(n.Close)
		needles = append(needles, n)
	}
	return needles, "", warnings
}

// osAutoinstLoad is what testdata/needle_load.pl says of one needle.
type osAutoinstLoad struct {
	Loaded   bool               `json:"loaded"`
	Reason   string             `json:"reason"`
	Searches []osAutoinstResult `json:"searches"`
}

// osAutoinstLoadAll loads and searches every variant with os-autoinst.
func osAutoinstLoadAll(t *testing.T, needlesDir string, variants []corpusVariant, searches map[string][]corpusSearch) map[string]osAutoinstLoad {
	t.Helper()
	type search struct {
		Screen string  `json:"screen"`
		Ratio  float64 `json:"ratio"`
	}
	type load struct {
		Name      string   `json:"name"`
		Companion string   `json:"companion"`
		Searches  []search `json:"searches"`
	}
	var loads []load
	for _, v := range variants {
		l := load{Name: v.name, Companion: companion(v)}
		for _, s := range searches[v.image] {
			l.Searches = append(l.Searches, search{s.file, s.ratio})
		}
		loads = append(loads, l)
	}
	in, err := json.Marshal(loads)
	if err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs("testdata/needle_load.pl")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("perl", script, needlesDir, fmt.Sprint(runtime.GOMAXPROCS(0)))
	cmd.Stdin = bytes.NewReader(in)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("os-autoinst: %v\n%s", err, stderrOf(err))
	}
	var res map[string]osAutoinstLoad
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("os-autoinst printed %q: %v", out, err)
	}
	return res
}

// describeResult is an os-autoinst search result in a line.
func describeResult(r osAutoinstResult) string {
	s := fmt.Sprintf("best %q", r.Best)
	for _, c := range r.All {
		s += fmt.Sprintf("; %s ok=%v", c.Needle, c.OK)
		for _, a := range c.Areas {
			s += fmt.Sprintf(" (%d,%d) %.4f", a.X, a.Y, a.Similarity)
		}
	}
	return s
}

// agreeWithOsAutoinst requires of jetqa's search of screen what
// checkAgainstOsAutoinst does of a search case: os-autoinst's best
// needle, the verdicts of every candidate, similarities within 1e-3, and
// the same positions for the areas that pass, and for the others except
// where os-autoinst's is as good.
func agreeWithOsAutoinst(t *testing.T, want osAutoinstResult, screen image.Image, ratio float64, needles []*Needle, best *Candidate, all []Candidate) {
	t.Helper()
	if got := bestName(best); got != want.Best {
		t.Errorf("best %q, os-autoinst %q", got, want.Best)
	}
	if len(all) != len(want.All) {
		t.Fatalf("%d candidates, os-autoinst %d", len(all), len(want.All))
	}
	for i, w := range want.All {
		c := all[i]
		if c.Needle != w.Needle || c.OK != w.OK || math.Abs(c.Error-w.Error) > 1e-3 || len(c.Areas) != len(w.Areas) {
			t.Errorf("candidate %d: %+v\nos-autoinst %+v", i, c, w)
			continue
		}
		k := slices.IndexFunc(needles, func(n *Needle) bool { return n.name == c.Needle })
		for j, wa := range w.Areas {
			a := c.Areas[j]
			if a.OK != wa.OK || math.Abs(a.Similarity-wa.Similarity) > 1e-3 {
				t.Errorf("%s area %d: %+v, os-autoinst %+v", c.Needle, j+1, a, wa)
			} else if (a.X != wa.X || a.Y != wa.Y) && wa.OK {
				// assert_and_click clicks where a passing area is found.
				t.Errorf("%s area %d: %+v, os-autoinst %+v: passes at another position", c.Needle, j+1, a, wa)
			} else if a.X != wa.X || a.Y != wa.Y {
				theirs := similarityAt(t, screen, needles, ratio, k, j, image.Pt(wa.X, wa.Y))
				if math.Abs(theirs-a.Similarity) > 1e-3 {
					t.Errorf("%s area %d: %+v, os-autoinst %+v, where the similarity is %v", c.Needle, j+1, a, wa, theirs)
				}
			}
		}
	}
}

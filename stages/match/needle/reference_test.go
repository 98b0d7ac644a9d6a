package needle

import (
	"fmt"
	"image"
	"image/color"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"sync"
	"testing"
)

// osAutoinstResult is what testdata/tinycv_search.pl prints.
type osAutoinstResult struct {
	Best string                `json:"best"`
	All  []osAutoinstCandidate `json:"all"`
}

// osAutoinstCandidate is one needle's result as os-autoinst prints it.
type osAutoinstCandidate struct {
	Needle string           `json:"needle"`
	OK     bool             `json:"ok"`
	Error  float64          `json:"error"`
	Areas  []osAutoinstArea `json:"areas"`
}

// osAutoinstArea is one area's result as os-autoinst prints it.
type osAutoinstArea struct {
	X, Y       int
	Similarity float64
	OK         bool
}

// TestAgreesWithOsAutoinst runs every search case through os-autoinst's
// own search (Debian's os-autoinst, with the Perl modules
// deploy/install-deps.sh test adds to it) and requires the same verdicts and order, and
// similarities within 1e-3. Positions must be the same too, except where
// os-autoinst's is exactly as good: where the similarity at its position,
// computed exactly, is jetqa's within 1e-3. (jetqa computes the squared
// differences exactly where tinycv rounds them to float32, so where
// several positions are about as good, e.g. anywhere for an area that is
// nowhere, it can pick another.)
func TestAgreesWithOsAutoinst(t *testing.T) {
	if _, err := os.Stat("/usr/lib/os-autoinst/needle.pm"); err != nil {
		t.Skip("os-autoinst is not installed: bash deploy/install-deps.sh test")
	}
	for _, tc := range slices.Concat(searchCases(), roundingCases(), tieCases()) {
		t.Run(tc.name, func(t *testing.T) {
			needles := prepareAll(t, tc.needles)
			best, all := Search(decodeScreen(t, tc.screen), needles, tc.threshold, tc.ratio)
			checkAgainstOsAutoinst(t, tc, needles, best, all)
		})
	}
}

// similarityAt is the exact similarity of area j of needles[k] at pos on
// screen, prepared as for that area's search.
func similarityAt(t *testing.T, screen image.Image, needles []*Needle, ratio float64, k, j int, pos image.Point) float64 {
	t.Helper()
	s := decodeScreen(t, screen)
	for _, as := range plan(needles, ratio, s.Bounds(), &s.roi) {
		a := &needles[k].areas[j]
		if as.needle != k || as.area != j || as.prep == nil || !a.rect.Sub(a.rect.Min).Add(pos).In(as.window) {
			continue
		}
		grey, err := prepareROI(s.grey, as.prep.excludes, as.prep.roi)
		if err != nil {
			t.Fatal(err)
		}
		defer grey.Close()
		pixels, err := grey.DataPtrUint8()
		if err != nil {
			t.Fatal(err)
		}
		return simOf(meanSquaredError(pixels, grey.Cols(), a, pos))
	}
	t.Fatalf("area %d of %s not searched at %v", j+1, needles[k].name, pos)
	return 0
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func stderrOf(err error) []byte {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.Stderr
	}
	return nil
}

// roundingCases have noisy pictures, where many blurred pixels are exact
// halves, and areas that make tinycv blur a whole image in one place and a
// part in another: the results depend on mirroring tinycv's prep exactly.
var roundingCases = sync.OnceValue(func() []searchCase {
	rng := rand.New(rand.NewPCG(42, 42))
	noise := image.NewRGBA(image.Rect(0, 0, 400, 300))
	for i := range noise.Pix {
		noise.Pix[i] = uint8(rng.IntN(256))
		if i%4 == 3 {
			noise.Pix[i] = 255
		}
	}
	// The noise at the top left of a screen, each grey moved by up to ±d.
	screenOf := func(d int) *image.RGBA {
		img := canvas(1024, 768, grey40)
		for y := range 300 {
			for x := range 400 {
				e := rng.IntN(2*d+1) - d
				c := noise.RGBAAt(x, y)
				shift := func(v uint8) uint8 { return uint8(min(255, max(0, int(v)+e))) }
				img.SetRGBA(x, y, color.RGBA{shift(c.R), shift(c.G), shift(c.B), 255})
			}
		}
		return img
	}
	exact, near, edge, far := screenOf(0), screenOf(12), screenOf(18), screenOf(24)
	big := `{"xpos":50,"ypos":50,"width":300,"height":200}` // half the needle: blurred whole
	pair := `{"xpos":20,"ypos":20,"width":150,"height":120},{"xpos":220,"ypos":160,"width":150,"height":120}`
	small := func(x, y int) string { return fmt.Sprintf(`{"xpos":%d,"ypos":%d,"width":40,"height":30}`, x, y) }

	var cases []searchCase
	for _, s := range []struct {
		name   string
		screen image.Image
	}{{"exact", exact}, {"±12", near}, {"±18", edge}, {"±24", far}} {
		for _, ratio := range []float64{0.02, 1} {
			cases = append(cases,
				searchCase{name: fmt.Sprintf("noise %s, ratio %v, area of half the needle", s.name, ratio),
					needles: []testNeedle{{"big", big, noise}}, screen: s.screen, ratio: ratio},
				searchCase{name: fmt.Sprintf("noise %s, ratio %v, two areas of more than half the needle", s.name, ratio),
					needles: []testNeedle{{"pair", pair, noise}}, screen: s.screen, ratio: ratio},
				searchCase{name: fmt.Sprintf("noise %s, ratio %v, needles sharing the screen's blur", s.name, ratio),
					needles: []testNeedle{
						{"a", small(10, 10), noise}, {"b", small(300, 200), noise},
						{"c", small(150, 100) + "," + small(340, 20), noise},
						{"x", small(100, 100) + `,{"xpos":110,"ypos":110,"width":10,"height":10,"type":"exclude"}`, noise}},
					screen: s.screen, ratio: ratio},
			)
		}
	}
	return cases
})

// tieCases are searches where several positions are as good, or nearly,
// as the one that decides: a toolbar of identical buttons, the same
// dialog twice, lines of the same text, a flat area, an area mostly
// excluded. There tinycv's float32 sums and its sort pick the position,
// and assert_and_click clicks there, so jetqa must pick the same one.
var tieCases = sync.OnceValue(func() []searchCase {
	// A toolbar: seven identical 40x30 buttons, 48 px apart.
	toolbar := canvas(1024, 768, grey40)
	for i := range 7 {
		at := image.Pt(260+48*i, 100)
		fill(toolbar, image.Rect(0, 0, 40, 30).Add(at), grey60)
		text(toolbar, at.Add(image.Pt(4, 7)), 3, 4, 1, grey200)
	}
	button := func(i int) string { return fmt.Sprintf(`{"xpos":%d,"ypos":100,"width":40,"height":30}`, 260+48*i) }
	// The same dialog twice, side by side, and once more below.
	twice := screenWithDialogs(grey200, image.Pt(200, 300), image.Pt(440, 300), image.Pt(440, 500))
	// A prompt on every other line of a console.
	console := canvas(720, 400, color.RGBA{0, 0, 0, 255})
	for line := 0; line < 24; line += 2 {
		text(console, image.Pt(0, 16*line), 11, 10, 1, color.RGBA{170, 170, 170, 255})
	}
	prompt := func(line int) string { return fmt.Sprintf(`{"xpos":0,"ypos":%d,"width":80,"height":16}`, 16*line) }
	// A dialog with most of it excluded: only its frame is matched.
	framed := screenWithDialogs(grey200, at300)
	mostlyExcluded := dialogArea + `,{"xpos":304,"ypos":304,"width":192,"height":72,"type":"exclude"}`

	type variant struct {
		name   string
		screen image.Image
	}
	var cases []searchCase
	add := func(name, json string, needleImg image.Image, screens []variant) {
		for _, v := range screens {
			for _, ratio := range []float64{0.02, 1} {
				cases = append(cases, searchCase{name: fmt.Sprintf("%s, %s, ratio %v", name, v.name, ratio),
					needles: []testNeedle{{"n", json, needleImg}}, screen: v.screen, ratio: ratio})
			}
		}
	}
	same := func(img *image.RGBA) []variant {
		return []variant{{"the same screen", img}, {"2 greys brighter", brighten(img, constant(2))}}
	}
	add("toolbar, the middle button", button(3), toolbar, same(toolbar))
	add("toolbar, the first button", button(0), toolbar, same(toolbar))
	add("toolbar, the last button", button(6), toolbar, same(toolbar))
	add("the same dialog three times, the first", `{"xpos":200,"ypos":300,"width":200,"height":80}`, twice, same(twice))
	add("the same dialog three times, the last", `{"xpos":440,"ypos":500,"width":200,"height":80}`, twice, same(twice))
	add("a prompt on every other line, line 10", prompt(10), console, same(console))
	add("a prompt on every other line, line 0", prompt(0), console, same(console))
	add("a flat area on a flat screen", `{"xpos":500,"ypos":600,"width":60,"height":20}`, twice, same(twice))
	add("a dialog's frame, the rest excluded", mostlyExcluded, framed,
		append(same(framed), variant{"the dialog moved 7 px", screenWithDialogs(grey200, at300.Add(image.Pt(7, 0)))}))
	return cases
})

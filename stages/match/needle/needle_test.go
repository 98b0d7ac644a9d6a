package needle

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/png"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"jetqa/schemas"
)

// The pictures: a 1024x768 screen, grey 40, with a flat grey-60 "dialog"
// of 200x80 at (300,300) holding two lines of text-like glyphs from row 12
// on. Every grey is a multiple of 4, so the hand-computed MSEs below are
// exact whichever way OpenCV rounds the blur.
var (
	grey40  = color.RGBA{40, 40, 40, 255}
	grey60  = color.RGBA{60, 60, 60, 255}
	grey200 = color.RGBA{200, 200, 200, 255}
	amber   = color.RGBA{220, 180, 60, 255}
	at300   = image.Pt(300, 300)
)

const dialogArea = `{"xpos":300,"ypos":300,"width":200,"height":80}`

func canvas(w, h int, c color.RGBA) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	fill(img, img.Bounds(), c)
	return img
}

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			img.SetRGBA(x, y, c)
		}
	}
}

// text draws rows lines of cols glyphs of 8x16 pixels, each a few random
// one-pixel strokes, like a console font.
func text(img *image.RGBA, at image.Point, seed uint64, cols, rows int, c color.RGBA) {
	rng := rand.New(rand.NewPCG(seed, 1))
	for row := range rows {
		for col := range cols {
			cell := at.Add(image.Pt(col*8, row*16))
			for range 2 + rng.IntN(4) {
				x, y := 1+rng.IntN(6), 2+rng.IntN(12)
				if rng.IntN(2) == 0 {
					fill(img, image.Rect(x, y, x+1+rng.IntN(6-x+1), y+1).Add(cell), c)
				} else {
					fill(img, image.Rect(x, y, x+1, y+1+rng.IntN(14-y+1)).Add(cell), c)
				}
			}
		}
	}
}

// dialog draws the 200x80 dialog with its top left corner at at.
func dialog(img *image.RGBA, at image.Point, seed uint64, fg color.RGBA) {
	fill(img, image.Rect(0, 0, 200, 80).Add(at), grey60)
	text(img, at.Add(image.Pt(8, 12)), seed, 23, 2, fg)
	text(img, at.Add(image.Pt(8, 48)), seed+1, 10, 1, fg)
}

func screenWithDialogs(fg color.RGBA, at ...image.Point) *image.RGBA {
	img := canvas(1024, 768, grey40)
	for _, p := range at {
		dialog(img, p, 7, fg)
	}
	return img
}

// brighten adds to every row y the grey offset(y), on all channels.
func brighten(src *image.RGBA, offset func(y int) uint8) *image.RGBA {
	img := image.NewRGBA(src.Bounds())
	copy(img.Pix, src.Pix)
	for y := range img.Bounds().Dy() {
		row := img.Pix[y*img.Stride:][:img.Stride]
		for i := range row {
			if i%4 != 3 {
				row[i] += offset(y)
			}
		}
	}
	return img
}

func constant(d uint8) func(int) uint8 { return func(int) uint8 { return d } }

// band is +8 on the rows above y, +4 from y on. Blurred, the rows y-1 and y
// differ by 7 and 5, so an 80-row area starting at 300 gets
// MSE = 16 + (48·(y-301) + 42)/80.
func band(y int) func(int) uint8 {
	return func(row int) uint8 {
		if row < y {
			return 8
		}
		return 4
	}
}

// simOf is os-autoinst's similarity for a mean squared error.
func simOf(mse float64) float64 { return min(1, max(0, 0.9+(40-mse)/380)) }

var (
	pngCacheMu sync.Mutex
	pngCache   = map[image.Image][]byte{}
)

func pngOf(tb testing.TB, img image.Image) []byte {
	tb.Helper()
	pngCacheMu.Lock()
	defer pngCacheMu.Unlock()
	if b, ok := pngCache[img]; ok {
		return b
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		tb.Fatal(err)
	}
	pngCache[img] = buf.Bytes()
	return buf.Bytes()
}

type testNeedle struct {
	name string
	json string // a whole needle, or just its areas
	img  image.Image
}

// needleJSON is the needle's whole JSON file.
func (tn testNeedle) needleJSON() []byte {
	if strings.Contains(tn.json, `"area"`) {
		return []byte(tn.json)
	}
	return []byte(`{"tags":["t"],"area":[` + tn.json + `]}`)
}

func (tn testNeedle) spec(tb testing.TB) schemas.Needle {
	tb.Helper()
	spec, err := schemas.ParseNeedle(tn.name, tn.needleJSON())
	if err != nil {
		tb.Fatal(err)
	}
	return spec
}

func prepare(tb testing.TB, tn testNeedle) *Needle {
	tb.Helper()
	n, err := Prepare(tn.spec(tb), pngOf(tb, tn.img))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(n.Close)
	return n
}

// prepareAll prepares each of tns.
func prepareAll(tb testing.TB, tns []testNeedle) []*Needle {
	tb.Helper()
	var needles []*Needle
	for _, tn := range tns {
		needles = append(needles, prepare(tb, tn))
	}
	return needles
}

func decodeScreen(tb testing.TB, img image.Image) *Screen {
	tb.Helper()
	s, err := DecodeScreen(pngOf(tb, img))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Close)
	return s
}

// areaWant is an expected area result; a negative sim means "below the
// area's level, anywhere".
type areaWant struct {
	x, y int
	sim  float64
}

type searchCase struct {
	name             string
	needles          []testNeedle
	screen           image.Image
	threshold, ratio float64
	best             string     // the matching needle, "" for none
	order            []string   // all candidates, best first; nil: don't check
	areas            []areaWant // of the first candidate
}

var searchCases = sync.OnceValue(func() []searchCase {
	base := screenWithDialogs(grey200, at300)
	colour := screenWithDialogs(amber, at300)
	one := func(json string, img image.Image) []testNeedle { return []testNeedle{{"n", json, img}} }

	clock := screenWithDialogs(grey200, at300)
	text(clock, image.Pt(420, 360), 99, 4, 1, grey200) // 32x16, different glyphs
	titled := screenWithDialogs(grey200, at300)
	fill(titled, image.Rect(300, 250, 500, 290), grey60)
	text(titled, image.Pt(310, 262), 5, 20, 1, grey200)
	retitled := screenWithDialogs(grey200, at300)
	fill(retitled, image.Rect(300, 250, 500, 290), grey60)
	text(retitled, image.Pt(310, 262), 6, 20, 1, grey200)

	flat := canvas(1024, 768, color.RGBA{100, 100, 100, 255})
	twice := screenWithDialogs(grey200, at300, image.Pt(300, 400))
	plus4 := brighten(base, constant(4))

	return []searchCase{
		{name: "same picture: similarity 1 at the area",
			needles: one(dialogArea, base), screen: base, ratio: 0.02, best: "n",
			areas: []areaWant{{300, 300, 1}}},
		{name: "colours count by their grey value",
			needles: one(dialogArea, colour), screen: colour, ratio: 0.02, best: "n",
			areas: []areaWant{{300, 300, 1}}},
		{name: "moved 30 px, within margin 50+19",
			needles: one(dialogArea, base), screen: screenWithDialogs(grey200, image.Pt(330, 330)), ratio: 0.02, best: "n",
			areas: []areaWant{{330, 330, 1}}},
		{name: "moved 100 px, beyond margin 50+19",
			needles: one(dialogArea, base), screen: screenWithDialogs(grey200, image.Pt(400, 400)), ratio: 0.02,
			areas: []areaWant{{sim: -1}}},
		{name: "moved 100 px, ratio 1 searches the whole screen",
			needles: one(dialogArea, base), screen: screenWithDialogs(grey200, image.Pt(400, 400)), ratio: 1, best: "n",
			areas: []areaWant{{400, 400, 1}}},
		{name: "moved 100 px, margin 100 at ratio 0",
			needles: one(`{"xpos":300,"ypos":300,"width":200,"height":80,"margin":100}`, base),
			screen:  screenWithDialogs(grey200, image.Pt(400, 400)), ratio: 0, best: "n",
			areas: []areaWant{{400, 400, 1}}},
		{name: "moved 41 px, margin 20 grows to int(20+0.02·1004)=40",
			needles: one(`{"xpos":300,"ypos":300,"width":200,"height":80,"margin":20}`, base),
			screen:  screenWithDialogs(grey200, image.Pt(341, 300)), ratio: 0.02,
			areas: []areaWant{{sim: -1}}},
		{name: "moved 40 px, margin 20 grows to int(20+0.02·1004)=40",
			needles: one(`{"xpos":300,"ypos":300,"width":200,"height":80,"margin":20}`, base),
			screen:  screenWithDialogs(grey200, image.Pt(340, 300)), ratio: 0.02, best: "n",
			areas: []areaWant{{340, 300, 1}}},
		{name: "4 brighter: MSE 16 passes 96%",
			needles: one(dialogArea, base), screen: plus4, ratio: 0.02, best: "n",
			areas: []areaWant{{300, 300, simOf(16)}}},
		{name: "4 brighter: MSE 16 fails 97%",
			needles: one(`{"xpos":300,"ypos":300,"width":200,"height":80,"match":97}`, base), screen: plus4, ratio: 0.02,
			areas: []areaWant{{300, 300, simOf(16)}}},
		{name: "MSE 17.125 is just above 96%",
			needles: one(dialogArea, base), screen: brighten(base, band(302)), ratio: 0.02, best: "n",
			areas: []areaWant{{300, 300, simOf(17.125)}}},
		{name: "MSE 17.725 is just below 96%",
			needles: one(dialogArea, base), screen: brighten(base, band(303)), ratio: 0.02,
			areas: []areaWant{{300, 300, simOf(17.725)}}},
		{name: "MSE 17.725 passes with threshold 0.01",
			needles: one(dialogArea, base), screen: brighten(base, band(303)), ratio: 0.02, threshold: 0.01, best: "n",
			areas: []areaWant{{300, 300, simOf(17.725)}}},
		{name: "an exclude area hides a clock",
			needles: one(dialogArea+`,{"xpos":416,"ypos":356,"width":40,"height":24,"type":"exclude"}`, base),
			screen:  clock, ratio: 0.02, best: "n",
			areas: []areaWant{{300, 300, 1}}},
		{name: "without the exclude area the clock fails the match",
			needles: one(dialogArea, base), screen: clock, ratio: 0.02,
			areas: []areaWant{{300, 300, -1}}},
		{name: "two areas, the second fails: no match",
			needles: one(dialogArea+`,{"xpos":300,"ypos":250,"width":200,"height":40}`, titled),
			screen:  retitled, ratio: 0.02,
			areas: []areaWant{{300, 300, 1}, {sim: -1}}},
		{name: "two areas, both found",
			needles: one(dialogArea+`,{"xpos":300,"ypos":250,"width":200,"height":40}`, titled),
			screen:  titled, ratio: 0.02, best: "n",
			areas: []areaWant{{300, 300, 1}, {300, 250, 1}}},
		{name: "area outside a smaller screen: similarity 0 at (0,0)",
			needles: one(dialogArea, base), screen: canvas(400, 300, grey40), ratio: 1,
			areas: []areaWant{{0, 0, 0}}},
		{name: "exact at the area: taken even with a twin closer to the bottom right",
			needles: one(`{"xpos":300,"ypos":300,"width":200,"height":80,"margin":100}`, base),
			screen:  twice, ratio: 0.02, best: "n",
			areas: []areaWant{{300, 300, 1}}},
		{name: "uniform area: tinycv's distance quirk picks the window's bottom right",
			needles: one(`{"xpos":300,"ypos":300,"width":20,"height":10}`, flat),
			screen:  brighten(flat, constant(4)), ratio: 0.02, best: "n",
			areas: []areaWant{{369, 369, simOf(16)}}},
		{name: "best of two needles by error",
			needles: []testNeedle{{"plus4", dialogArea, plus4}, {"exact", dialogArea, base}},
			screen:  base, ratio: 0.02, best: "exact", order: []string{"exact", "plus4"},
			areas: []areaWant{{300, 300, 1}}},
		{name: "equal error: the workaround needle first, then by name",
			needles: []testNeedle{
				{"c", dialogArea, base},
				{"b", dialogArea, base},
				{"z-workaround", `{"properties":["workaround"],"area":[` + dialogArea + `]}`, base},
				{"a-moved", dialogArea, screenWithDialogs(grey200, image.Pt(500, 500))}},
			screen: base, ratio: 0.02, best: "z-workaround", order: []string{"z-workaround", "b", "c", "a-moved"},
			areas: []areaWant{{300, 300, 1}}},
		{name: "none matches: the best failing candidate first",
			needles: []testNeedle{
				{"far", dialogArea, screenWithDialogs(grey200, image.Pt(600, 100))},
				{"near", dialogArea, base}},
			screen: brighten(base, band(305)), ratio: 0.02, order: []string{"near", "far"},
			areas: []areaWant{{300, 300, simOf(16 + (48*4+42)/80.0)}}},
	}
})

func TestSearch(t *testing.T) {
	for _, tc := range searchCases() {
		t.Run(tc.name, func(t *testing.T) {
			best, all := Search(decodeScreen(t, tc.screen), prepareAll(t, tc.needles), tc.threshold, tc.ratio)
			checkSearch(t, tc, best, all)
		})
	}
}

func checkSearch(t *testing.T, tc searchCase, best *Candidate, all []Candidate) {
	t.Helper()
	if len(all) != len(tc.needles) {
		t.Fatalf("%d candidates for %d needles", len(all), len(tc.needles))
	}
	switch {
	case tc.best == "" && best != nil:
		t.Errorf("best = %+v, want none", *best)
	case tc.best != "" && (best == nil || best.Needle != tc.best || best != &all[0] || !best.OK):
		t.Errorf("best = %+v, want %s", best, tc.best)
	}
	if tc.order != nil {
		var order []string
		for _, c := range all {
			order = append(order, c.Needle)
		}
		if fmt.Sprint(order) != fmt.Sprint(tc.order) {
			t.Errorf("order %v, want %v", order, tc.order)
		}
	}
	first := all[0]
	if len(first.Areas) != len(tc.areas) {
		t.Fatalf("%s: %d areas, want %d", first.Needle, len(first.Areas), len(tc.areas))
	}
	sumSq := 0.0
	for i, want := range tc.areas {
		got := first.Areas[i]
		sumSq += (1 - got.Similarity) * (1 - got.Similarity)
		if want.sim < 0 {
			if got.OK || got.Similarity >= 0.96 {
				t.Errorf("area %d: %+v, want a failure", i+1, got)
			}
			continue
		}
		if got.X != want.x || got.Y != want.y || math.Abs(got.Similarity-want.sim) > 1e-9 {
			t.Errorf("area %d: at (%d,%d) similarity %.6f, want (%d,%d) %.6f",
				i+1, got.X, got.Y, got.Similarity, want.x, want.y, want.sim)
		}
	}
	if want := sumSq / float64(len(tc.areas)); math.Abs(first.Error-want) > 1e-12 {
		t.Errorf("error %v, want %v", first.Error, want)
	}
}

// A needle is prepared once and searched on many screens, at once.
func TestSearchConcurrently(t *testing.T) {
	base := screenWithDialogs(grey200, at300)
	n := prepare(t, testNeedle{"n", dialogArea, base})
	moved := pngOf(t, screenWithDialogs(grey200, image.Pt(330, 330)))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			s, err := DecodeScreen(moved)
			if err != nil {
				t.Error(err)
				return
			}
			defer s.Close()
			best, _ := Search(s, []*Needle{n}, 0, 0.02)
			if best == nil || best.Areas[0].X != 330 {
				t.Errorf("best = %+v", best)
			}
		})
	}
	wg.Wait()
}

func TestPrepareErrors(t *testing.T) {
	base := pngOf(t, screenWithDialogs(grey200, at300))
	// A valid header for 100000x100000 pixels: OpenCV would abort on it.
	hugePNG := bytes.Clone(pngOf(t, image.NewGray(image.Rect(0, 0, 1, 1))))
	ihdr := hugePNG[12:29] // chunk type and data
	binary.BigEndian.PutUint32(ihdr[4:], 100000)
	binary.BigEndian.PutUint32(ihdr[8:], 100000)
	binary.BigEndian.PutUint32(hugePNG[29:], crc32.ChecksumIEEE(ihdr))

	tests := []struct {
		name string
		json string
		png  []byte
		want string
	}{
		{"no PNG", dialogArea, nil, `needle "boot": not a PNG: `},
		{"JSON instead of PNG", dialogArea, []byte(`{"tags":[]}`), `needle "boot": not a PNG: `},
		{"truncated PNG", dialogArea, base[:len(base)/2], `needle "boot": PNG of 1024x768 pixels does not decode`},
		{"huge PNG", dialogArea, hugePNG, `needle "boot": PNG of 100000x100000 pixels is empty or too big`},
		{"area outside the PNG", `{"xpos":900,"ypos":300,"width":200,"height":80}`, base,
			`needle "boot": area 1: 200x80 at (900,300) is outside the 1024x768 image`},
		{"ocr area outside the PNG", dialogArea + `,{"xpos":0,"ypos":760,"width":10,"height":10,"type":"ocr"}`, base,
			`needle "boot": area 2: 10x10 at (0,760) is not inside the image: os-autoinst dies reading it when the needle matches`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec := testNeedle{name: "boot", json: tt.json}.spec(t)
			n, err := Prepare(spec, tt.png)
			if err == nil {
				n.Close()
				t.Fatalf("no error, want %q", tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("error %q\nwant     %q", err, tt.want)
			}
			var ne *schemas.NeedleError
			if !errors.As(err, &ne) || ne.Needle != "boot" {
				t.Errorf("%#v is not a *schemas.NeedleError for boot", err)
			}
		})
	}

	// A needle built in code without a match area is refused too.
	_, err := Prepare(schemas.Needle{Name: "empty"}, base)
	if fmt.Sprint(err) != `needle "empty": no area of type "match": os-autoinst cannot search for the needle` {
		t.Errorf("Prepare = %v", err)
	}
}

// TestAreasOsAutoinstNeverUses: areas os-autoinst accepts but never uses
// change nothing: a match area at a negative position is never searched
// (similarity 0 at (0,0)), an empty exclude area excludes nothing (an
// image.Rectangle would turn a negative width around), other types are
// ignored.
func TestAreasOsAutoinstNeverUses(t *testing.T) {
	img := screenWithDialogs(grey200, at300)
	plain := prepare(t, testNeedle{"plain", dialogArea, img})
	odd := prepare(t, testNeedle{"odd", dialogArea + `,{"xpos":-5,"ypos":300,"width":0,"height":80},
		{"xpos":350,"ypos":300,"width":-40,"height":80,"type":"exclude"},{"xpos":300,"ypos":310,"width":0,"height":80,"type":"exclude"},
		{"xpos":300,"ypos":300,"width":50,"height":80,"type":"nomatch"},{"xpos":300,"ypos":300,"width":50,"height":80,"type":"ocr"}`, img})
	screen := decodeScreen(t, brighten(img, constant(4)))
	_, all := Search(screen, []*Needle{plain, odd}, 0, 0.02)
	if len(all) != 2 || len(all[1].Areas) != 2 {
		t.Fatalf("results %+v", all)
	}
	p, o := all[0].Areas[0], all[1].Areas[0]
	if all[0].Needle != "plain" || o.X != p.X || o.Y != p.Y || o.Similarity != p.Similarity || p.Similarity == 1 {
		t.Errorf("odd's first area %+v, plain's %+v: want the same, short of 1", o, p)
	}
	if never := all[1].Areas[1]; never.X != 0 || never.Y != 0 || never.Similarity != 0 || never.OK {
		t.Errorf("the area at a negative position: %+v, want similarity 0 at (0,0)", never)
	}
}

func TestDecodeScreenErrors(t *testing.T) {
	for _, data := range [][]byte{nil, []byte("P6\n1 1\n255\n\x00\x00\x00"), pngOf(t, canvas(2, 2, grey40))[:40]} {
		if s, err := DecodeScreen(data); err == nil {
			s.Close()
			t.Errorf("DecodeScreen(%q) succeeded", data)
		}
	}
}

// prepareROI blurs like tinycv: only what was asked for until that is half
// the image, then all of it; a whole image rounds exact halves up.
func TestPrepMirrorsTinycv(t *testing.T) {
	src := canvas(64, 64, grey40)
	text(src, image.Pt(0, 0), 3, 8, 4, grey200)
	grey, err := decodeGrey(pngOf(t, src))
	if err != nil {
		t.Fatal(err)
	}
	defer grey.Close()
	bounds := image.Rect(0, 0, 64, 64)

	// Blurred by hand: [1 2 1]ᵀ[1 2 1]/16, reflect-101 borders, halves up.
	plain := func(x, y int) int {
		x, y = reflect101(x, 64), reflect101(y, 64)
		return int(src.RGBAAt(x, y).R)
	}
	blurred := func(x, y int) int {
		k := [3]int{1, 2, 1}
		s := 0
		for dy := -1; dy <= 1; dy++ {
			for dx := -1; dx <= 1; dx++ {
				s += k[dy+1] * k[dx+1] * plain(x+dx, y+dy)
			}
		}
		return (s + 8) >> 4
	}

	small := image.Rect(10, 10, 20, 20)
	roi := grownROI(image.Rectangle{}, small, bounds)
	if roi != small {
		t.Errorf("roi %v, want %v", roi, small)
	}
	if got := grownROI(roi, image.Rect(12, 12, 14, 14), bounds); got != roi {
		t.Errorf("roi %v grew to %v for a part of it", roi, got)
	}
	g, err := prepareROI(grey, nil, roi)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	pix, err := g.DataPtrUint8()
	if err != nil {
		t.Fatal(err)
	}
	for y := 9; y < 21; y++ {
		for x := 9; x < 21; x++ {
			if !image.Pt(x, y).In(small) && int(pix[y*64+x]) != plain(x, y) {
				t.Fatalf("(%d,%d) around %v = %d, want %d, not blurred", x, y, small, pix[y*64+x], plain(x, y))
			}
		}
	}

	roi = grownROI(roi, image.Rect(0, 0, 64, 33), bounds) // more than half: all of it
	if roi != bounds {
		t.Errorf("roi %v, want the whole image", roi)
	}
	whole, err := prepareROI(grey, nil, roi)
	if err != nil {
		t.Fatal(err)
	}
	defer whole.Close()
	pix, _ = whole.DataPtrUint8()
	for y := range 64 {
		for x := range 64 {
			if got, want := int(pix[y*64+x]), blurred(x, y); got != want {
				t.Fatalf("(%d,%d) = %d, want %d", x, y, got, want)
			}
		}
	}
}

func reflect101(i, n int) int {
	switch {
	case i < 0:
		return -i
	case i >= n:
		return 2*n - 2 - i
	}
	return i
}

func FuzzPrepare(f *testing.F) {
	base := screenWithDialogs(grey200, at300)
	small := canvas(40, 30, grey40)
	text(small, image.Pt(4, 4), 1, 4, 1, amber)
	f.Add([]byte(`{"tags":["t"],"area":[`+dialogArea+`]}`), pngOf(f, base))
	f.Add([]byte(`{"area":[{"xpos":2,"ypos":2,"width":30,"height":20},{"xpos":4,"ypos":4,"width":8,"height":8,"type":"exclude"}]}`), pngOf(f, small))
	f.Add([]byte(`{"area":[{"width":5,"height":5}]}`), pngOf(f, image.NewGray16(image.Rect(0, 0, 5, 5))))
	f.Add([]byte(`{"area":[{"width":5,"height":5}]}`), pngOf(f, image.NewPaletted(image.Rect(0, 0, 5, 5), color.Palette{grey40, amber})))
	f.Add([]byte(`{"area":[{"width":5,"height":5}]}`), []byte("\x89PNG\r\n\x1a\n"))
	f.Add([]byte(`[`), []byte(`{}`))
	screen := pngOf(f, small)
	f.Fuzz(func(t *testing.T, js, pngData []byte) {
		const name = "fuzzed"
		spec, err := schemas.ParseNeedle(name, js)
		if err != nil {
			spec = schemas.Needle{Name: name, Areas: []schemas.NeedleArea{{Width: 5, Height: 5, Type: "match", Match: 96, Margin: 50}}}
		}
		n, err := Prepare(spec, pngData)
		if err != nil {
			if !strings.Contains(err.Error(), `needle "fuzzed"`) {
				t.Fatalf("error %q does not name the needle", err)
			}
			return
		}
		defer n.Close()
		s, err := DecodeScreen(screen)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for _, ratio := range []float64{0, 0.02, 1} {
			if _, all := Search(s, []*Needle{n}, 0, ratio); len(all) != 1 {
				t.Fatalf("%d candidates", len(all))
			}
		}
	})
}

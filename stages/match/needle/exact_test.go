package needle

import (
	"fmt"
	"image"
	"image/color"
	"math/rand/v2"
	"testing"

	"gocv.io/x/gocv"
)

// bruteForce is tinycv's search on exact sums of squared differences,
// computed at every position: what searchExact must find. Its tied says
// whether another position's sum is within the tie slack of the
// candidates' limit.
func bruteForce(screen []byte, cols int, tpl []byte, a image.Rectangle, window image.Rectangle) exactMatch {
	tw, th := a.Dx(), a.Dy()
	nx, ny := window.Dx()-tw+1, window.Dy()-th+1
	ssd := make([]int64, nx*ny)
	diffs := make([]float32, nx*ny)
	var wsq, tsq int64
	for y := window.Min.Y; y < window.Max.Y; y++ {
		for x := window.Min.X; x < window.Max.X; x++ {
			wsq += int64(screen[y*cols+x]) * int64(screen[y*cols+x])
		}
	}
	for _, v := range tpl {
		tsq += int64(v) * int64(v)
	}
	slack := tieSlack(wsq, tsq)
	for py := range ny {
		for px := range nx {
			var s int64
			for y := range th {
				for x := range tw {
					d := int64(screen[(window.Min.Y+py+y)*cols+window.Min.X+px+x]) - int64(tpl[y*tw+x])
					s += d * d
				}
			}
			ssd[py*nx+px], diffs[py*nx+px] = s, float32(s) // exact below 2²⁴
		}
	}
	tiedWith := func(p image.Point, bound int64) bool {
		for i, v := range ssd {
			if v <= bound && image.Pt(i%nx, i/nx) != p {
				return true
			}
		}
		return false
	}
	orig := a.Min.Sub(window.Min)
	v0 := ssd[orig.Y*nx+orig.X]
	if v0 == 0 {
		return exactMatch{pos: orig, result: exactFound, tied: tiedWith(orig, 10+slack)}
	}
	p, _ := closestNearMinimum(diffs, nx, float32(v0), a.Min)
	lowest := v0
	for _, v := range ssd {
		lowest = min(lowest, v)
	}
	if lowest >= int64(382*tw*th) {
		return exactMatch{result: exactNothingClose}
	}
	return exactMatch{pos: p, ssd: ssd[p.Y*nx+p.X], result: exactFound, tied: tiedWith(p, lowest+10+slack)}
}

// sameMatch reports whether a search found what want says it must: the
// same result, and where it found, the same position and sum.
func sameMatch(got, want exactMatch) bool {
	return got.result == want.result && (got.result != exactFound || got.pos == want.pos && got.ssd == want.ssd)
}

// closestNearMinimum is tinycv's minVec followed by SortByClose, in one
// pass over the squared differences (row-major, in float32 as tinycv
// computes). A position is a candidate when its value is within 10 of the
// smallest value seen so far (starting from the value at the original
// position); a new smallest value drops the earlier candidates. Of the
// candidates it returns the first closest to orig, ok false when there
// is none. Two tinycv quirks are
// kept: candidates before the minimum in scan order are dropped even when
// within 10 of it, and the distance is taken from window-relative
// positions to the absolute orig, which favours the bottom right.
func closestNearMinimum(diffs []float32, cols int, atOrig float32, orig image.Point) (image.Point, bool) {
	limit := atOrig + float32(10)
	var best image.Point
	bestDist := -1
	for i, v := range diffs {
		if v > limit {
			continue
		}
		p := image.Pt(i%cols, i/cols)
		d := p.Sub(orig)
		dist := d.X*d.X + d.Y*d.Y
		if v+float32(10) < limit {
			limit = v + float32(10)
			best, bestDist = p, dist
		} else if bestDist < 0 || dist < bestDist {
			best, bestDist = p, dist
		}
	}
	return best, bestDist >= 0
}

// randomSearch is a small random search for an area that is a changed
// copy of another part of the screen, or the area itself: screen (cols
// wide), the area's pixels tpl at a, and the window.
func randomSearch(rng *rand.Rand, i int) (screen []byte, cols, rows int, tpl []byte, a, window image.Rectangle) {
	cols, rows = 20+rng.IntN(40), 15+rng.IntN(30)
	screen = make([]byte, cols*rows)
	levels := 1 + rng.IntN(4) // few grey levels: many ties
	for j := range screen {
		screen[j] = byte(40 + 60*rng.IntN(levels))
	}
	tw, th := 1+rng.IntN(min(12, cols)), 1+rng.IntN(min(10, rows))
	a = image.Rect(0, 0, tw, th).Add(image.Pt(rng.IntN(cols-tw+1), rng.IntN(rows-th+1)))
	tpl = make([]byte, tw*th)
	src := image.Pt(rng.IntN(cols-tw+1), rng.IntN(rows-th+1)) // a copy of elsewhere, changed
	noise := rng.IntN(30)
	for y := range th {
		for x := range tw {
			v := int(screen[(src.Y+y)*cols+src.X+x]) + rng.IntN(noise+1) - noise/2
			tpl[y*tw+x] = byte(min(255, max(0, v)))
		}
	}
	if i%7 == 0 { // the area itself, unchanged
		for y := range th {
			copy(tpl[y*tw:][:tw], screen[(a.Min.Y+y)*cols+a.Min.X:])
		}
	}
	m := rng.IntN(cols)
	window = image.Rect(a.Min.X-m, a.Min.Y-m, a.Max.X+m, a.Max.Y+m).Intersect(image.Rect(0, 0, cols, rows))
	return screen, cols, rows, tpl, a, window
}

// The exact search and the FFT search find what computing every position
// finds.
func TestSearchesMatchBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	oldExact, oldFFT := exactBudget, fftBudget
	exactBudget, fftBudget = 1<<30, 1<<30
	defer func() { exactBudget, fftBudget = oldExact, oldFFT }()
	for i := range 400 {
		screen, cols, rows, tpl, a, window := randomSearch(rng, i)
		grey, err := gocv.NewMatFromBytes(rows, cols, gocv.MatTypeCV8UC1, screen)
		if err != nil {
			t.Fatal(err)
		}
		pixels, err := gocv.NewMatFromBytes(a.Dy(), a.Dx(), gocv.MatTypeCV8UC1, tpl)
		if err != nil {
			t.Fatal(err)
		}
		spectrum, err := windowSpectrum(grey, window)
		if err != nil {
			t.Fatal(err)
		}
		area := matchArea{rect: a, pixels: pixels, spectra: &areaSpectra{}}
		want := bruteForce(screen, cols, tpl, a, window)
		for _, s := range []struct {
			name   string
			search func() exactMatch
			// exact: its tie check is exact too; else it may
			// call a tie what is not one.
			exact bool
		}{
			{"exact", func() exactMatch { return searchExact(grey, &area, window) }, true},
			{"FFT", func() exactMatch { return searchFFT(grey, spectrum, &area, window) }, false},
		} {
			got := s.search()
			if !sameMatch(got, want) || got.result == exactFound && (got.tied != want.tied && (s.exact || want.tied)) {
				t.Errorf("case %d, %s: %v in %v of %dx%d: %+v, want %+v", i, s.name, a, window, cols, rows, got, want)
			}
		}
		grey.Close()
		pixels.Close()
		spectrum.Close()
		area.spectra.close()
	}
}

// Areas of 4096 pixels and more are summed block by block, each block
// from the integral images where the screen is flat under it: on screens
// of flat rectangles with a few strokes, changed copies of their own
// parts, the exact search picks what computing every position picks.
func TestBlockSumsMatchBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	oldExact := exactBudget
	exactBudget = 1 << 30
	defer func() { exactBudget = oldExact }()
	for i := range 12 {
		cols, rows := 110+rng.IntN(30), 90+rng.IntN(30)
		screen := make([]byte, cols*rows)
		for j := range screen {
			screen[j] = 60
		}
		for range 4 { // flat rectangles
			v := byte(40 + 20*rng.IntN(4))
			x, y := rng.IntN(cols), rng.IntN(rows)
			for yy := y; yy < min(rows, y+10+rng.IntN(40)); yy++ {
				for xx := x; xx < min(cols, x+10+rng.IntN(60)); xx++ {
					screen[yy*cols+xx] = v
				}
			}
		}
		for range 60 { // strokes
			x, y := rng.IntN(cols-6), rng.IntN(rows)
			for xx := x; xx < x+1+rng.IntN(6); xx++ {
				screen[y*cols+xx] = 200
			}
		}
		tw, th := 64+rng.IntN(16), 64+rng.IntN(10)
		a := image.Rect(0, 0, tw, th).Add(image.Pt(rng.IntN(cols-tw+1), rng.IntN(rows-th+1)))
		src := image.Pt(rng.IntN(cols-tw+1), rng.IntN(rows-th+1))
		tpl := make([]byte, tw*th)
		for y := range th {
			for x := range tw {
				v := int(screen[(src.Y+y)*cols+src.X+x])
				if i%3 == 0 {
					v += rng.IntN(3) - 1
				}
				tpl[y*tw+x] = byte(min(255, max(0, v)))
			}
		}
		window := image.Rect(0, 0, cols, rows)
		grey, err := gocv.NewMatFromBytes(rows, cols, gocv.MatTypeCV8UC1, screen)
		if err != nil {
			t.Fatal(err)
		}
		pixels, err := gocv.NewMatFromBytes(th, tw, gocv.MatTypeCV8UC1, tpl)
		if err != nil {
			t.Fatal(err)
		}
		area := matchArea{rect: a, pixels: pixels, spectra: &areaSpectra{}}
		want := bruteForce(screen, cols, tpl, a, window)
		if got := searchExact(grey, &area, window); !sameMatch(got, want) || got.result == exactFound && got.tied != want.tied {
			t.Errorf("case %d: %v in %dx%d: %+v, want %+v", i, a, cols, rows, got, want)
		}
		grey.Close()
		pixels.Close()
	}
}

// Where bounds cannot rule out enough positions, the exact search leaves
// the area to OpenCV, early: on a repeating pattern every repetition is
// about as good as the area's own place, so each needs a full sum.
func TestSearchExactGivesUp(t *testing.T) {
	checks := canvas(1024, 768, grey40)
	for y := 0; y < 768; y += 3 {
		for x := (y / 3 % 2) * 3; x < 1024; x += 6 {
			fill(checks, image.Rect(x, y, x+3, y+3), grey200)
		}
	}
	for _, ratio := range []float64{0.02, 1} {
		t.Run(fmt.Sprint(ratio), func(t *testing.T) {
			n := prepare(t, testNeedle{"checks", `{"xpos":300,"ypos":300,"width":200,"height":80}`, checks})
			s := decodeScreen(t, brighten(checks, constant(4)))
			a := &n.areas[0]
			w := searchWindow(a, ratio, s.Bounds())
			g, err := prepareROI(s.grey, nil, w)
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			m := searchExact(g, a, w)
			if m.result != exactTooCostly || m.work > 2*exactBudget*int64(w.Dx()*w.Dy()) {
				t.Errorf("%v after %.0f operations per pixel", m.result, float64(m.work)/float64(w.Dx()*w.Dy()))
			}
		})
	}
}

// On flat colours the exact search settles even the areas that are about
// as good everywhere: text whose dialog is not on the screen, over a
// wallpaper of nearly its background's grey, with an icon. The sums over
// flat parts come from the integral images, so it stays within its
// budget, and it picks what computing every position picks.
func TestSearchExactSettlesFlatScreens(t *testing.T) {
	wallpaper := color.RGBA{36, 64, 108, 255} // grey 61, the dialog's is 60
	needleImg := canvas(1024, 768, wallpaper)
	dialog(needleImg, image.Pt(300, 600), 5, grey200)
	screenImg := canvas(1024, 768, wallpaper)
	fill(screenImg, image.Rect(236, 536, 252, 552), grey200)
	n := prepare(t, testNeedle{"absent", `{"xpos":300,"ypos":600,"width":200,"height":80}`, needleImg})
	s := decodeScreen(t, screenImg)
	a := &n.areas[0]
	w := searchWindow(a, 0.02, s.Bounds())
	g, err := prepareROI(s.grey, nil, w)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	got := searchExact(g, a, w)
	if got.result == exactTooCostly {
		t.Errorf("gave up after %.0f operations per pixel", float64(got.work)/float64(w.Dx()*w.Dy()))
	}
	screen, _ := g.DataPtrUint8()
	tpl, _ := a.pixels.DataPtrUint8()
	if want := bruteForce(screen, g.Cols(), tpl, a.rect, w); !sameMatch(got, want) {
		t.Errorf("%+v, want %+v", got, want)
	}
}

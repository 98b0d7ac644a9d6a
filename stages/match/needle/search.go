package needle

import (
	"image"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"gocv.io/x/gocv"

	"jetqa/schemas"
)

// AreaResult is where a needle's match area was found and how well.
type AreaResult struct {
	X, Y, Width, Height int
	// Similarity is 1 for the same picture (mean squared error of the
	// grey values ≤ 2) down to 0 (≥ 40), see docs/matching.md.
	Similarity float64
	OK         bool // Similarity reached the area's match level
}

// Candidate is one needle's result on a screen.
type Candidate struct {
	Needle string
	Areas  []AreaResult // one per match area, in the needle's order
	// Error is the mean of (1-Similarity)² over the areas: 0 is perfect.
	Error float64
	OK    bool // every area is OK
	// Workaround is the needle's "workaround" property: it wins ties.
	Workaround bool
}

// Search looks for needles on screen as os-autoinst's search(needles,
// threshold, ratio) does. An area passes when its similarity is at least
// its match level minus threshold (assert_screen uses 0). Each area is
// searched within its margin grown by ratio of the way to 1024 pixels:
// assert_screen uses 0.02 (near the area), and 1 (the whole screen) every
// fifth second and at the deadline.
//
// all holds every needle's result, best first: OK before not OK, then by
// Error, then needles with the "workaround" property first, then by name.
// best is &all[0] when that matched, else nil.
func Search(screen *Screen, needles []*Needle, threshold, ratio float64) (best *Candidate, all []Candidate) {
	screen.mu.Lock()
	defer screen.mu.Unlock()

	areas := screen.search(needles, threshold, ratio)
	all = make([]Candidate, 0, len(needles))
	for i, n := range needles {
		c := Candidate{Needle: n.name, Areas: areas[i], OK: true, Workaround: n.workaround}
		for j := range c.Areas {
			r := &c.Areas[j]
			r.OK = !(r.Similarity < n.areas[j].level-threshold)
			c.OK = c.OK && r.OK
			c.Error += (1 - r.Similarity) * (1 - r.Similarity)
		}
		c.Error /= float64(len(c.Areas))
		all = append(all, c)
	}
	slices.SortStableFunc(all, func(a, b Candidate) int { return schemas.CompareCandidates(a.ranking(), b.ranking()) })
	if len(all) > 0 && all[0].OK {
		best = &all[0]
	}
	return best, all
}

// areaSearch is one match area to search for, with what tinycv's prep
// would have blurred by the time it gets there.
type areaSearch struct {
	needle int // index in the needles searched for
	area   int
	window image.Rectangle // empty: not searched, similarity 0 at (0,0)
	prep   *preparation
}

// preparation is the screen prepared for one roi, shared by the areas
// searched while tinycv's prep had blurred that roi. It is made by the
// first of them and freed by the last.
type preparation struct {
	excludes []image.Rectangle
	roi      image.Rectangle
	once     sync.Once
	grey     gocv.Mat
	err      error
	users    atomic.Int32

	// wholeScreen counts the areas searched on all of the screen. When
	// there are enough of them to share its DFT, the areas that the
	// exact search leaves to OpenCV are searched through it (searchFFT);
	// the first that needs it makes it.
	wholeScreen  int
	spectrumOnce sync.Once
	spectrum     gocv.Mat
	spectrumErr  error
}

// wholeSpectrum is the DFT of the whole prepared screen.
func (p *preparation) wholeSpectrum() (gocv.Mat, error) {
	p.spectrumOnce.Do(func() {
		p.spectrum, p.spectrumErr = windowSpectrum(p.grey, image.Rect(0, 0, p.grey.Cols(), p.grey.Rows()))
	})
	return p.spectrum, p.spectrumErr
}

// done is called by each area searched on p once it is done with it: the
// last frees what the first made.
func (p *preparation) done() {
	if p.users.Add(-1) != 0 || p.err != nil {
		return
	}
	p.grey.Close()
	if p.spectrum.Ptr() != nil {
		p.spectrum.Close()
	}
}

// search searches for every area of needles, in parallel on up to
// GOMAXPROCS threads, as tinycv's search_ does one needle after the other
// and one area after the other: each area is searched on the screen
// prepared as tinycv's would be at that point. It returns the areas'
// results, needle by needle, and remembers in s what tinycv would have
// blurred.
func (s *Screen) search(needles []*Needle, threshold, ratio float64) [][]AreaResult {
	searches := plan(needles, ratio, s.Bounds(), &s.roi)
	results := make([][]AreaResult, len(needles))
	for k, n := range needles {
		results[k] = make([]AreaResult, len(n.areas))
	}

	run := func(as *areaSearch) {
		a := &needles[as.needle].areas[as.area]
		res := &results[as.needle][as.area]
		*res = AreaResult{Width: a.rect.Dx(), Height: a.rect.Dy()}
		p := as.prep
		if p == nil {
			return
		}
		p.once.Do(func() { p.grey, p.err = prepareROI(s.grey, p.excludes, p.roi) })
		if p.err == nil {
			*res = searchArea(p, a, as.window, a.level-threshold)
		}
		p.done()
	}
	workers := min(runtime.GOMAXPROCS(0), len(searches))
	if workers <= 1 {
		for _, as := range searches {
			run(as)
		}
	} else {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for i := next.Add(1) - 1; i < int64(len(searches)); i = next.Add(1) - 1 {
					run(searches[i])
				}
			})
		}
		wg.Wait()
	}

	return results
}

// plan is the order of tinycv's search of needles: each area with its
// window and the preparation of the screen it is searched on. roi is what
// the screen had blurred before, and is updated.
func plan(needles []*Needle, ratio float64, bounds image.Rectangle, roi *image.Rectangle) []*areaSearch {
	var searches []*areaSearch
	var preps []*preparation
	// stateOf is the preparation for roi, shared by all areas that see
	// the same pixels.
	stateOf := func(excludes []image.Rectangle, roi image.Rectangle) *preparation {
		if k := slices.IndexFunc(preps, func(p *preparation) bool {
			return p.roi == roi && slices.Equal(p.excludes, excludes)
		}); k >= 0 {
			return preps[k]
		}
		p := &preparation{excludes: excludes, roi: roi}
		preps = append(preps, p)
		return p
	}
	for k, n := range needles {
		// A needle with exclude areas is searched on a copy of the screen,
		// with its own prep starting from nothing.
		r := roi
		if len(n.excludes) > 0 {
			r = new(image.Rectangle)
		}
		for i := range n.areas {
			as := &areaSearch{needle: k, area: i, window: searchWindow(&n.areas[i], ratio, bounds)}
			if !as.window.Empty() {
				*r = grownROI(*r, as.window, bounds)
				as.prep = stateOf(n.excludes, *r)
				as.prep.users.Add(1)
				if as.window == bounds {
					as.prep.wholeScreen++
				}
			}
			searches = append(searches, as)
		}
	}
	return searches
}

// maxMargin keeps a search margin, and sums with it, far from overflow
// whatever ratio a caller passes.
const maxMargin = 1 << 20

// searchWindow is where tinycv's search_TEMPLATE looks for a: the area
// grown by its margin, grown by ratio of the way to 1024 pixels, clipped to
// the screen. It is empty when a is not searched: a outside the screen
// (tinycv: "search: out of range"), or a negative ratio.
func searchWindow(a *matchArea, ratio float64, bounds image.Rectangle) image.Rectangle {
	if !a.rect.In(bounds) {
		return image.Rectangle{}
	}
	m := float64(a.margin) + ratio*float64(1024-a.margin)
	if m > maxMargin {
		m = maxMargin
	} else if !(m >= -maxMargin) { // also NaN
		m = -maxMargin
	}
	margin := int(m)
	window := image.Rectangle{
		Min: image.Pt(max(0, a.rect.Min.X-margin), max(0, a.rect.Min.Y-margin)),
		Max: image.Pt(min(bounds.Max.X, a.rect.Max.X+margin), min(bounds.Max.Y, a.rect.Max.Y+margin)),
	}
	if window.Dx() < a.rect.Dx() || window.Dy() < a.rect.Dy() {
		return image.Rectangle{}
	}
	return window
}

// searchArea is the search of tinycv's search_TEMPLATE: find a's pixels
// in window of p's grey, the prepared screen, near a's position. need is
// the similarity the area needs to pass.
//
// The exact search decides, faster and in integers, wherever one
// position is clearly the one tinycv picks. Where others are about as
// good (a repeated widget, a flat area, an exclude area) the float32
// rounding of tinycv's sums and the order of its sort pick one of them:
// for an area that passes, tinycvPick finds that one, as assert_and_click
// clicks there. Where the area fails, the exact search's pick stands.
func searchArea(p *preparation, a *matchArea, window image.Rectangle, need float64) AreaResult {
	res := AreaResult{Width: a.rect.Dx(), Height: a.rect.Dy()}
	grey := p.grey
	pixels := float64(a.rect.Dx() * a.rect.Dy())
	m := searchExact(grey, a, window)
	if m.result == exactTooCostly && p.wholeScreen >= fftMinAreas && window == image.Rect(0, 0, grey.Cols(), grey.Rows()) {
		if spectrum, err := p.wholeSpectrum(); err == nil {
			m = searchFFT(grey, spectrum, a, window)
		}
	}
	switch m.result {
	case exactNothingClose:
		res.X, res.Y = a.rect.Min.X, a.rect.Min.Y
		return res
	case exactFound:
		pos := m.pos.Add(window.Min)
		res.X, res.Y, res.Similarity = pos.X, pos.Y, similarity(float64(m.ssd)/pixels)
		// The positions tied with it are at most 10 + slack worse.
		if !m.tied || res.Similarity < need-float64(10+m.slack)/pixels/380 {
			return res
		}
	}
	pos, r := tinycvPick(grey, a, window)
	switch r {
	case zeroAtArea:
		res.X, res.Y, res.Similarity = a.rect.Min.X, a.rect.Min.Y, 1
	case picked:
		screen, err := grey.DataPtrUint8()
		if err != nil {
			return res // prepare's output is continuous
		}
		res.X, res.Y = pos.X, pos.Y
		res.Similarity = similarity(meanSquaredError(screen, grey.Cols(), a, pos))
	}
	// noPick (only with NaN sums) or pickFailed: what the exact search
	// found, if anything.
	return res
}

// similarity is tinycv's similarity of an area found with a mean squared
// error of the grey values: 1 up to 2, 0.96 at 17.2, 0 from 382.
func similarity(mse float64) float64 { return min(1, max(0, 0.9+(40-mse)/380)) }

// meanSquaredError compares a's pixels with the screen's grey pixels
// (cols wide) at pos, tinycv's enhancedMSE.
func meanSquaredError(screen []uint8, cols int, a *matchArea, pos image.Point) float64 {
	needle, err := a.pixels.DataPtrUint8()
	if err != nil {
		return 10000 // a clone is continuous
	}
	w, h := a.rect.Dx(), a.rect.Dy()
	var sum int64
	for y := range h {
		row := screen[(pos.Y+y)*cols+pos.X:][:w]
		for x, v := range needle[y*w:][:w] {
			d := int64(row[x]) - int64(v)
			sum += d * d
		}
	}
	return float64(sum) / float64(w*h)
}

// ranking is what os-autoinst ranks a candidate by.
func (c Candidate) ranking() schemas.CandidateMatch {
	return schemas.CandidateMatch{Needle: c.Needle, OK: c.OK, Error: c.Error, Workaround: c.Workaround}
}

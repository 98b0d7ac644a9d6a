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

	areas := screen.search(needles, ratio)
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
func (s *Screen) search(needles []*Needle, ratio float64) [][]AreaResult {
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
			*res = searchArea(p, a, as.window)
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
// in window of p's grey, the prepared screen, near a's position.
func searchArea(p *preparation, a *matchArea, window image.Rectangle) AreaResult {
	res := AreaResult{Width: a.rect.Dx(), Height: a.rect.Dy()}
	grey := p.grey
	// took reports whether a search decided the area, into res.
	took := func(pos image.Point, ssd int64, r exactResult) bool {
		switch r {
		case exactFound:
			pos = pos.Add(window.Min)
			mse := float64(ssd) / float64(a.rect.Dx()*a.rect.Dy())
			res.X, res.Y, res.Similarity = pos.X, pos.Y, similarity(mse)
			return true
		case exactNothingClose:
			res.X, res.Y = a.rect.Min.X, a.rect.Min.Y
			return true
		}
		return false
	}
	if took(searchExact(grey, a, window)) {
		return res
	}
	if p.wholeScreen >= fftMinAreas && window == image.Rect(0, 0, grey.Cols(), grey.Rows()) {
		if spectrum, err := p.wholeSpectrum(); err == nil && took(searchFFT(grey, spectrum, a, window)) {
			return res
		}
	}
	scene := grey.Region(window)
	defer scene.Close()
	sqdiff := gocv.NewMat()
	defer sqdiff.Close()
	noMask := gocv.NewMat()
	defer noMask.Close()
	gocv.MatchTemplate(scene, a.pixels, &sqdiff, gocv.TmSqdiff, noMask)
	diffs, err := sqdiff.DataPtrFloat32()
	if err != nil {
		return res // a fresh result matrix is continuous
	}
	cols := sqdiff.Cols()

	// The squared difference at the original position bounds the search;
	// exactly 0 there is taken without looking further.
	orig := a.rect.Min.Sub(window.Min)
	atOrig := diffs[orig.Y*cols+orig.X]
	if atOrig == 0 {
		res.X, res.Y, res.Similarity = a.rect.Min.X, a.rect.Min.Y, 1
		return res
	}
	pos, ok := closestNearMinimum(diffs, cols, atOrig, a.rect.Min)
	if !ok {
		return res // only with NaN differences
	}
	pos = pos.Add(window.Min)
	res.X, res.Y = pos.X, pos.Y

	pixels, err := grey.DataPtrUint8()
	if err != nil {
		return res // prepare's output is continuous
	}
	mse := meanSquaredError(pixels, grey.Cols(), a, pos)
	res.Similarity = similarity(mse)
	return res
}

// similarity is tinycv's similarity of an area found with a mean squared
// error of the grey values: 1 up to 2, 0.96 at 17.2, 0 from 382.
func similarity(mse float64) float64 { return min(1, max(0, 0.9+(40-mse)/380)) }

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

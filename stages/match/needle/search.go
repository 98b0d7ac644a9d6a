package needle

import (
	"cmp"
	"image"
	"slices"

	"gocv.io/x/gocv"
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

	type ranked struct {
		Candidate
		workaround bool
	}
	results := make([]ranked, 0, len(needles))
	for _, n := range needles {
		results = append(results, ranked{screen.search(n, threshold, ratio), n.workaround})
	}
	slices.SortStableFunc(results, func(a, b ranked) int {
		switch {
		case a.OK != b.OK:
			if a.OK {
				return -1
			}
			return 1
		case a.Error != b.Error:
			return cmp.Compare(a.Error, b.Error)
		case a.workaround != b.workaround:
			if a.workaround {
				return -1
			}
			return 1
		}
		return cmp.Compare(a.Needle, b.Needle)
	})
	all = make([]Candidate, len(results))
	for i, r := range results {
		all[i] = r.Candidate
	}
	if len(all) > 0 && all[0].OK {
		best = &all[0]
	}
	return best, all
}

// search is tinycv's search_ for one needle.
func (s *Screen) search(n *Needle, threshold, ratio float64) Candidate {
	img := s.img
	if len(n.excludes) > 0 {
		// Paint into a copy, which is then prepared on its own.
		colour := s.img.colour.Clone()
		defer colour.Close()
		bounds := s.Bounds()
		for _, r := range n.excludes {
			if r.In(bounds) { // replacerect skips what does not fit
				paintGreen(colour, r)
			}
		}
		img = newPreparedImage(colour)
		defer img.Close()
	}

	c := Candidate{Needle: n.name, OK: true}
	for i := range n.areas {
		a := &n.areas[i]
		r := searchArea(img, a, ratio)
		r.OK = !(r.Similarity < a.level-threshold)
		c.OK = c.OK && r.OK
		c.Areas = append(c.Areas, r)
		c.Error += (1 - r.Similarity) * (1 - r.Similarity)
	}
	c.Error /= float64(len(c.Areas))
	return c
}

// maxMargin keeps a search margin, and sums with it, far from overflow
// whatever ratio a caller passes.
const maxMargin = 1 << 20

// searchArea is tinycv's search_TEMPLATE: find a's pixels on img near
// a's position.
func searchArea(img *preparedImage, a *matchArea, ratio float64) AreaResult {
	res := AreaResult{Width: a.rect.Dx(), Height: a.rect.Dy()}
	bounds := image.Rect(0, 0, img.colour.Cols(), img.colour.Rows())
	if !a.rect.In(bounds) {
		return res // tinycv: "search: out of range", at (0,0)
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
		return res // only with a negative ratio
	}

	grey := img.prep(window)
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
		return res // cvtColor's output is continuous
	}
	mse := meanSquaredError(pixels, grey.Cols(), a, pos)
	res.Similarity = min(1, max(0, 0.9+(40-mse)/380))
	return res
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

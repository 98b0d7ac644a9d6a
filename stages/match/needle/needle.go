// Package needle decides whether openQA needles are on a screen, the way
// os-autoinst's tinycv does, so that needle repositories written for openQA
// pass and fail here exactly as they do there. The match stage runs it for
// every screen a job asks about; docs/matching.md explains the semantics.
package needle

import (
	"image"

	"gocv.io/x/gocv"

	"jetqa/schemas"
)

// Needle is a needle ready to search for: its match areas as grey, blurred
// pixels cut from its PNG (with the exclude areas painted green first).
// One Needle may be searched for on many screens at once: it changes only
// to keep, under a lock, the areas' DFTs that whole-screen searches make.
// Close frees its OpenCV memory.
type Needle struct {
	name       string
	workaround bool
	areas      []matchArea       // the match areas, in file order
	excludes   []image.Rectangle // painted green on the screen before searching
}

type matchArea struct {
	rect   image.Rectangle // in the needle's PNG and, unmoved, on the screen
	margin float64         // os-autoinst computes with fractional margins
	level  float64         // similarity needed: 0..1, or beyond, never or always reached
	// pixels are the area's preprocessed grey pixels, continuous; none
	// for an area at a negative position, which is never searched.
	pixels gocv.Mat
	// spectra are the pixels' DFTs, for the FFT search.
	spectra *areaSpectra
}

// Prepare decodes a needle's PNG and preprocesses its areas. Its errors are
// *schemas.NeedleError naming the needle: a PNG that does not decode, or
// what schemas.Needle.Validate refuses. Areas os-autoinst accepts but
// never uses are kept only as far as they matter: a match area at a
// negative position (never searched, similarity 0), an empty exclude
// area (excludes nothing), areas of other types (ignored).
func Prepare(spec schemas.Needle, pngData []byte) (*Needle, error) {
	fail := func(err error) error { return &schemas.NeedleError{Needle: spec.Name, Err: err} }
	grey, err := decodeGrey(pngData)
	if err != nil {
		return nil, fail(err)
	}
	defer grey.Close()
	if err := spec.Validate(grey.Cols(), grey.Rows()); err != nil {
		return nil, err
	}

	n := &Needle{name: spec.Name, workaround: spec.HasProperty("workaround")}
	for _, a := range spec.Areas {
		r := image.Rect(a.X, a.Y, a.X+a.Width, a.Y+a.Height)
		switch {
		case a.Type == schemas.AreaTypeMatch:
			if a.X < 0 || a.Y < 0 {
				// tinycv never searches it ("out of range"); a
				// non-empty rectangle off every screen has the search
				// say so too, whatever the area's size.
				r = image.Rect(a.X, a.Y, a.X+max(a.Width, 1), a.Y+max(a.Height, 1))
			}
			n.areas = append(n.areas, matchArea{rect: r, margin: a.Margin, level: a.Match / 100, spectra: &areaSpectra{}})
		// tinycv's replacerect paints nothing for an empty rectangle,
		// which image.Rect would turn around.
		case a.Type == schemas.AreaTypeExclude && a.Width > 0 && a.Height > 0:
			n.excludes = append(n.excludes, r)
		}
	}

	// tinycv blurs the union of the areas asked for so far, so after the
	// first search every area is cut from the image prepared for all of
	// them; this is that steady state.
	bounds := image.Rect(0, 0, grey.Cols(), grey.Rows())
	var roi image.Rectangle
	for _, a := range n.areas {
		if a.rect.In(bounds) {
			roi = grownROI(roi, a.rect, bounds)
		}
	}
	prepared, err := prepareROI(grey, n.excludes, roi)
	if err != nil {
		return nil, fail(err)
	}
	defer prepared.Close()
	for i := range n.areas {
		if !n.areas[i].rect.In(bounds) {
			continue
		}
		region := prepared.Region(n.areas[i].rect)
		n.areas[i].pixels = region.Clone()
		region.Close()
	}
	return n, nil
}

// Name is the needle's name, as in its spec.
func (n *Needle) Name() string { return n.name }

// MatchAreas is how many match areas the needle has: how many searches
// looking for it takes.
func (n *Needle) MatchAreas() int { return len(n.areas) }

// Close frees the needle's OpenCV memory. The Needle must not be searched
// for afterwards.
func (n *Needle) Close() {
	for i := range n.areas {
		n.areas[i].pixels.Close()
		n.areas[i].spectra.close()
	}
}

// Bytes is the memory the needle's prepared pixels take.
func (n *Needle) Bytes() int64 {
	var b int64
	for i := range n.areas {
		if !n.areas[i].pixels.Empty() {
			b += int64(n.areas[i].pixels.Total() * n.areas[i].pixels.ElemSize())
		}
	}
	return b
}

// Package needle decides whether openQA needles are on a screen, the way
// os-autoinst's tinycv does, so that needle repositories written for openQA
// pass and fail here exactly as they do there. The match stage runs it for
// every screen a job asks about; docs/matching.md explains the semantics.
package needle

import (
	"bytes"
	"fmt"
	"image"
	"image/png"

	"gocv.io/x/gocv"

	"jetqa/schemas"
)

// Limits on decoded images: OpenCV aborts the process on images larger
// than its own limits, and a screen is never this big.
const (
	maxSide   = 1 << 14
	maxPixels = 1 << 26
)

// Needle is a needle ready to search for: its match areas as grey, blurred
// pixels cut from its PNG (with the exclude areas painted green first).
// It is immutable, so one Needle may be searched for on many screens at
// once. Close frees its OpenCV memory.
type Needle struct {
	name       string
	workaround bool
	areas      []matchArea       // the match areas, in file order
	excludes   []image.Rectangle // painted green on the screen before searching
}

type matchArea struct {
	rect   image.Rectangle // in the needle's PNG and, unmoved, on the screen
	margin int
	level  float64  // similarity needed, 0..1
	pixels gocv.Mat // the area's preprocessed grey pixels, continuous
}

// Prepare decodes a needle's PNG and preprocesses its areas. Its errors are
// *schemas.NeedleError naming the needle: a PNG that does not decode, an
// area outside it, a needle without match area.
func Prepare(spec schemas.Needle, pngData []byte) (*Needle, error) {
	fail := func(err error) error { return &schemas.NeedleError{Needle: spec.Name, Err: err} }
	img, err := decodePNG(pngData)
	if err != nil {
		return nil, fail(err)
	}
	defer img.Close()
	if err := spec.Validate(img.Cols(), img.Rows()); err != nil {
		return nil, err
	}

	n := &Needle{name: spec.Name, workaround: spec.HasProperty("workaround")}
	for _, a := range spec.Areas {
		r := image.Rect(a.X, a.Y, a.X+a.Width, a.Y+a.Height)
		switch a.Type {
		case schemas.AreaTypeMatch:
			n.areas = append(n.areas, matchArea{rect: r, margin: a.Margin, level: a.Match / 100})
		case schemas.AreaTypeExclude:
			n.excludes = append(n.excludes, r)
		}
	}
	for _, r := range n.excludes {
		paintGreen(img, r)
	}

	// tinycv blurs the union of the areas asked for so far, so after the
	// first search every area is cut from the image prepared for all of
	// them; this is that steady state.
	grey := newPreparedImage(img)
	defer grey.Close()
	for _, a := range n.areas {
		grey.prep(a.rect)
	}
	for i := range n.areas {
		region := grey.grey.Region(n.areas[i].rect)
		n.areas[i].pixels = region.Clone()
		region.Close()
	}
	return n, nil
}

// Name is the needle's name, as in its spec.
func (n *Needle) Name() string { return n.name }

// Close frees the needle's OpenCV memory. The Needle must not be searched
// for afterwards.
func (n *Needle) Close() {
	for i := range n.areas {
		n.areas[i].pixels.Close()
	}
}

// decodePNG reads a PNG as 8-bit BGR, as tinycv's imread(IMREAD_COLOR)
// does. The header is checked in Go first: OpenCV's decoder aborts the
// process (an uncaught C++ exception) on some inputs, e.g. huge sizes.
func decodePNG(data []byte) (gocv.Mat, error) {
	cfg, err := png.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return gocv.Mat{}, fmt.Errorf("not a PNG: %w", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || cfg.Width > maxSide || cfg.Height > maxSide || cfg.Width*cfg.Height > maxPixels {
		return gocv.Mat{}, fmt.Errorf("PNG of %dx%d pixels is empty or too big", cfg.Width, cfg.Height)
	}
	img, err := gocv.IMDecode(data, gocv.IMReadColor)
	if err != nil {
		return gocv.Mat{}, fmt.Errorf("PNG of %dx%d pixels does not decode: %w", cfg.Width, cfg.Height, err)
	}
	if img.Empty() || img.Type() != gocv.MatTypeCV8UC3 {
		img.Close()
		return gocv.Mat{}, fmt.Errorf("PNG of %dx%d pixels does not decode", cfg.Width, cfg.Height)
	}
	return img, nil
}

// paintGreen fills r with pure green (BGR 0,255,0), tinycv's replacerect:
// the same in needle and screen, so an exclude area never differs.
func paintGreen(img gocv.Mat, r image.Rectangle) {
	region := img.Region(r)
	region.SetTo(gocv.NewScalar(0, 255, 0, 0))
	region.Close()
}

// preparedImage is tinycv's Image::prep: grey values of the whole image,
// blurred only inside roi, the union of the rectangles asked for so far
// (or all of it, once that is half the image). Where it blurs matters for
// the last bit: OpenCV rounds exact halves up when blurring a whole image
// but mostly to even when blurring a sub-rectangle, and the exact-zero
// shortcut of the search sees that difference.
type preparedImage struct {
	colour gocv.Mat // BGR; not owned
	grey   gocv.Mat
	roi    image.Rectangle
}

func newPreparedImage(colour gocv.Mat) *preparedImage {
	return &preparedImage{colour: colour, grey: gocv.NewMat()}
}

// prep makes the grey image valid inside roi and returns it.
func (p *preparedImage) prep(roi image.Rectangle) gocv.Mat {
	if !p.roi.Empty() && roi.In(p.roi) {
		return p.grey
	}
	p.roi = p.roi.Union(roi)
	gocv.CvtColor(p.colour, &p.grey, gocv.ColorBGRToGray)
	whole := image.Rect(0, 0, p.colour.Cols(), p.colour.Rows())
	if float64(whole.Dx()*whole.Dy())*0.5 <= float64(p.roi.Dx()*p.roi.Dy()) {
		p.roi = whole
	}
	region := p.grey.Region(p.roi)
	gocv.GaussianBlur(region, &region, image.Pt(3, 3), 0, 0, gocv.BorderReflect101)
	region.Close()
	return p.grey
}

// Close frees the grey image (not the colour one).
func (p *preparedImage) Close() { p.grey.Close() }

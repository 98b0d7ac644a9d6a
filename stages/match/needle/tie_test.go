package needle

import (
	"image"
	"math"
	"slices"
	"testing"

	"gocv.io/x/gocv"
)

// TestTieSlack measures how far tinycv's sums of squared differences,
// OpenCV's float32 matchTemplate, stray from the exact ones, on the real
// testos screens and every test picture, near the area and on the whole
// screen: at most 8·2⁻²⁴·(√(wsq·tsq) + tsq) for a window whose squares add
// up to wsq and a template whose squares add up to tsq. jetqa_tie_slack
// allows 8 times that on both of two sums, so that where the exact search
// sees no tie, float32 sums see none either. (The most seen here is about
// half the bound.)
func TestTieSlack(t *testing.T) {
	cases := slices.Concat(testosCases(t), searchCases(), tieCases())
	worst := 0.0
	for _, tc := range cases {
		needles := prepareAll(t, tc.needles)
		s := decodeScreen(t, tc.screen)
		for _, as := range plan(needles, tc.ratio, s.Bounds(), &s.roi) {
			if as.prep == nil {
				continue
			}
			a := &needles[as.needle].areas[as.area]
			grey, err := prepareROI(s.grey, as.prep.excludes, as.prep.roi)
			if err != nil {
				t.Fatal(err)
			}
			errs, wsq, tsq := float32Errors(t, grey, a, as)
			u := math.Ldexp(1, -24)
			bound := 8 * u * (math.Sqrt(float64(wsq)*float64(tsq)) + float64(tsq))
			if errs > bound {
				t.Errorf("%s, area %v in %v: float32 sums off by %v, more than %v", tc.name, a.rect, as.window, errs, bound)
			}
			if slack := tieSlack(wsq, tsq); float64(slack) < 2*8*bound {
				t.Errorf("%s: tie slack %d below 16 times %v", tc.name, slack, bound)
			}
			if bound > 0 {
				worst = max(worst, errs/bound)
			}
			grey.Close()
		}
		s.Close()
		for _, n := range needles {
			n.Close()
		}
	}
	t.Logf("float32 sums off by at most %.2f of the bound", worst)
}

// float32Errors is the largest difference between tinycv's float32 sums
// of squared differences for the area as searched and the exact ones,
// which come from float64 DFTs rounded to integers (their error is far
// below one half), and the sums of squares of the window and template.
func float32Errors(t *testing.T, grey gocv.Mat, a *matchArea, as *areaSearch) (float64, int64, int64) {
	t.Helper()
	scene := grey.Region(as.window)
	defer scene.Close()
	res := gocv.NewMat()
	defer res.Close()
	noMask := gocv.NewMat()
	defer noMask.Close()
	gocv.MatchTemplate(scene, a.pixels, &res, gocv.TmSqdiff, noMask)
	f, err := res.DataPtrFloat32()
	if err != nil {
		t.Fatal(err)
	}
	spectrum, err := windowSpectrum(grey, as.window)
	if err != nil {
		t.Fatal(err)
	}
	defer spectrum.Close()
	tplSpectrum, kept, err := a.spectrum(image.Pt(spectrum.Cols(), spectrum.Rows()))
	if err != nil {
		t.Fatal(err)
	}
	if !kept {
		defer tplSpectrum.Close()
	}
	tw, th := a.rect.Dx(), a.rect.Dy()
	nx, ny := as.window.Dx()-tw+1, as.window.Dy()-th+1
	corrMat := gocv.NewMat()
	defer corrMat.Close()
	if err := correlate(spectrum, tplSpectrum, ny, &corrMat); err != nil {
		t.Fatal(err)
	}
	corr, err := corrMat.DataPtrFloat64()
	if err != nil {
		t.Fatal(err)
	}
	pix, _ := grey.DataPtrUint8()
	tpl, _ := a.pixels.DataPtrUint8()
	cols := grey.Cols()
	var tsq, wsq int64
	for _, v := range tpl {
		tsq += int64(v) * int64(v)
	}
	// sq holds the window's integral image of squares.
	w1 := as.window.Dx() + 1
	sq := make([]int64, w1*(as.window.Dy()+1))
	for y := range as.window.Dy() {
		var row int64
		for x := range as.window.Dx() {
			v := int64(pix[(as.window.Min.Y+y)*cols+as.window.Min.X+x])
			row += v * v
			sq[(y+1)*w1+x+1] = sq[y*w1+x+1] + row
		}
	}
	wsq = sq[len(sq)-1]
	worst := 0.0
	for py := range ny {
		for px := range nx {
			under := sq[(py+th)*w1+px+tw] - sq[(py+th)*w1+px] - sq[py*w1+px+tw] + sq[py*w1+px]
			exact := under + tsq - 2*int64(math.Round(corr[py*corrMat.Cols()+px]))
			worst = max(worst, math.Abs(float64(f[py*nx+px])-float64(exact)))
		}
	}
	return worst, wsq, tsq
}

package needle

// #cgo CXXFLAGS: -std=c++11 -O2
// #cgo pkg-config: opencv4
// #include "exact.h"
// #include "fft.h"
import "C"

import (
	"errors"
	"image"
	"unsafe"

	"gocv.io/x/gocv"
)

// fftBudget is how many pixel operations per pixel of the search window
// the FFT search may spend on exact sums before it leaves the area to
// matchTemplate.
var fftBudget int64 = 16

// fftMinAreas is how many areas must be searched on the whole screen for
// the FFT search to pay: the screen's DFT costs about half of what
// matchTemplate costs for one area, and each area searched through it
// about three quarters. (For a window near the area, the DFTs cost as
// much as matchTemplate.)
const fftMinAreas = 2

// windowSpectrum is the DFT of window of grey, padded to a size OpenCV's
// DFT is fast for, and to 2x2 at least: OpenCV takes a single row or
// column for a one-dimensional transform.
func windowSpectrum(grey gocv.Mat, window image.Rectangle) (gocv.Mat, error) {
	pixels, err := grey.DataPtrUint8()
	if err != nil {
		return gocv.Mat{}, err
	}
	cols := grey.Cols()
	spectrum := gocv.NewMat()
	if C.jetqa_spectrum((*C.uint8_t)(unsafe.Pointer(&pixels[window.Min.Y*cols+window.Min.X])), C.int(cols),
		C.int(window.Dx()), C.int(window.Dy()),
		C.int(max(2, gocv.GetOptimalDFTSize(window.Dx()))), C.int(max(2, gocv.GetOptimalDFTSize(window.Dy()))),
		unsafe.Pointer(spectrum.Ptr())) != 0 {
		spectrum.Close()
		return gocv.Mat{}, errors.New("DFT failed")
	}
	return spectrum, nil
}

// correlate is the cross-correlation of pixels (continuous) with the
// window whose spectrum is given, its first rows rows, into corr:
// corr(x,y) = Σ window(x+i, y+j)·pixels(i, j), in float64. A sum of
// squared differences made from it is off by at most fftBound.
func correlate(spectrum, pixels gocv.Mat, rows int, corr *gocv.Mat) error {
	tpl, err := pixels.DataPtrUint8()
	if err != nil {
		return err
	}
	if C.jetqa_correlate(unsafe.Pointer(spectrum.Ptr()), (*C.uint8_t)(unsafe.Pointer(&tpl[0])),
		C.int(pixels.Cols()), C.int(pixels.Rows()), C.int(rows), unsafe.Pointer(corr.Ptr())) != 0 {
		return errors.New("DFT failed")
	}
	return nil
}

// fftBound is jetqa_fft_bound: how far a sum of squared differences from
// correlate can be off, for DFTs of size pw x ph, a window with the sum
// wsum and the sum of squares wsq, a template with tsum and tsq.
func fftBound(pw, ph int, wsum, wsq, tsum, tsq int64) float64 {
	return float64(C.jetqa_fft_bound(C.int(pw), C.int(ph), C.int64_t(wsum), C.int64_t(wsq), C.int64_t(tsum), C.int64_t(tsq)))
}

// searchFFT is searchExact for a window whose spectrum is known: the
// squared differences at every position come approximately from the
// cross-correlation through the DFT, and exactly, in integers, only where
// the approximation leaves the choice open (jetqa_fft_search).
func searchFFT(grey, spectrum gocv.Mat, a *matchArea, window image.Rectangle) (image.Point, int64, exactResult) {
	screen, err1 := grey.DataPtrUint8()
	tpl, err2 := a.pixels.DataPtrUint8()
	if errors.Join(err1, err2) != nil {
		return image.Point{}, 0, exactTooCostly
	}
	tw, th := a.rect.Dx(), a.rect.Dy()
	corr := gocv.NewMat()
	defer corr.Close()
	if correlate(spectrum, a.pixels, window.Dy()-th+1, &corr) != nil {
		return image.Point{}, 0, exactTooCostly
	}
	approx, err := corr.DataPtrFloat64()
	if err != nil {
		return image.Point{}, 0, exactTooCostly
	}
	cols := grey.Cols()
	orig := a.rect.Min.Sub(window.Min)
	var m C.jetqa_match
	r := C.jetqa_fft_search((*C.double)(unsafe.Pointer(&approx[0])), C.int(corr.Cols()), C.int(spectrum.Cols()), C.int(spectrum.Rows()),
		(*C.uint8_t)(unsafe.Pointer(&screen[window.Min.Y*cols+window.Min.X])), C.int(cols),
		C.int(window.Dx()), C.int(window.Dy()),
		(*C.uint8_t)(unsafe.Pointer(&tpl[0])), C.int(tw), C.int(th),
		C.int(orig.X), C.int(orig.Y), C.int(a.rect.Min.X), C.int(a.rect.Min.Y),
		C.int64_t(fftBudget*int64(window.Dx())*int64(window.Dy())), &m)
	return image.Pt(int(m.x), int(m.y)), int64(m.ssd), exactResult(r)
}

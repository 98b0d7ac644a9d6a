package needle

// #cgo CXXFLAGS: -std=c++11 -O2
// #cgo pkg-config: opencv4
// #include "exact.h"
// #include "fft.h"
import "C"

import (
	"errors"
	"image"
	"sync"
	"sync/atomic"
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
// about half too (three quarters when its DFT is not kept). (For a
// window near the area, the DFTs cost as much as matchTemplate.)
const fftMinAreas = 2

// DefaultKeptSpectra is how many bytes of needle areas' spectra a process
// keeps unless told otherwise, about 80 areas for 1024x768 screens: an
// area's spectrum is as large as the screen's, 8 bytes a pixel, and a
// matcher keeps its needles for its whole life. Areas beyond it have
// theirs made for each search.
const DefaultKeptSpectra = 512 << 20

// maxKeptSpectra is KeepSpectra's bound. Pools set it as they start while
// others may be searching, so it is read and written atomically.
var maxKeptSpectra = func() *atomic.Int64 {
	var m atomic.Int64
	m.Store(DefaultKeptSpectra)
	return &m
}()

// KeepSpectra sets how many bytes of needle areas' spectra the process
// keeps (0: none, each whole-screen search makes its own); spectra kept
// already stay.
func KeepSpectra(bytes int64) { maxKeptSpectra.Store(max(bytes, 0)) }

// keptSpectra is how many bytes of areas' spectra the needles hold.
var keptSpectra atomic.Int64

// areaSpectra are a match area's spectra, one for each DFT size it was
// searched with on a whole screen. Each is made once and freed by
// Needle.Close.
type areaSpectra struct {
	mu     sync.Mutex
	bySize []sizedSpectrum
}

type sizedSpectrum struct {
	size     image.Point
	spectrum gocv.Mat
}

// close frees the spectra.
func (s *areaSpectra) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.bySize {
		e.spectrum.Close()
		keptSpectra.Add(-spectrumBytes(e.size))
	}
	s.bySize = nil
}

func spectrumBytes(size image.Point) int64 { return 8 * int64(size.X) * int64(size.Y) }

// spectrum is a's DFT padded to size, and whether a keeps it; if not, the
// caller closes it.
func (a *matchArea) spectrum(size image.Point) (m gocv.Mat, kept bool, err error) {
	s := a.spectra
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.bySize {
		if e.size == size {
			return e.spectrum, true, nil
		}
	}
	tpl, err := a.pixels.DataPtrUint8()
	if err != nil {
		return gocv.Mat{}, false, err
	}
	if m, err = dft(tpl, a.rect.Dx(), a.rect.Dx(), a.rect.Dy(), size); err != nil {
		return gocv.Mat{}, false, err
	}
	if keptSpectra.Add(spectrumBytes(size)) > maxKeptSpectra.Load() {
		keptSpectra.Add(-spectrumBytes(size))
		return m, false, nil
	}
	s.bySize = append(s.bySize, sizedSpectrum{size, m})
	return m, true, nil
}

// windowSpectrum is the DFT of window of grey, padded to a size OpenCV's
// DFT is fast for, and to 2x2 at least: OpenCV takes a single row or
// column for a one-dimensional transform.
func windowSpectrum(grey gocv.Mat, window image.Rectangle) (gocv.Mat, error) {
	pixels, err := grey.DataPtrUint8()
	if err != nil {
		return gocv.Mat{}, err
	}
	cols := grey.Cols()
	size := image.Pt(max(2, gocv.GetOptimalDFTSize(window.Dx())), max(2, gocv.GetOptimalDFTSize(window.Dy())))
	return dft(pixels[window.Min.Y*cols+window.Min.X:], cols, window.Dx(), window.Dy(), size)
}

// dft is the DFT of the w x h pixels (rows stride apart) padded with zeros
// to size.
func dft(pixels []uint8, stride, w, h int, size image.Point) (gocv.Mat, error) {
	m := gocv.NewMat()
	if C.jetqa_spectrum((*C.uint8_t)(unsafe.Pointer(&pixels[0])), C.int(stride), C.int(w), C.int(h),
		C.int(size.X), C.int(size.Y), unsafe.Pointer(m.Ptr())) != 0 {
		m.Close()
		return gocv.Mat{}, errors.New("DFT failed")
	}
	return m, nil
}

// correlate is the cross-correlation of a template with a window, given
// their spectra, its first rows rows, into corr: corr(x,y) = Σ
// window(x+i, y+j)·template(i, j), in float64. A sum of squared
// differences made from it is off by at most fftBound.
func correlate(spectrum, tplSpectrum gocv.Mat, rows int, corr *gocv.Mat) error {
	if C.jetqa_correlate(unsafe.Pointer(spectrum.Ptr()), unsafe.Pointer(tplSpectrum.Ptr()), C.int(rows), unsafe.Pointer(corr.Ptr())) != 0 {
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
func searchFFT(grey, spectrum gocv.Mat, a *matchArea, window image.Rectangle) exactMatch {
	screen, err1 := grey.DataPtrUint8()
	tpl, err2 := a.pixels.DataPtrUint8()
	if errors.Join(err1, err2) != nil {
		return exactMatch{result: exactTooCostly}
	}
	tw, th := a.rect.Dx(), a.rect.Dy()
	tplSpectrum, kept, err := a.spectrum(image.Pt(spectrum.Cols(), spectrum.Rows()))
	if err != nil {
		return exactMatch{result: exactTooCostly}
	}
	if !kept {
		defer tplSpectrum.Close()
	}
	corr := gocv.NewMat()
	defer corr.Close()
	if correlate(spectrum, tplSpectrum, window.Dy()-th+1, &corr) != nil {
		return exactMatch{result: exactTooCostly}
	}
	approx, err := corr.DataPtrFloat64()
	if err != nil {
		return exactMatch{result: exactTooCostly}
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
	return matchOf(m, r)
}

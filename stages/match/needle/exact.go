package needle

// #cgo CFLAGS: -O3
// #include "exact.h"
import "C"

import (
	"image"
	"sync"
	"unsafe"

	"gocv.io/x/gocv"
)

// exactBudget is how many pixel operations per pixel of the search window
// the exact search may spend before it leaves the area to OpenCV's
// matchTemplate, which costs about as much as 85 of them (measured over
// the areas of BenchmarkAgainstTinycv, where 32 to 48 spent the least in
// all).
var exactBudget int64 = 48

// integrals holds integral images between searches: a window's integral
// image of its values, then that of their squares, in 32-bit sums that
// may wrap.
var integrals sync.Pool

// exactResult is what searchExact found.
type exactResult int

const (
	exactFound        exactResult = C.JETQA_FOUND
	exactNothingClose exactResult = C.JETQA_NOTHING_CLOSE
	exactTooCostly    exactResult = C.JETQA_TOO_COSTLY
)

// exactMatch is what the exact and FFT searches found.
type exactMatch struct {
	pos    image.Point // the position picked, relative to the window
	ssd    int64       // the sum of squared differences there
	result exactResult
	// tied says that another position's sum is so close that tinycv's
	// float32 sums could pick it instead: only tinycvPick can tell.
	tied  bool
	slack int64 // the sums of the positions it was tied with are at most ssd + 10 + slack
	work  int64 // pixel operations spent
}

// searchExact is tinycv's search of a's pixels in window of grey with the
// sums of squared differences computed exactly, in integers.
func searchExact(grey gocv.Mat, a *matchArea, window image.Rectangle) exactMatch {
	screen, err := grey.DataPtrUint8()
	if err != nil {
		return exactMatch{result: exactTooCostly}
	}
	tpl, err := a.pixels.DataPtrUint8()
	if err != nil {
		return exactMatch{result: exactTooCostly}
	}
	cols := grey.Cols()
	orig := a.rect.Min.Sub(window.Min)
	// A fresh integral image of a whole screen would cost more in page
	// faults than computing it.
	n := (window.Dx() + 1) * (window.Dy() + 1)
	ii, giveBack := borrow[uint32](&integrals, 2*n, maxScratch/4)
	defer giveBack()
	var m C.jetqa_match
	r := C.jetqa_exact_search((*C.uint8_t)(unsafe.Pointer(&screen[window.Min.Y*cols+window.Min.X])), C.int(cols),
		C.int(window.Dx()), C.int(window.Dy()),
		(*C.uint8_t)(unsafe.Pointer(&tpl[0])), C.int(a.rect.Dx()), C.int(a.rect.Dy()),
		C.int(orig.X), C.int(orig.Y), C.int(a.rect.Min.X), C.int(a.rect.Min.Y),
		C.int64_t(exactBudget*int64(window.Dx())*int64(window.Dy())), (*C.uint32_t)(unsafe.Pointer(&ii[0])), (*C.uint32_t)(unsafe.Pointer(&ii[n])), &m)
	return matchOf(m, r)
}

func matchOf(m C.jetqa_match, r C.int) exactMatch {
	return exactMatch{pos: image.Pt(int(m.x), int(m.y)), ssd: int64(m.ssd), result: exactResult(r), tied: m.tied != 0, slack: int64(m.slack), work: int64(m.work)}
}

// tieSlack is how far apart two sums of squared differences may be and
// still come out of tinycv's float32 matchTemplate in either order, for a
// window whose squares add up to wsq and a template whose squares add up
// to tsq.
func tieSlack(wsq, tsq int64) int64 { return int64(C.jetqa_tie_slack(C.int64_t(wsq), C.int64_t(tsq))) }

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

// searchExact is tinycv's search of a's pixels in window of grey with the
// sums of squared differences computed exactly, in integers: the position
// picked, relative to the window, and the sum there.
func searchExact(grey gocv.Mat, a *matchArea, window image.Rectangle) (image.Point, int64, exactResult) {
	p, ssd, r, _ := searchExactWork(grey, a, window)
	return p, ssd, r
}

// searchExactWork is searchExact that also tells how many pixel
// operations it spent.
func searchExactWork(grey gocv.Mat, a *matchArea, window image.Rectangle) (image.Point, int64, exactResult, int64) {
	screen, err := grey.DataPtrUint8()
	if err != nil {
		return image.Point{}, 0, exactTooCostly, 0
	}
	tpl, err := a.pixels.DataPtrUint8()
	if err != nil {
		return image.Point{}, 0, exactTooCostly, 0
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
	return image.Pt(int(m.x), int(m.y)), int64(m.ssd), exactResult(r), int64(m.work)
}

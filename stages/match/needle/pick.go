package needle

// #cgo CXXFLAGS: -std=c++11 -O2
// #cgo pkg-config: opencv4
// #include "pick.h"
import "C"

import (
	"image"
	"unsafe"

	"gocv.io/x/gocv"
)

// pickResult is what tinycvPick found.
type pickResult int

const (
	picked     pickResult = C.JETQA_PICKED
	zeroAtArea pickResult = C.JETQA_ZERO_AT_AREA // tinycv's shortcut: similarity 1 at the area's place
	noPick     pickResult = C.JETQA_NO_PICK      // only with NaN values
	pickFailed pickResult = C.JETQA_PICK_FAILED
)

// tinycvPick is the position tinycv's search_TEMPLATE picks for a in
// window of grey, found with OpenCV's float32 matchTemplate as tinycv
// finds it. Where one position is clearly best the exact search picks the
// same one faster; where several are about as good (a repeated widget, a
// flat area, an exclude area), rounding and the order of std::sort decide,
// and only this reproduces them. The position is the screen's.
func tinycvPick(grey gocv.Mat, a *matchArea, window image.Rectangle) (image.Point, pickResult) {
	screen, err := grey.DataPtrUint8()
	if err != nil {
		return image.Point{}, pickFailed
	}
	tpl, err := a.pixels.DataPtrUint8()
	if err != nil {
		return image.Point{}, pickFailed
	}
	cols := grey.Cols()
	orig := a.rect.Min.Sub(window.Min)
	var x, y C.int
	r := pickResult(C.jetqa_tinycv_pick((*C.uint8_t)(unsafe.Pointer(&screen[window.Min.Y*cols+window.Min.X])), C.int(cols),
		C.int(window.Dx()), C.int(window.Dy()), (*C.uint8_t)(unsafe.Pointer(&tpl[0])), C.int(a.rect.Dx()), C.int(a.rect.Dy()),
		C.int(orig.X), C.int(orig.Y), C.int(a.rect.Min.X), C.int(a.rect.Min.Y), &x, &y))
	return image.Pt(int(x), int(y)).Add(window.Min), r
}

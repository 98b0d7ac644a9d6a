package needle

// #cgo CFLAGS: -O3
// #cgo pkg-config: libdeflate
// #include "pnggrey.h"
import "C"

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"image/png"
	"sync"
	"unsafe"

	"gocv.io/x/gocv"
)

// Limits on decoded images: OpenCV aborts the process on images larger
// than its own limits, and a screen is never this big.
const (
	maxSide   = 1 << 14
	maxPixels = 1 << 26
)

// decodable reports whether an image of w x h pixels is within them.
func decodable(w, h int) bool {
	return w > 0 && h > 0 && w <= maxSide && h <= maxSide && w*h <= maxPixels
}

// decodeGrey reads a PNG as 8-bit grey values, the same values as tinycv's
// imread(IMREAD_COLOR) followed by cvtColor(BGR2GRAY). The header is
// checked in Go first: OpenCV's decoder aborts the process (an uncaught C++
// exception) on some inputs, e.g. huge sizes.
//
// What QEMU's screendump and openQA's needles are — 8-bit RGB or RGBA, not
// interlaced, nothing but IHDR, IDAT and IEND chunks, all well formed — is
// decoded here, with libdeflate, straight to grey: about 5 times as fast
// as libpng and zlib. Everything else, including everything malformed,
// goes to OpenCV, so that what OpenCV refuses is refused.
func decodeGrey(data []byte) (gocv.Mat, error) {
	cfg, err := png.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return gocv.Mat{}, fmt.Errorf("not a PNG: %w", err)
	}
	if !decodable(cfg.Width, cfg.Height) {
		return gocv.Mat{}, fmt.Errorf("PNG of %dx%d pixels is empty or too big", cfg.Width, cfg.Height)
	}
	if grey, ok := decodeGreyFast(data); ok {
		return grey, nil
	}
	colour, err := gocv.IMDecode(data, gocv.IMReadColor)
	if err != nil {
		return gocv.Mat{}, fmt.Errorf("PNG of %dx%d pixels does not decode: %w", cfg.Width, cfg.Height, err)
	}
	defer colour.Close()
	if colour.Empty() || colour.Type() != gocv.MatTypeCV8UC3 {
		return gocv.Mat{}, fmt.Errorf("PNG of %dx%d pixels does not decode", cfg.Width, cfg.Height)
	}
	grey := gocv.NewMat()
	gocv.CvtColor(colour, &grey, gocv.ColorBGRToGray)
	return grey, nil
}

// scratch holds inflated image data between decodes: a fresh buffer of a
// few megabytes costs more in page faults than the inflating.
var scratch sync.Pool

// maxScratch is the most bytes of a buffer kept for reuse: the inflated
// rows of a 2560x1600 RGBA screen.
const maxScratch = 1600 * (1 + 2560*4)

// borrow returns a slice of n elements from pool, or a new one when the
// pool has none that large, and the function that gives it back to the
// pool; slices of more than limit elements are not kept.
func borrow[T any](pool *sync.Pool, n, limit int) (s []T, giveBack func()) {
	if b, _ := pool.Get().(*[]T); b != nil && cap(*b) >= n {
		s = (*b)[:n]
	} else {
		s = make([]T, n)
	}
	if n > limit {
		return s, func() {}
	}
	return s, func() { pool.Put(&s) }
}

// decodeGreyFast is decodeGrey's fast path; ok is false when data is not
// of the kind it decodes.
func decodeGreyFast(data []byte) (grey gocv.Mat, ok bool) {
	const sig = "\x89PNG\r\n\x1a\n"
	if len(data) < len(sig) || string(data[:len(sig)]) != sig {
		return gocv.Mat{}, false
	}
	type chunk struct {
		typ  string
		body []byte
	}
	var chunks []chunk
	for rest := data[len(sig):]; len(rest) > 0; {
		if len(rest) < 12 {
			return gocv.Mat{}, false
		}
		n := binary.BigEndian.Uint32(rest)
		if n > 1<<31-1 || uint64(n) > uint64(len(rest)-12) {
			return gocv.Mat{}, false
		}
		if crc32.ChecksumIEEE(rest[4:8+n]) != binary.BigEndian.Uint32(rest[8+n:]) {
			return gocv.Mat{}, false
		}
		chunks = append(chunks, chunk{string(rest[4:8]), rest[8 : 8+n]})
		rest = rest[12+n:]
	}
	// IHDR, IDAT..., IEND, and nothing after it.
	if len(chunks) < 3 || chunks[0].typ != "IHDR" || len(chunks[0].body) != 13 ||
		chunks[len(chunks)-1].typ != "IEND" || len(chunks[len(chunks)-1].body) != 0 {
		return gocv.Mat{}, false
	}
	z := chunks[1].body
	for i, c := range chunks[1 : len(chunks)-1] {
		if c.typ != "IDAT" {
			return gocv.Mat{}, false
		}
		if i > 0 {
			if i == 1 {
				z = bytes.Clone(z)
			}
			z = append(z, c.body...)
		}
	}
	// 8 bits, RGB (2) or RGBA (6), deflate, adaptive filters, not interlaced.
	h := chunks[0].body
	if h[8] != 8 || (h[9] != 2 && h[9] != 6) || h[10] != 0 || h[11] != 0 || h[12] != 0 || len(z) < 2 {
		return gocv.Mat{}, false
	}
	width, height := int(binary.BigEndian.Uint32(h)), int(binary.BigEndian.Uint32(h[4:]))
	channels := 3
	if h[9] == 6 {
		channels = 4
	}
	// As in decodeGrey, which checks first, for callers that do not.
	if !decodable(width, height) {
		return gocv.Mat{}, false
	}

	raw, giveBack := borrow[byte](&scratch, height*(1+width*channels), maxScratch)
	defer giveBack()

	grey = gocv.NewMatWithSize(height, width, gocv.MatTypeCV8UC1)
	out, err := grey.DataPtrUint8()
	if err != nil || len(out) != width*height {
		grey.Close()
		return gocv.Mat{}, false
	}
	if C.jetqa_png_grey((*C.uint8_t)(unsafe.Pointer(&z[0])), C.size_t(len(z)),
		(*C.uint8_t)(unsafe.Pointer(&raw[0])), C.size_t(len(raw)),
		C.int(width), C.int(height), C.int(channels), (*C.uint8_t)(unsafe.Pointer(&out[0]))) != 0 {
		grey.Close()
		return gocv.Mat{}, false
	}
	return grey, true
}

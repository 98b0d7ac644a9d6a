package needle

import (
	"errors"
	"image"

	"gocv.io/x/gocv"
)

// excludedGrey is the grey value of tinycv's exclude areas: they are
// painted pure green (BGR 0,255,0) before the grey conversion, the same in
// needle and screen, so that an exclude area never differs.
// (9798·0 + 19235·255 + 3735·0 + 16384) >> 15 = 150.
const excludedGrey = 150

// grownROI is the bookkeeping of tinycv's Image::prep: the part of an
// image that is blurred once r is asked for, when roi was. It grows to the
// union of what was asked for, and to all of the image (bounds) once that
// is half of it.
func grownROI(roi, r, bounds image.Rectangle) image.Rectangle {
	if !roi.Empty() && r.In(roi) {
		return roi
	}
	roi = roi.Union(r)
	if float64(bounds.Dx()*bounds.Dy())*0.5 <= float64(roi.Dx()*roi.Dy()) {
		roi = bounds
	}
	return roi
}

// prepareROI is tinycv's prepared image for roi: grey values with the
// exclude areas (those inside the image) painted, blurred inside roi. The
// result, a new image the size of grey, is exact inside roi and the pixel
// around it, all that a search inside roi reads; the rest is undefined.
//
// Where the blur runs matters for the last bit: OpenCV rounds exact halves
// up when blurring a whole image but mostly to even when blurring a
// sub-rectangle, and the exact-zero shortcut of the search sees that
// difference. So this blurs exactly roi of an image the size of the
// screen, as tinycv does, and only the conversion to grey, which is per
// pixel, is limited to what the blur reads.
func prepareROI(grey gocv.Mat, excludes []image.Rectangle, roi image.Rectangle) (gocv.Mat, error) {
	cols, rows := grey.Cols(), grey.Rows()
	bounds := image.Rect(0, 0, cols, rows)
	out := gocv.NewMatWithSize(rows, cols, gocv.MatTypeCV8UC1)
	src, err1 := grey.DataPtrUint8()
	dst, err2 := out.DataPtrUint8()
	if err := errors.Join(err1, err2); err != nil || len(src) != cols*rows || len(dst) != cols*rows {
		out.Close()
		return gocv.Mat{}, errors.New("grey image is not continuous")
	}
	read := roi.Inset(-1).Intersect(bounds)
	for y := read.Min.Y; y < read.Max.Y; y++ {
		copy(dst[y*cols+read.Min.X:y*cols+read.Max.X], src[y*cols+read.Min.X:])
	}
	for _, r := range excludes {
		if !r.In(bounds) { // tinycv's replacerect skips what does not fit
			continue
		}
		r = r.Intersect(read)
		for y := r.Min.Y; y < r.Max.Y; y++ {
			row := dst[y*cols+r.Min.X : y*cols+r.Max.X]
			for i := range row {
				row[i] = excludedGrey
			}
		}
	}
	if !roi.Empty() {
		region := out.Region(roi)
		gocv.GaussianBlur(region, &region, image.Pt(3, 3), 0, 0, gocv.BorderReflect101)
		region.Close()
	}
	return out, nil
}

package boot

import (
	"bytes"
	"errors"
	"image"
	"image/png"
	"os"
	"path/filepath"

	"golang.org/x/image/draw"
)

// thumbHeight is os-autoinst's thumbnail height.
const thumbHeight = 45

// writeThumbnail writes the screenshot scaled to thumbHeight pixels high
// to path, as os-autoinst's write_with_thumbnail does (into .thumbs/), for
// overviews.
func writeThumbnail(screenshot []byte, path string) error {
	src, err := png.Decode(bytes.NewReader(screenshot))
	if err != nil {
		return err
	}
	b := src.Bounds()
	if b.Dy() == 0 {
		return errors.New("an empty image")
	}
	dst := image.NewRGBA(image.Rect(0, 0, max(1, b.Dx()*thumbHeight/b.Dy()), thumbHeight))
	draw.ApproxBiLinear.Scale(dst, dst.Bounds(), src, b, draw.Src, nil)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, dst); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

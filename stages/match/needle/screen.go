package needle

import (
	"image"
	"sync"

	"gocv.io/x/gocv"
)

// Screen is one screenshot to search needles on. Like a tinycv image it
// remembers which parts it has preprocessed, across searches, so a Screen
// is searched under a lock: make one per screenshot. Close frees it.
type Screen struct {
	mu   sync.Mutex
	grey gocv.Mat        // the grey values, not blurred
	roi  image.Rectangle // what tinycv would have blurred so far
}

// DecodeScreen decodes a screenshot PNG.
func DecodeScreen(pngData []byte) (*Screen, error) {
	grey, err := decodeGrey(pngData)
	if err != nil {
		return nil, err
	}
	return &Screen{grey: grey}, nil
}

// Bounds is the screen's size, at (0,0).
func (s *Screen) Bounds() image.Rectangle {
	return image.Rect(0, 0, s.grey.Cols(), s.grey.Rows())
}

// Close frees the screen's OpenCV memory.
func (s *Screen) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.grey.Close()
}

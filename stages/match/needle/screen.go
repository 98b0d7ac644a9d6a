package needle

import (
	"image"
	"sync"
)

// Screen is one screenshot to search needles on. Like a tinycv image it
// remembers which parts it has preprocessed, across searches, so a Screen
// is searched under a lock: make one per screenshot. Close frees it.
type Screen struct {
	mu  sync.Mutex
	img *preparedImage // owns its colour image
}

// DecodeScreen decodes a screenshot PNG.
func DecodeScreen(pngData []byte) (*Screen, error) {
	img, err := decodePNG(pngData)
	if err != nil {
		return nil, err
	}
	return &Screen{img: newPreparedImage(img)}, nil
}

// Bounds is the screen's size, at (0,0).
func (s *Screen) Bounds() image.Rectangle {
	return image.Rect(0, 0, s.img.colour.Cols(), s.img.colour.Rows())
}

// Close frees the screen's OpenCV memory.
func (s *Screen) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.img.Close()
	s.img.colour.Close()
}

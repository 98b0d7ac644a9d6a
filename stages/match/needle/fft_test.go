package needle

import (
	"image"
	"math"
	"math/rand/v2"
	"testing"

	"gocv.io/x/gocv"
)

// On real screens, near the area and on the whole screen, the FFT search
// finds what the exact search finds when that may look everywhere; and
// where every position is as good as any other.
func TestSearchFFTMatchesExact(t *testing.T) {
	oldExact, oldFFT := exactBudget, fftBudget
	exactBudget, fftBudget = 1<<40, 1<<40
	defer func() { exactBudget, fftBudget = oldExact, oldFFT }()
	type search struct {
		name   string
		screen image.Image
		needle testNeedle
	}
	var searches []search
	for _, tc := range testosCases(t) {
		for _, tn := range tc.needles {
			searches = append(searches, search{tc.name, tc.screen, tn})
		}
	}
	for _, s := range desktopScreens() {
		for i := range 4 {
			searches = append(searches, search{s.name, s.img, desktopNeedle(i)})
		}
	}
	for _, s := range searches {
		n := prepare(t, s.needle)
		screen := decodeScreen(t, s.screen)
		grey, err := prepareROI(screen.grey, n.excludes, screen.Bounds())
		if err != nil {
			t.Fatal(err)
		}
		for i := range n.areas {
			a := &n.areas[i]
			for _, ratio := range []float64{0.02, 1} {
				window := searchWindow(a, ratio, screen.Bounds())
				if window.Empty() {
					continue
				}
				spectrum, err := windowSpectrum(grey, window)
				if err != nil {
					t.Fatal(err)
				}
				got, want := searchFFT(grey, spectrum, a, window), searchExact(grey, a, window)
				if !sameMatch(got, want) || want.tied && !got.tied {
					t.Errorf("%s, %s area %d, ratio %v: %+v, want %+v", s.name, n.name, i, ratio, got, want)
				}
				spectrum.Close()
			}
		}
		grey.Close()
		screen.Close()
		n.Close()
	}

	// A uniform screen and a needle a little darker: every position is
	// exactly as good, the exact sums must be looked at only where they
	// decide.
	flat := canvas(400, 300, grey60)
	n := prepare(t, testNeedle{"flat", `{"xpos":100,"ypos":100,"width":60,"height":30}`, flat})
	defer n.Close()
	s := decodeScreen(t, brighten(flat, constant(4)))
	defer s.Close()
	a := &n.areas[0]
	spectrum, err := windowSpectrum(s.grey, s.Bounds())
	if err != nil {
		t.Fatal(err)
	}
	defer spectrum.Close()
	fftBudget = 1
	got := searchFFT(s.grey, spectrum, a, s.Bounds())
	pixels, err := s.grey.DataPtrUint8()
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := a.pixels.DataPtrUint8()
	if err != nil {
		t.Fatal(err)
	}
	if want := bruteForce(pixels, s.grey.Cols(), tpl, a.rect, s.Bounds()); !sameMatch(got, want) || want.tied && !got.tied {
		t.Errorf("uniform: %+v, want %+v", got, want)
	}
}

// The bound on the FFT's error holds with a wide margin, on noise of the
// largest amplitude and on a screen of the brightest grey. (A bound that
// is too wide costs exact sums, not a wrong result.)
func TestFFTBound(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	noise := func(w, h int) []byte {
		b := make([]byte, w*h)
		for i := range b {
			b[i] = byte(rng.IntN(256))
		}
		return b
	}
	white := func(w, h int) []byte {
		b := make([]byte, w*h)
		for i := range b {
			b[i] = 255
		}
		return b
	}
	for _, tc := range []struct {
		name   string
		w, h   int
		screen []byte
		tw, th int
		tpl    []byte
	}{
		{"noise 1024x768, 200x80", 1024, 768, noise(1024, 768), 200, 80, noise(200, 80)},
		{"noise 1024x768, 1024x32", 1024, 768, noise(1024, 768), 1024, 32, noise(1024, 32)},
		{"white 1024x768, 400x300", 1024, 768, white(1024, 768), 400, 300, white(400, 300)},
		{"noise 1920x1080, 300x100", 1920, 1080, noise(1920, 1080), 300, 100, noise(300, 100)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			grey, err := gocv.NewMatFromBytes(tc.h, tc.w, gocv.MatTypeCV8UC1, tc.screen)
			if err != nil {
				t.Fatal(err)
			}
			defer grey.Close()
			spectrum, err := windowSpectrum(grey, image.Rect(0, 0, tc.w, tc.h))
			if err != nil {
				t.Fatal(err)
			}
			defer spectrum.Close()
			approx, rows := correlation(t, spectrum, tc.tpl, tc.tw, tc.th, tc.h-tc.th+1)
			var wsum, wsq, tsum, tsq int64
			for _, v := range tc.screen {
				wsum, wsq = wsum+int64(v), wsq+int64(v)*int64(v)
			}
			for _, v := range tc.tpl {
				tsum, tsq = tsum+int64(v), tsq+int64(v)*int64(v)
			}
			bound := fftBound(spectrum.Cols(), spectrum.Rows(), wsum, wsq, tsum, tsq)
			// The error of a sum of squared differences is twice the
			// correlation's; look at a few thousand positions.
			worst := 0.0
			for range 3000 {
				px, py := rng.IntN(tc.w-tc.tw+1), rng.IntN(tc.h-tc.th+1)
				var exact int64
				for y := range tc.th {
					for x := range tc.tw {
						exact += int64(tc.screen[(py+y)*tc.w+px+x]) * int64(tc.tpl[y*tc.tw+x])
					}
				}
				worst = max(worst, 2*math.Abs(approx[py*rows+px]-float64(exact)))
			}
			t.Logf("largest error %.3g, bound %.3g", worst, bound)
			if worst > bound/1000 {
				t.Errorf("largest error %.3g, bound %.3g: want the error below a thousandth of the bound", worst, bound)
			}
		})
	}
}

// correlation is the cross-correlation of the template with the image
// whose spectrum is given, through the DFT: rows rows, and the row length.
func correlation(t *testing.T, spectrum gocv.Mat, tpl []byte, tw, th, rows int) ([]float64, int) {
	t.Helper()
	tplSpectrum, err := dft(tpl, tw, tw, th, image.Pt(spectrum.Cols(), spectrum.Rows()))
	if err != nil {
		t.Fatal(err)
	}
	defer tplSpectrum.Close()
	corr := gocv.NewMat()
	t.Cleanup(func() { corr.Close() })
	if err := correlate(spectrum, tplSpectrum, rows, &corr); err != nil {
		t.Fatal(err)
	}
	approx, err := corr.DataPtrFloat64()
	if err != nil {
		t.Fatal(err)
	}
	return approx, corr.Cols()
}

package needle

import (
	"fmt"
	"image"
	"image/color"
	"testing"

	"gocv.io/x/gocv"
)

// BenchmarkSearch times one decision, decoding a 1024x768 screen's PNG and
// searching it for a needle with two small areas, and compares it with
// tinycv's work for the same decision, done with bare OpenCV calls in the
// same run (tinycv: imread, then for each area cvtColor of the whole
// screen, a blur of the search window and matchTemplate): x-tinycv is how
// many times as fast jetqa is. docs/matching.md has os-autoinst's own
// numbers.
//
// "moved" is a dialog that moved by 30 pixels and lost its title (the
// first area is found, the second nowhere); "console" a screen full of text
// where neither area is; "uniform" a grey screen and a needle of a
// slightly different grey, equally good everywhere. The last two are the
// worst cases of jetqa's exact search. Run with -cpu 1,2 for one and two
// threads.
func BenchmarkSearch(b *testing.B) {
	HoldFreedMemory() // as the matcher pool does
	dialog := screenWithDialogs(grey200, at300)
	fill(dialog, image.Rect(300, 250, 500, 290), grey60)
	text(dialog, image.Pt(310, 262), 5, 20, 1, grey200)
	console := func(seed uint64) *image.RGBA {
		img := canvas(1024, 768, color.RGBA{0, 0, 0, 255})
		text(img, image.Pt(0, 0), seed, 128, 48, grey200)
		return img
	}
	cases := []struct {
		name   string
		needle testNeedle
		screen image.Image
	}{
		{"moved", testNeedle{"n", dialogArea + `,{"xpos":310,"ypos":260,"width":120,"height":20}`, dialog},
			screenWithDialogs(grey200, image.Pt(330, 330))},
		{"console", testNeedle{"c", `{"xpos":0,"ypos":320,"width":400,"height":16},{"xpos":80,"ypos":400,"width":40,"height":16}`, console(11)},
			console(12)},
		{"uniform", testNeedle{"u", dialogArea + `,{"xpos":310,"ypos":260,"width":120,"height":20}`, canvas(1024, 768, grey60)},
			brighten(canvas(1024, 768, grey60), constant(4))},
	}
	for _, c := range cases {
		n := prepare(b, c.needle)
		screenPNG := pngOf(b, c.screen)
		for _, ratio := range []float64{0.02, 1} {
			var tinycv float64 // ns per decision
			b.Run(fmt.Sprintf("%s/ratio=%v/tinycv-opencv", c.name, ratio), func(b *testing.B) {
				tinycvOpenCV(b, screenPNG, n, ratio)
				tinycv = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			})
			b.Run(fmt.Sprintf("%s/ratio=%v/jetqa", c.name, ratio), func(b *testing.B) {
				for b.Loop() {
					s, err := DecodeScreen(screenPNG)
					if err != nil {
						b.Fatal(err)
					}
					Search(s, []*Needle{n}, 0, ratio)
					s.Close()
				}
				b.ReportMetric(tinycv/(float64(b.Elapsed().Nanoseconds())/float64(b.N)), "x-tinycv")
			})
		}
	}
}

// tinycvOpenCV is the OpenCV work of tinycv's decision, without anything
// around it.
func tinycvOpenCV(b *testing.B, screenPNG []byte, n *Needle, ratio float64) {
	grey, result, noMask := gocv.NewMat(), gocv.NewMat(), gocv.NewMat()
	defer grey.Close()
	defer result.Close()
	defer noMask.Close()
	for b.Loop() {
		colour, err := gocv.IMDecode(screenPNG, gocv.IMReadColor)
		if err != nil {
			b.Fatal(err)
		}
		bounds := image.Rect(0, 0, colour.Cols(), colour.Rows())
		for i := range n.areas {
			a := &n.areas[i]
			window := searchWindow(a, ratio, bounds)
			gocv.CvtColor(colour, &grey, gocv.ColorBGRToGray)
			scene := grey.Region(window)
			gocv.GaussianBlur(scene, &scene, image.Pt(3, 3), 0, 0, gocv.BorderReflect101)
			gocv.MatchTemplate(scene, a.pixels, &result, gocv.TmSqdiff, noMask)
			scene.Close()
		}
		colour.Close()
	}
}

package needle

import (
	"fmt"
	"image"
	"testing"

	"gocv.io/x/gocv"
)

// BenchmarkSearch times one decision on a 1024x768 screen for a needle
// with two small areas, like os-autoinst's reference numbers in
// docs/matching.md: each iteration searches a fresh screen (tinycv keeps
// its preprocessing in the image), with the PNG decoded beforehand or in
// the iteration. x-opencv is the time relative to bare-opencv, the OpenCV
// calls alone for the same work (grey, blur, matchTemplate), measured just
// before.
func BenchmarkSearch(b *testing.B) {
	base := screenWithDialogs(grey200, at300)
	fill(base, image.Rect(300, 250, 500, 290), grey60)
	text(base, image.Pt(310, 262), 5, 20, 1, grey200)
	n := prepare(b, testNeedle{"n", dialogArea + `,{"xpos":310,"ypos":260,"width":120,"height":20}`, base})
	screenPNG := pngOf(b, screenWithDialogs(grey200, image.Pt(330, 330))) // the dialog moved, the title gone

	for _, ratio := range []float64{0.02, 1} {
		var opencv float64 // ns per decision
		b.Run(fmt.Sprintf("ratio=%v/bare-opencv", ratio), func(b *testing.B) {
			s, err := DecodeScreen(screenPNG)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			bareOpenCV(b, screenPNG, n, ratio)
			opencv = float64(b.Elapsed().Nanoseconds()) / float64(b.N)
		})
		b.Run(fmt.Sprintf("ratio=%v/decoded", ratio), func(b *testing.B) {
			s, err := DecodeScreen(screenPNG)
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			for b.Loop() {
				s.roi = image.Rectangle{} // a fresh screen, without decoding it again
				Search(s, []*Needle{n}, 0, ratio)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/opencv, "x-opencv")
		})
		b.Run(fmt.Sprintf("ratio=%v/png", ratio), func(b *testing.B) {
			for b.Loop() {
				s, err := DecodeScreen(screenPNG)
				if err != nil {
					b.Fatal(err)
				}
				Search(s, []*Needle{n}, 0, ratio)
				s.Close()
			}
		})
	}
}

// bareOpenCV is the OpenCV work of one decision without anything around it.
func bareOpenCV(b *testing.B, screenPNG []byte, n *Needle, ratio float64) {
	colour, err := gocv.IMDecode(screenPNG, gocv.IMReadColor)
	if err != nil {
		b.Fatal(err)
	}
	defer colour.Close()
	bounds := image.Rect(0, 0, colour.Cols(), colour.Rows())
	grey, result, noMask := gocv.NewMat(), gocv.NewMat(), gocv.NewMat()
	defer grey.Close()
	defer result.Close()
	defer noMask.Close()
	for b.Loop() {
		for i := range n.areas {
			a := &n.areas[i]
			m := int(float64(a.margin) + ratio*float64(1024-a.margin))
			window := image.Rect(a.rect.Min.X-m, a.rect.Min.Y-m, a.rect.Max.X+m, a.rect.Max.Y+m).Intersect(bounds)
			gocv.CvtColor(colour, &grey, gocv.ColorBGRToGray)
			scene := grey.Region(window)
			gocv.GaussianBlur(scene, &scene, image.Pt(3, 3), 0, 0, gocv.BorderReflect101)
			gocv.MatchTemplate(scene, a.pixels, &result, gocv.TmSqdiff, noMask)
			scene.Close()
		}
	}
}

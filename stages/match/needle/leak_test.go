//go:build matprofile

package needle

import (
	"bytes"
	"testing"

	"gocv.io/x/gocv"

	"jetqa/schemas"
)

// TestNoMatLeaks counts OpenCV matrices (go test -tags matprofile): every
// path through Prepare, DecodeScreen and Search frees what it allocates.
func TestNoMatLeaks(t *testing.T) {
	before, kept := gocv.MatProfile.Count(), keptSpectra.Load()
	defer KeepSpectra(maxKeptSpectra.Load())
	// With the areas' spectra kept by the needles, and made for each
	// search.
	for _, limit := range []int64{maxKeptSpectra.Load(), 0} {
		KeepSpectra(limit)
		for _, tc := range append(searchCases(), roundingCases()...) {
			var needles []*Needle
			for _, tn := range tc.needles {
				n, err := Prepare(tn.spec(t), pngOf(t, tn.img))
				if err != nil {
					t.Fatal(err)
				}
				needles = append(needles, n)
			}
			s, err := DecodeScreen(pngOf(t, tc.screen))
			if err != nil {
				t.Fatal(err)
			}
			for _, ratio := range []float64{0, 0.02, 1} {
				Search(s, needles, 0, ratio)
			}
			s.Close()
			for _, n := range needles {
				n.Close()
			}
		}
	}
	base := pngOf(t, screenWithDialogs(grey200, at300))
	outside, err := schemas.ParseNeedle("outside", []byte(`{"area":[{"xpos":1000,"ypos":0,"width":100,"height":10}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Prepare(outside, base); err == nil {
		t.Fatal("area outside the PNG accepted")
	}
	if _, err := DecodeScreen(base[:len(base)/2]); err == nil {
		t.Fatal("truncated PNG accepted")
	}

	if after := keptSpectra.Load(); after != kept {
		t.Errorf("%d bytes of spectra kept before, %d after", kept, after)
	}
	if after := gocv.MatProfile.Count(); after != before {
		var buf bytes.Buffer
		gocv.MatProfile.WriteTo(&buf, 1)
		t.Errorf("%d Mats before, %d after:\n%s", before, after, buf.String())
	}
}

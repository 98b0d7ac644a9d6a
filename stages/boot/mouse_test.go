package boot

import (
	"testing"

	"jetqa/schemas"
)

// click_lastmatch clicks as os-autoinst's _calculate_clickpoint: the
// click_point of the last match area with one, relative to where that area
// was found; else the centre of the last match area. Other areas do not
// count.
func TestClickPoint(t *testing.T) {
	match := func(x, y, w, h int, cp *schemas.ClickPoint) schemas.NeedleArea {
		return schemas.NeedleArea{X: x, Y: y, Width: w, Height: h, Type: schemas.AreaTypeMatch, ClickPoint: cp}
	}
	exclude := schemas.NeedleArea{X: 0, Y: 0, Width: 5, Height: 5, Type: schemas.AreaTypeExclude}
	found := []schemas.AreaMatch{{X: 100, Y: 200, Width: 40, Height: 20}, {X: 300, Y: 10, Width: 11, Height: 7}}
	for _, tc := range []struct {
		name  string
		areas []schemas.NeedleArea
		x, y  int
	}{
		{"no click point: the last area's centre", []schemas.NeedleArea{match(1, 1, 40, 20, nil), exclude, match(5, 5, 11, 7, nil)}, 305, 13},
		{"the first area's click point", []schemas.NeedleArea{match(1, 1, 40, 20, &schemas.ClickPoint{X: 3, Y: 4}), match(5, 5, 11, 7, nil)}, 103, 204},
		{"centre as a click point", []schemas.NeedleArea{exclude, match(1, 1, 40, 20, &schemas.ClickPoint{Center: true}), match(5, 5, 11, 7, nil)}, 120, 210},
	} {
		m := &lastMatch{needle: schemas.NeedleFile{Needle: schemas.Needle{Name: "n", Areas: tc.areas}}, areas: found}
		x, y, err := m.clickPoint()
		if err != nil || x != tc.x || y != tc.y {
			t.Errorf("%s: %d,%d %v, want %d,%d", tc.name, x, y, err, tc.x, tc.y)
		}
	}
	m := &lastMatch{needle: schemas.NeedleFile{Needle: schemas.Needle{Name: "n", Areas: []schemas.NeedleArea{match(1, 1, 2, 2, nil)}}}, areas: found}
	if _, _, err := m.clickPoint(); err == nil {
		t.Error("two areas found for a needle of one")
	}
}

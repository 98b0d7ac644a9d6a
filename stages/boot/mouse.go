package boot

import (
	"fmt"
	"time"

	"go.starlark.net/starlark"

	"jetqa/schemas"
)

// The pointer, as os-autoinst's testapi moves it: a USB tablet, so a
// click lands on the pixel the test names.

// lastMatch is the needle an assert_screen or check_screen found last,
// with where its match areas were found: click_lastmatch clicks there.
type lastMatch struct {
	needle schemas.NeedleFile
	areas  []schemas.AreaMatch
}

// clickPoint is where click_lastmatch clicks, as os-autoinst's
// _calculate_clickpoint: the click_point of the last match area that has
// one, else the centre of the last match area, where the area was found.
func (m *lastMatch) clickPoint() (int, int, error) {
	var found []schemas.NeedleArea
	for _, a := range m.needle.Areas {
		if a.Type == schemas.AreaTypeMatch {
			found = append(found, a)
		}
	}
	if len(found) == 0 || len(found) != len(m.areas) {
		return 0, 0, fmt.Errorf("needle %s: its match areas were not all found", m.needle.Name)
	}
	i := len(found) - 1
	for j := len(found) - 1; j >= 0; j-- {
		if found[j].ClickPoint != nil {
			i = j
			break
		}
	}
	at := m.areas[i]
	x, y := float64(at.Width)/2, float64(at.Height)/2
	if cp := found[i].ClickPoint; cp != nil && !cp.Center {
		x, y = cp.X, cp.Y
	}
	return at.X + int(x), at.Y + int(y), nil
}

// mouse_set(x, y)
func (r *runner) mouseSet(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var x, y int
	if err := starlark.UnpackArgs("mouse_set", args, kwargs, "x", &x, "y", &y); err != nil {
		return nil, err
	}
	r.mouseAt = &[2]int{x, y}
	return starlark.None, r.vm.MouseSet(r.ctx, x, y)
}

// mouse_hide(border_offset=0): the pointer to the bottom right corner.
func (r *runner) mouseHide(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	offset := 0
	if err := starlark.UnpackArgs("mouse_hide", args, kwargs, "border_offset?", &offset); err != nil {
		return nil, err
	}
	r.mouseAt = nil
	return starlark.None, r.vm.MouseHide(r.ctx, offset)
}

// mouse_click(button="left", hold_time=0.15)
func (r *runner) mouseClick(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	button := "left"
	var hold starlark.Value = starlark.Float(0.15)
	if err := starlark.UnpackArgs("mouse_click", args, kwargs, "button?", &button, "hold_time?", &hold); err != nil {
		return nil, err
	}
	return starlark.None, r.click(button, seconds(hold, 0.15), 1)
}

// mouse_dclick(button="left", hold_time=0.10)
func (r *runner) mouseDclick(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	button := "left"
	var hold starlark.Value = starlark.Float(0.10)
	if err := starlark.UnpackArgs("mouse_dclick", args, kwargs, "button?", &button, "hold_time?", &hold); err != nil {
		return nil, err
	}
	return starlark.None, r.click(button, seconds(hold, 0.10), 2)
}

// click presses and releases button times times, holding it each time.
func (r *runner) click(button string, hold time.Duration, times int) error {
	for i := 0; i < times; i++ {
		if i > 0 {
			if err := r.pause(hold); err != nil {
				return err
			}
		}
		if err := r.vm.MouseButton(r.ctx, button, true); err != nil {
			return err
		}
		if err := r.pause(hold); err != nil {
			return err
		}
		if err := r.vm.MouseButton(r.ctx, button, false); err != nil {
			return err
		}
	}
	return nil
}

// clickArgs are the arguments of assert_and_click and click_lastmatch
// that say how to click.
type clickArgs struct {
	button    string
	hold      starlark.Value
	dclick    bool
	mousehide bool
}

// click_lastmatch(button="left", clicktime=0.15, dclick=False,
// mousehide=False): clicks the last match's click point, then moves the
// pointer back where it was (or hides it).
func (r *runner) clickLastmatch(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	c := clickArgs{button: "left", hold: starlark.None}
	if err := starlark.UnpackArgs("click_lastmatch", args, kwargs, "button?", &c.button, "clicktime?", &c.hold, "dclick?", &c.dclick, "mousehide?", &c.mousehide); err != nil {
		return nil, err
	}
	return r.clickMatch("click_lastmatch", c)
}

func (r *runner) clickMatch(fn string, c clickArgs) (starlark.Value, error) {
	if r.matched == nil {
		return starlark.None, nil // os-autoinst: nothing matched yet, no click
	}
	x, y, err := r.matched.clickPoint()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	back := r.mouseAt
	if err := r.vm.MouseSet(r.ctx, x, y); err != nil {
		return nil, err
	}
	times, hold := 1, seconds(c.hold, 0.15)
	if c.dclick {
		times, hold = 2, seconds(c.hold, 0.10)
	}
	if err := r.click(c.button, hold, times); err != nil {
		return nil, err
	}
	r.module.Details = append(r.module.Details, schemas.Step{Kind: "info", Result: schemas.ResultPassed,
		Text: fmt.Sprintf("%s: clicked %s at %d,%d on needle %s", fn, c.button, x, y, r.matched.needle.Name)})
	// Moved at once, the pointer could drag what was clicked.
	if err := r.pause(time.Second); err != nil {
		return nil, err
	}
	if back != nil && !c.mousehide {
		return starlark.None, r.vm.MouseSet(r.ctx, back[0], back[1])
	}
	r.mouseAt = nil
	return starlark.None, r.vm.MouseHide(r.ctx, 0)
}

// assert_and_click(mustmatch, timeout=30, button="left", clicktime=0.15,
// dclick=False, mousehide=False)
func (r *runner) assertAndClick(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	return r.assertClick("assert_and_click", false, args, kwargs)
}

// assert_and_dclick: assert_and_click with dclick.
func (r *runner) assertAndDclick(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	return r.assertClick("assert_and_dclick", true, args, kwargs)
}

func (r *runner) assertClick(fn string, dclick bool, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var mustmatch starlark.Value
	var timeout starlark.Value = starlark.MakeInt(30)
	c := clickArgs{button: "left", hold: starlark.None, dclick: dclick}
	if err := starlark.UnpackArgs(fn, args, kwargs, "mustmatch", &mustmatch, "timeout?", &timeout, "button?", &c.button,
		"clicktime?", &c.hold, "dclick?", &c.dclick, "mousehide?", &c.mousehide); err != nil {
		return nil, err
	}
	tags, err := tagsArg(mustmatch)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fn, err)
	}
	res, err := r.screenCheck("assert_screen", tags, r.timeout(timeout, 30))
	if err != nil {
		return nil, err
	}
	if !res.Matched {
		return nil, failf("%s", describeMiss(fn, tags, res))
	}
	return r.clickMatch(fn, c)
}

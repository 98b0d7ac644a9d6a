package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// Needle area types, as openQA writes them.
const (
	AreaTypeMatch   = "match"   // must be found on the screen
	AreaTypeExclude = "exclude" // ignored: painted green on needle and screen
	AreaTypeOCR     = "ocr"     // read by OCR in openQA; never decides a match
)

// Defaults os-autoinst applies when an area's value is missing or false
// to Perl (0, "0", "", null).
const (
	DefaultMatch  = 96 // percent
	DefaultMargin = 50 // pixels
)

// AssertScreenRatio is how far assert_screen looks around each area,
// between its searches of the whole screen (ratio 1); see SearchMargin.
const AssertScreenRatio = 0.02

// maxCoordinate bounds positions and sizes: larger ones are clamped to
// just beyond it, which changes nothing (an area that far out is outside
// every image) and keeps sums of them from overflowing even a 32-bit int.
const maxCoordinate = 1 << 29

// maxMargin bounds margins: os-autoinst's search computes with C ints and
// crashes or misbehaves on margins near 2^31.
const maxMargin = 1 << 30

// Needle is an openQA needle's JSON: what to look for on a screen (its
// areas) and when to look for it (its tags). The PNG it belongs to is
// carried separately. Marshalling a Needle writes openQA's format.
type Needle struct {
	Name       string           `json:"-"` // the file name without .json
	Tags       []string         `json:"tags"`
	Properties []NeedleProperty `json:"properties"`
	Areas      []NeedleArea     `json:"area"`

	// notes are the warnings found reading the JSON, see Warnings.
	notes []error
}

// NeedleArea is one rectangle of a needle, in pixels of the needle's PNG.
type NeedleArea struct {
	X      int    `json:"xpos"`
	Y      int    `json:"ypos"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
	Type   string `json:"type"` // AreaTypeMatch, AreaTypeExclude, AreaTypeOCR, or another, ignored
	// Match is the similarity in percent the area needs to pass. Above
	// 100 it never passes, at 0 or below it always does.
	Match float64 `json:"match"`
	// Margin is how far, in pixels, the area may have moved and still be
	// found when searching near its position (see SearchMargin).
	Margin     float64     `json:"margin"`
	ClickPoint *ClickPoint `json:"click_point,omitempty"`
}

// ClickPoint is where a test clicks when the needle matched: relative to
// its area's top left corner, or the area's centre. openQA writes it as
// {"xpos":5,"ypos":5} or as the string "center".
type ClickPoint struct {
	X, Y   float64
	Center bool
}

// NeedleProperty marks a needle, e.g. "workaround" (preferred over an
// equally good needle without it). openQA writes a property as a plain
// name or as {"name":"workaround","value":"bsc#1234"}.
type NeedleProperty struct {
	Name  string
	Value string
}

// NeedleError is what ParseNeedle and Validate return, and what Warnings
// lists: it names the needle, then says what is wrong, e.g. `needle
// "boot-menu": area 2: width 0: ...`. Areas are counted from 1, in file
// order.
type NeedleError struct {
	Needle string
	Err    error
}

func (e *NeedleError) Error() string { return fmt.Sprintf("needle %q: %v", e.Needle, e.Err) }

func (e *NeedleError) Unwrap() error { return e.Err }

// ParseNeedle reads a needle's JSON as os-autoinst's needle.pm does, and
// refuses what os-autoinst refuses or dies or crashes on when searching
// for the needle; docs/matching.md lists the rules. In short: a value is
// read as Perl reads it ("90" is 90, 12.7 is 12 where a whole number is
// needed), a value false to Perl gets os-autoinst's default, unknown keys
// and area types are ignored. What os-autoinst accepts but is surely a
// mistake is accepted too, and listed by Warnings. Whether the areas fit
// the PNG is checked by Validate.
func ParseNeedle(name string, data []byte) (Needle, error) {
	n := Needle{Name: name}
	if err := n.decode(data); err != nil {
		return Needle{}, &NeedleError{Needle: name, Err: err}
	}
	if _, err := n.check(-1, -1); err != nil {
		return Needle{}, &NeedleError{Needle: name, Err: err}
	}
	return n, nil
}

// HasTag reports whether the needle carries tag.
func (n Needle) HasTag(tag string) bool {
	for _, t := range n.Tags {
		if t == tag {
			return true
		}
	}
	return false
}

// HasProperty reports whether the needle carries the property name.
func (n Needle) HasProperty(name string) bool {
	for _, p := range n.Properties {
		if p.Name == name {
			return true
		}
	}
	return false
}

// SearchMargin is how far around an area os-autoinst's search looks for
// it: the area's margin grown by ratio of the way to 1024 pixels, in
// floating point, truncated as Perl's int() does. Below 0 the window is
// smaller than the area, which is then not found; where the window is
// empty, os-autoinst crashes.
func SearchMargin(margin, ratio float64) float64 {
	// The conversion keeps the product from being fused with the sum,
	// which Perl does not do.
	return math.Trunc(margin + float64(ratio*(1024-margin)))
}

// Validate checks the needle against its PNG's size: os-autoinst searches
// a match area at a position of 0 or more on any screen large enough, and
// reads an ocr area of a matched needle, so those must lie inside the
// image. It also checks what ParseNeedle checks, for needles built in
// code.
func (n Needle) Validate(width, height int) error {
	if _, err := n.check(width, height); err != nil {
		return &NeedleError{Needle: n.Name, Err: err}
	}
	return nil
}

// Warnings lists what os-autoinst accepts in the needle, and so jetqa
// too, but is surely a mistake: a value that is not a number read as 0, an
// area that can never be found or never passes or always does, an area
// type os-autoinst ignores. Each is a *NeedleError naming the area and
// field.
func (n Needle) Warnings(width, height int) []error {
	warnings, _ := n.check(width, height)
	out := make([]error, 0, len(n.notes)+len(warnings))
	for _, w := range append(append([]error{}, n.notes...), warnings...) {
		out = append(out, &NeedleError{Needle: n.Name, Err: w})
	}
	return out
}

// check finds what is wrong with the areas; width and height are the
// PNG's size, or -1 when it is not known yet.
func (n Needle) check(width, height int) (warnings []error, err error) {
	warn := func(i int, format string, args ...any) {
		warnings = append(warnings, fmt.Errorf("area %d: "+format, append([]any{i + 1}, args...)...))
	}
	fail := func(i int, format string, args ...any) ([]error, error) {
		return warnings, fmt.Errorf("area %d: "+format, append([]any{i + 1}, args...)...)
	}
	outside := func(a NeedleArea) bool {
		return width >= 0 && (a.X+a.Width > width || a.Y+a.Height > height)
	}
	matches, clicks := 0, 0
	for i, a := range n.Areas {
		if a.ClickPoint != nil {
			if clicks++; clicks > 1 {
				return fail(i, "a second click_point: os-autoinst refuses needles with more than one")
			}
		}
		switch a.Type {
		case AreaTypeMatch:
			matches++
			if a.X < 0 || a.Y < 0 {
				// search_TEMPLATE: "out of range", similarity 0.
				warn(i, "xpos/ypos (%d,%d): a negative position is never searched: similarity 0", a.X, a.Y)
				continue
			}
			if a.Width <= 0 || a.Height <= 0 {
				return fail(i, "width/height %dx%d: an empty area at a position of 0 or more crashes os-autoinst's search", a.Width, a.Height)
			}
			if outside(a) {
				return fail(i, "%dx%d at (%d,%d) is outside the %dx%d image", a.Width, a.Height, a.X, a.Y, width, height)
			}
			if !(math.Abs(a.Margin) <= maxMargin) {
				return fail(i, "margin %v is out of range ±%d: os-autoinst's search overflows or crashes with it", a.Margin, maxMargin)
			}
			if m := SearchMargin(a.Margin, AssertScreenRatio); m < 0 {
				if float64(min(a.Width, a.Height))+2*m <= 0 {
					return fail(i, "margin %v: at assert_screen's ratio %v the search window is %v pixels smaller than the %dx%d area on each side, which crashes os-autoinst",
						a.Margin, AssertScreenRatio, -m, a.Width, a.Height)
				}
				warn(i, "margin %v: at assert_screen's ratio %v the search window is smaller than the area, so it is found only by searches of the whole screen",
					a.Margin, AssertScreenRatio)
			}
			switch {
			case a.Match > 100:
				warn(i, "match %v: above 100 the area never passes", a.Match)
			case a.Match <= 0:
				warn(i, "match %v: at 0 or below the area passes whatever the screen shows", a.Match)
			}
		case AreaTypeExclude:
			if a.X < 0 || a.Y < 0 || a.Width <= 0 || a.Height <= 0 || outside(a) {
				warn(i, "%dx%d at (%d,%d) is not inside the image: os-autoinst excludes nothing with it", a.Width, a.Height, a.X, a.Y)
			}
		case AreaTypeOCR:
			if a.X < 0 || a.Y < 0 || a.Width < 0 || a.Height < 0 || outside(a) {
				return fail(i, "%dx%d at (%d,%d) is not inside the image: os-autoinst dies reading it when the needle matches", a.Width, a.Height, a.X, a.Y)
			}
			if a.Width == 0 || a.Height == 0 {
				warn(i, "width/height %dx%d: an empty ocr area reads nothing", a.Width, a.Height)
			}
		default:
			warn(i, "type %q: os-autoinst ignores areas of types other than %q, %q and %q", a.Type, AreaTypeMatch, AreaTypeExclude, AreaTypeOCR)
		}
	}
	if matches == 0 {
		// os-autoinst skips such a needle, or, when it has an ocr area,
		// loads it and dies dividing by zero when searching for it.
		return warnings, fmt.Errorf("no area of type %q: os-autoinst cannot search for the needle", AreaTypeMatch)
	}
	return warnings, nil
}

// decode reads the JSON by exact key, as os-autoinst's Perl does (Go's
// struct decoding would also accept "XPOS"), applying its defaults.
func (n *Needle) decode(data []byte) error {
	data = bytes.TrimPrefix(data, utf8BOM) // Cpanel::JSON::XS skips one
	var top json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return fmt.Errorf("not a JSON object: %w", err)
	}
	if err := checkJSONText(top); err != nil {
		return fmt.Errorf("not a JSON object: %w", err)
	}
	var fields map[string]json.RawMessage
	if jsonKind(top) != '{' || json.Unmarshal(top, &fields) != nil {
		return fmt.Errorf("not a JSON object: %s", describeJSON(top))
	}
	tags, err := list(fields["tags"], "os-autoinst dies registering the needle's tags")
	if err != nil {
		return fmt.Errorf("tags: %w", err)
	}
	for i, raw := range tags {
		if t, ok := perlString(raw); ok {
			n.Tags = append(n.Tags, t)
		} else {
			n.notes = append(n.notes, fmt.Errorf("tags: tag %d is %s, which no assert_screen can ask for: ignored", i+1, describeJSON(raw)))
		}
	}
	props, err := list(fields["properties"], "os-autoinst dies asking it for the workaround property")
	if err != nil {
		return fmt.Errorf("properties: %w", err)
	}
	for i, raw := range props {
		if p, ok := decodeProperty(raw); ok {
			n.Properties = append(n.Properties, p)
		} else {
			n.notes = append(n.notes, fmt.Errorf("properties: property %d is %s, which names no property: ignored", i+1, describeJSON(raw)))
		}
	}
	// os-autoinst loops over @{$json->{area}}: null or missing is no
	// area, anything else but a list dies.
	var areas []json.RawMessage
	if k := jsonKind(fields["area"]); k == '[' {
		_ = json.Unmarshal(fields["area"], &areas) // a valid list
	} else if k != 'n' {
		return fmt.Errorf("area: want a list of areas, got %s", describeJSON(fields["area"]))
	}
	for i, raw := range areas {
		a, err := n.decodeArea(i, raw)
		if err != nil {
			return fmt.Errorf("area %d: %w", i+1, err)
		}
		n.Areas = append(n.Areas, a)
	}
	return nil
}

// list is a list-valued field, `$json->{key} || []` in os-autoinst: false
// values are an empty list, other values that are not lists an error.
func list(raw json.RawMessage, dies string) ([]json.RawMessage, error) {
	if !perlTrue(raw) {
		return nil, nil
	}
	var elems []json.RawMessage
	if jsonKind(raw) != '[' || json.Unmarshal(raw, &elems) != nil {
		return nil, fmt.Errorf("want a list, got %s: %s", describeJSON(raw), dies)
	}
	return elems, nil
}

// decodeProperty reads a property as has_property compares it: a name,
// or an object's "name". ok is false for what can equal no name.
func decodeProperty(raw json.RawMessage) (p NeedleProperty, ok bool) {
	if jsonKind(raw) != '{' {
		p.Name, ok = perlString(raw)
		return p, ok
	}
	var obj map[string]json.RawMessage
	_ = json.Unmarshal(raw, &obj) // a valid object
	if p.Name, ok = perlString(obj["name"]); !ok {
		return p, false
	}
	p.Value, _ = perlString(obj["value"])
	return p, true
}

// decodeArea reads area i (from 0) as needle.pm's constructor does.
func (n *Needle) decodeArea(i int, raw json.RawMessage) (NeedleArea, error) {
	var fields map[string]json.RawMessage
	switch jsonKind(raw) {
	case '{':
		_ = json.Unmarshal(raw, &fields) // a valid object
	case 'n':
		return NeedleArea{}, errors.New("null: os-autoinst reads it as an empty match area at (0,0), which crashes its search")
	default:
		return NeedleArea{}, fmt.Errorf("want an object, got %s: os-autoinst dies reading it", describeJSON(raw))
	}
	note := func(format string, args ...any) {
		n.notes = append(n.notes, fmt.Errorf("area %d: "+format, append([]any{i + 1}, args...)...))
	}
	// number is the field as Perl reads it where it is true, else def.
	number := func(key string, def float64) (float64, error) {
		raw := fields[key]
		if !perlTrue(raw) {
			return def, nil
		}
		f, clean, err := perlNumber(raw)
		if err != nil {
			return 0, fmt.Errorf("%s: want a number, got %s", key, describeJSON(raw))
		}
		if !clean {
			note("%s %s is not a number: os-autoinst reads it as %v", key, describeJSON(raw), f)
		}
		return f, nil
	}

	a := NeedleArea{Type: AreaTypeMatch}
	for _, f := range []struct {
		key string
		dst *int
	}{{"xpos", &a.X}, {"ypos", &a.Y}, {"width", &a.Width}, {"height", &a.Height}} {
		v, err := number(f.key, 0)
		if err != nil {
			return NeedleArea{}, err
		}
		// os-autoinst hands these to C as integers.
		iv := perlIV(v)
		if float64(iv) != v {
			note("%s %v is read as %d", f.key, v, iv)
		}
		*f.dst = int(max(-maxCoordinate-1, min(maxCoordinate+1, iv)))
	}
	var err error
	if a.Match, err = number("match", DefaultMatch); err != nil {
		return NeedleArea{}, err
	}
	// Finite numbers with the same verdicts: os-autoinst compares the
	// similarity with NaN, which fails no comparison, or with ±Inf.
	switch {
	case math.IsInf(a.Match, 1):
		note("match %v: no similarity reaches it", a.Match)
		a.Match = math.MaxFloat64
	case math.IsInf(a.Match, -1) || math.IsNaN(a.Match):
		note("match %v: every similarity reaches it", a.Match)
		a.Match = -math.MaxFloat64
	}
	if a.Margin, err = number("margin", DefaultMargin); err != nil {
		return NeedleArea{}, err
	}
	if math.IsNaN(a.Margin) || math.IsInf(a.Margin, 0) {
		// os-autoinst would search at ratio 1 as with margin 0.
		return NeedleArea{}, fmt.Errorf("margin %v: want a finite number", a.Margin)
	}
	if raw := fields["type"]; perlTrue(raw) {
		if jsonKind(raw) == '"' {
			a.Type = jsonString(raw)
		} else {
			a.Type = string(raw) // can equal no type os-autoinst searches
		}
	}
	if raw := fields["click_point"]; perlTrue(raw) {
		cp, unclean, err := decodeClickPoint(raw)
		if err != nil {
			return NeedleArea{}, fmt.Errorf("click_point: %w", err)
		}
		if unclean != "" {
			note("click_point: %s is not a number: os-autoinst reads it as 0 or its numeric prefix", unclean)
		}
		a.ClickPoint = &cp
	}
	return a, nil
}

// decodeClickPoint reads a click point os-autoinst takes as valid: the
// string "center", or an object whose xpos and ypos are true to Perl (so
// not 0). unclean is a value that is not a number, read as Perl does.
func decodeClickPoint(raw json.RawMessage) (cp ClickPoint, unclean string, err error) {
	invalid := fmt.Errorf(`os-autoinst refuses %s: want "center" or {"xpos":..,"ypos":..}, both other than 0`, describeJSON(raw))
	switch jsonKind(raw) {
	case '"':
		if jsonString(raw) == "center" {
			return ClickPoint{Center: true}, "", nil
		}
	case '{':
		var obj map[string]json.RawMessage
		_ = json.Unmarshal(raw, &obj) // a valid object
		if !perlTrue(obj["xpos"]) || !perlTrue(obj["ypos"]) {
			return ClickPoint{}, "", invalid
		}
		for _, f := range []struct {
			key string
			dst *float64
		}{{"xpos", &cp.X}, {"ypos", &cp.Y}} {
			v, clean, err := perlNumber(obj[f.key])
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
				return ClickPoint{}, "", fmt.Errorf("%s: want a finite number, got %s", f.key, describeJSON(obj[f.key]))
			}
			if !clean && unclean == "" {
				unclean = f.key + " " + describeJSON(obj[f.key])
			}
			*f.dst = v
		}
		return cp, unclean, nil
	}
	return ClickPoint{}, "", invalid
}

// MarshalJSON writes the area in openQA's format. A match or margin of 0,
// which os-autoinst would replace by its default if written as 0, is
// written as "0.0", which it reads as 0.
func (a NeedleArea) MarshalJSON() ([]byte, error) {
	zeroKept := func(v float64) any {
		if v == 0 {
			return "0.0"
		}
		return v
	}
	return json.Marshal(struct {
		X          int         `json:"xpos"`
		Y          int         `json:"ypos"`
		Width      int         `json:"width"`
		Height     int         `json:"height"`
		Type       string      `json:"type"`
		Match      any         `json:"match"`
		Margin     any         `json:"margin"`
		ClickPoint *ClickPoint `json:"click_point,omitempty"`
	}{a.X, a.Y, a.Width, a.Height, a.Type, zeroKept(a.Match), zeroKept(a.Margin), a.ClickPoint})
}

// MarshalJSON writes "center" or {"xpos":..,"ypos":..}.
func (c ClickPoint) MarshalJSON() ([]byte, error) {
	if c.Center {
		return []byte(`"center"`), nil
	}
	return json.Marshal(struct {
		X float64 `json:"xpos"`
		Y float64 `json:"ypos"`
	}{c.X, c.Y})
}

// MarshalJSON writes a plain name, or {"name":..,"value":..} when the
// property has a value.
func (p NeedleProperty) MarshalJSON() ([]byte, error) {
	if p.Value == "" {
		return json.Marshal(p.Name)
	}
	return json.Marshal(struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	}{p.Name, p.Value})
}

package schemas

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
)

// Needle area types, as openQA writes them.
const (
	AreaTypeMatch   = "match"   // must be found on the screen
	AreaTypeExclude = "exclude" // ignored: painted green on needle and screen
	AreaTypeOCR     = "ocr"     // read by OCR in openQA; never decides a match
)

// Defaults os-autoinst applies when an area's value is missing or 0.
const (
	DefaultMatch  = 96 // percent
	DefaultMargin = 50 // pixels
)

// maxCoordinate bounds every position and size so that sums of them
// cannot overflow an int anywhere downstream.
const maxCoordinate = 1 << 20

// Needle is an openQA needle's JSON: what to look for on a screen (its
// areas) and when to look for it (its tags). The PNG it belongs to is
// carried separately. Marshalling a Needle writes openQA's format.
type Needle struct {
	Name       string           `json:"-"` // the file name without .json
	Tags       []string         `json:"tags"`
	Properties []NeedleProperty `json:"properties"`
	Areas      []NeedleArea     `json:"area"`
}

// NeedleArea is one rectangle of a needle, in pixels of the needle's PNG.
type NeedleArea struct {
	X      int    `json:"xpos"`
	Y      int    `json:"ypos"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
	Type   string `json:"type"` // AreaTypeMatch, AreaTypeExclude or AreaTypeOCR
	// Match is the similarity in percent the area needs to pass.
	Match float64 `json:"match"`
	// Margin is how far, in pixels, the area may have moved and still be
	// found when searching near its position.
	Margin     int         `json:"margin"`
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

// NeedleError is what ParseNeedle and Validate return: it names the needle,
// then says what is wrong, e.g. `needle "boot-menu": area 2: unknown type
// "matc"`. Areas are counted from 1, in file order.
type NeedleError struct {
	Needle string
	Err    error
}

func (e *NeedleError) Error() string { return fmt.Sprintf("needle %q: %v", e.Needle, e.Err) }

func (e *NeedleError) Unwrap() error { return e.Err }

// ParseNeedle decodes a needle's JSON the way os-autoinst loads it: a
// missing type is "match", a missing or zero match is 96, a missing or zero
// margin is 50, unknown fields are ignored. Unlike os-autoinst it refuses,
// rather than skips, what it cannot use: an unknown area type, a negative
// or fractional position, a needle without a match area. Whether the
// areas fit the PNG is checked by Validate.
func ParseNeedle(name string, data []byte) (Needle, error) {
	n := Needle{Name: name}
	if err := n.decode(data); err != nil {
		return Needle{}, &NeedleError{Needle: name, Err: err}
	}
	if err := n.check(); err != nil {
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

// Validate checks the needle against its PNG's size: every area is
// non-empty and inside the image, and at least one area is a match area.
func (n Needle) Validate(width, height int) error {
	if err := n.check(); err != nil {
		return &NeedleError{Needle: n.Name, Err: err}
	}
	for i, a := range n.Areas {
		if a.X+a.Width > width || a.Y+a.Height > height {
			return &NeedleError{Needle: n.Name, Err: fmt.Errorf(
				"area %d: %dx%d at (%d,%d) is outside the %dx%d image",
				i+1, a.Width, a.Height, a.X, a.Y, width, height)}
		}
	}
	return nil
}

// check is what Validate checks without knowing the image.
func (n Needle) check() error {
	matches, clicks := 0, 0
	for i, a := range n.Areas {
		switch a.Type {
		case AreaTypeMatch:
			matches++
		case AreaTypeExclude, AreaTypeOCR:
		default:
			return fmt.Errorf("area %d: unknown type %q", i+1, a.Type)
		}
		if a.X < 0 || a.Y < 0 || a.X > maxCoordinate || a.Y > maxCoordinate {
			return fmt.Errorf("area %d: position (%d,%d) out of range", i+1, a.X, a.Y)
		}
		if a.Width <= 0 || a.Height <= 0 || a.Width > maxCoordinate || a.Height > maxCoordinate {
			return fmt.Errorf("area %d: size %dx%d is empty or out of range", i+1, a.Width, a.Height)
		}
		if a.Match < 0 || a.Match > 100 || math.IsNaN(a.Match) {
			return fmt.Errorf("area %d: match %v is not a percentage", i+1, a.Match)
		}
		if a.Margin < 0 || a.Margin > maxCoordinate {
			return fmt.Errorf("area %d: margin %d out of range", i+1, a.Margin)
		}
		if cp := a.ClickPoint; cp != nil {
			clicks++
			if !cp.Center && !(cp.X >= 0 && cp.X <= float64(a.Width) && cp.Y >= 0 && cp.Y <= float64(a.Height)) {
				return fmt.Errorf("area %d: click_point (%v,%v) is outside the area", i+1, cp.X, cp.Y)
			}
		}
	}
	if clicks > 1 {
		return fmt.Errorf("%d areas have a click_point, at most one may", clicks)
	}
	if matches == 0 {
		return fmt.Errorf("no area of type %q", AreaTypeMatch)
	}
	return nil
}

// decode reads the JSON by exact key, as os-autoinst's Perl does (Go's
// struct decoding would also accept "XPOS"), applying its defaults.
func (n *Needle) decode(data []byte) error {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return fmt.Errorf("not a JSON object: %w", err)
	}
	if err := decodeOptional(top["tags"], &n.Tags); err != nil {
		return fmt.Errorf("tags: %w", err)
	}
	if err := decodeOptional(top["properties"], &n.Properties); err != nil {
		return fmt.Errorf("properties: %w", err)
	}
	var areas []map[string]json.RawMessage
	if err := decodeOptional(top["area"], &areas); err != nil {
		return fmt.Errorf("area: %w", err)
	}
	for i, raw := range areas {
		a, err := decodeArea(raw)
		if err != nil {
			return fmt.Errorf("area %d: %w", i+1, err)
		}
		n.Areas = append(n.Areas, a)
	}
	return nil
}

func decodeArea(raw map[string]json.RawMessage) (NeedleArea, error) {
	if raw == nil {
		return NeedleArea{}, fmt.Errorf("not a JSON object")
	}
	a := NeedleArea{Type: AreaTypeMatch, Match: DefaultMatch, Margin: DefaultMargin}
	ints := []struct {
		key string
		dst *int
	}{{"xpos", &a.X}, {"ypos", &a.Y}, {"width", &a.Width}, {"height", &a.Height}, {"margin", &a.Margin}}
	for _, f := range ints {
		v, ok, err := decodeInt(raw[f.key])
		if err != nil {
			return NeedleArea{}, fmt.Errorf("%s: %w", f.key, err)
		}
		if ok {
			*f.dst = v
		}
	}
	if a.Margin == 0 {
		a.Margin = DefaultMargin
	}
	var match float64
	if err := decodeOptional(raw["match"], &match); err != nil {
		return NeedleArea{}, fmt.Errorf("match: %w", err)
	}
	if match != 0 {
		a.Match = match
	}
	var typ string
	if err := decodeOptional(raw["type"], &typ); err != nil {
		return NeedleArea{}, fmt.Errorf("type: %w", err)
	}
	if typ != "" {
		a.Type = typ
	}
	if err := decodeOptional(raw["click_point"], &a.ClickPoint); err != nil {
		return NeedleArea{}, fmt.Errorf("click_point: %w", err)
	}
	return a, nil
}

// decodeOptional leaves dst alone when the value is missing or null.
func decodeOptional(raw json.RawMessage, dst any) error {
	if raw == nil || bytes.Equal(raw, []byte("null")) {
		return nil
	}
	return json.Unmarshal(raw, dst)
}

// decodeInt accepts integral JSON numbers in any notation ("10", "1e1",
// "10.0"); ok is false when the value is missing or null.
func decodeInt(raw json.RawMessage) (v int, ok bool, err error) {
	var num json.Number
	if len(raw) > 0 && raw[0] == '"' {
		// json.Number would take a quoted number; Perl code would too, but
		// no needle writer quotes numbers.
		return 0, false, fmt.Errorf("want an integer, got %s", raw)
	}
	if err := decodeOptional(raw, &num); err != nil {
		return 0, false, fmt.Errorf("want an integer, got %s", raw)
	}
	if num == "" {
		return 0, false, nil
	}
	if i, err := strconv.ParseInt(string(num), 10, 64); err == nil && i >= -maxCoordinate && i <= maxCoordinate {
		return int(i), true, nil
	}
	f, err := num.Float64()
	if err != nil || f != math.Trunc(f) || math.Abs(f) > maxCoordinate {
		return 0, false, fmt.Errorf("want an integer within ±%d, got %s", maxCoordinate, num)
	}
	return int(f), true, nil
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

// UnmarshalJSON reads "center" or {"xpos":..,"ypos":..}.
func (c *ClickPoint) UnmarshalJSON(data []byte) error {
	var s string
	if json.Unmarshal(data, &s) == nil {
		if s != "center" {
			return fmt.Errorf(`want "center" or {"xpos":..,"ypos":..}, got %q`, s)
		}
		*c = ClickPoint{Center: true}
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil || obj == nil {
		return fmt.Errorf(`want "center" or {"xpos":..,"ypos":..}, got %s`, data)
	}
	var p ClickPoint
	for _, f := range []struct {
		key string
		dst *float64
	}{{"xpos", &p.X}, {"ypos", &p.Y}} {
		raw, ok := obj[f.key]
		if !ok {
			return fmt.Errorf("%s missing", f.key)
		}
		if err := json.Unmarshal(raw, f.dst); err != nil {
			return fmt.Errorf("%s: want a number, got %s", f.key, raw)
		}
	}
	*c = p
	return nil
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

// UnmarshalJSON reads a plain name or {"name":..,"value":..}.
func (p *NeedleProperty) UnmarshalJSON(data []byte) error {
	var name string
	if json.Unmarshal(data, &name) == nil {
		*p = NeedleProperty{Name: name}
		return nil
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil || obj == nil {
		return fmt.Errorf(`want a name or {"name":..,"value":..}, got %s`, data)
	}
	var q NeedleProperty
	if err := decodeOptional(obj["name"], &q.Name); err != nil || q.Name == "" {
		return fmt.Errorf(`want a name or {"name":..,"value":..}, got %s`, data)
	}
	if err := decodeOptional(obj["value"], &q.Value); err != nil {
		return fmt.Errorf("property %q: value: want a string, got %s", q.Name, obj["value"])
	}
	*p = q
	return nil
}

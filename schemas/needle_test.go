package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func TestParseNeedle(t *testing.T) {
	tests := []struct {
		name string
		json string
		want Needle
	}{
		{
			name: "openQA needle with every field",
			json: `{"tags":["shell-prompt","ENV-X"],"properties":["workaround"],"area":[
				{"xpos":10,"ypos":20,"width":100,"height":16,"type":"match","match":90,"margin":30,"click_point":{"xpos":5,"ypos":5}}]}`,
			want: Needle{
				Tags:       []string{"shell-prompt", "ENV-X"},
				Properties: []NeedleProperty{{Name: "workaround"}},
				Areas: []NeedleArea{{X: 10, Y: 20, Width: 100, Height: 16, Type: AreaTypeMatch,
					Match: 90, Margin: 30, ClickPoint: &ClickPoint{X: 5, Y: 5}}},
			},
		},
		{
			name: "missing type, match and margin get os-autoinst's defaults",
			json: `{"tags":["a"],"area":[{"xpos":1,"ypos":2,"width":3,"height":4}]}`,
			want: Needle{Tags: []string{"a"}, Areas: []NeedleArea{
				{X: 1, Y: 2, Width: 3, Height: 4, Type: AreaTypeMatch, Match: 96, Margin: 50}}},
		},
		{
			name: "zero and null mean default too, as Perl's ||",
			json: `{"tags":null,"properties":null,"area":[{"xpos":null,"ypos":0,"width":3,"height":4,"type":"","match":0,"margin":0}]}`,
			want: Needle{Areas: []NeedleArea{
				{X: 0, Y: 0, Width: 3, Height: 4, Type: AreaTypeMatch, Match: 96, Margin: 50}}},
		},
		{
			name: "integral numbers in any notation, fractional match",
			json: `{"area":[{"xpos":1e1,"ypos":20.0,"width":3,"height":4,"match":95.5}]}`,
			want: Needle{Areas: []NeedleArea{
				{X: 10, Y: 20, Width: 3, Height: 4, Type: AreaTypeMatch, Match: 95.5, Margin: 50}}},
		},
		{
			name: "properties as names and as objects",
			json: `{"tags":["t"],"properties":["glyph",{"name":"workaround","value":"bsc#1234: slow"},{"name":"x"}],
				"area":[{"xpos":0,"ypos":0,"width":1,"height":1}]}`,
			want: Needle{Tags: []string{"t"},
				Properties: []NeedleProperty{{Name: "glyph"}, {Name: "workaround", Value: "bsc#1234: slow"}, {Name: "x"}},
				Areas:      []NeedleArea{{Width: 1, Height: 1, Type: AreaTypeMatch, Match: 96, Margin: 50}}},
		},
		{
			name: "exclude and ocr areas, centre click point, unknown fields ignored",
			json: `{"tags":["t"],"area":[
				{"xpos":0,"ypos":0,"width":50,"height":50,"type":"match","click_point":"center","processing_flags":[]},
				{"xpos":5,"ypos":5,"width":10,"height":10,"type":"exclude"},
				{"xpos":20,"ypos":20,"width":10,"height":10,"type":"ocr"}],"comment":"x"}`,
			want: Needle{Tags: []string{"t"}, Areas: []NeedleArea{
				{Width: 50, Height: 50, Type: AreaTypeMatch, Match: 96, Margin: 50, ClickPoint: &ClickPoint{Center: true}},
				{X: 5, Y: 5, Width: 10, Height: 10, Type: AreaTypeExclude, Match: 96, Margin: 50},
				{X: 20, Y: 20, Width: 10, Height: 10, Type: AreaTypeOCR, Match: 96, Margin: 50},
			}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseNeedle("n", []byte(tt.json))
			if err != nil {
				t.Fatal(err)
			}
			tt.want.Name = "n"
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseNeedleErrors(t *testing.T) {
	tests := []struct {
		json string
		want string // the whole message
	}{
		{`{"area":[{"width":1,"height":1},{"width":1,"height":1,"type":"matc"}]}`,
			`needle "boot-menu": area 2: unknown type "matc"`},
		{`[]`, `needle "boot-menu": not a JSON object: `},
		{`{"area":`, `needle "boot-menu": not a JSON object: `},
		{`{"tags":"boot"}`, `needle "boot-menu": tags: `},
		{`{"tags":[1]}`, `needle "boot-menu": tags: `},
		{`{"area":{}}`, `needle "boot-menu": area: `},
		{`{"area":[7]}`, `needle "boot-menu": area: `},
		{`{"area":[null]}`, `needle "boot-menu": area 1: not a JSON object`},
		{`{"area":[{"xpos":"10","width":1,"height":1}]}`, `needle "boot-menu": area 1: xpos: want an integer, got "10"`},
		{`{"area":[{"xpos":1.5,"width":1,"height":1}]}`, `needle "boot-menu": area 1: xpos: want an integer within ±1048576, got 1.5`},
		{`{"area":[{"width":1e300,"height":1}]}`, `needle "boot-menu": area 1: width: want an integer within ±1048576, got 1e300`},
		{`{"area":[{"xpos":-1,"width":1,"height":1}]}`, `needle "boot-menu": area 1: position (-1,0) out of range`},
		{`{"area":[{"width":0,"height":1}]}`, `needle "boot-menu": area 1: size 0x1 is empty or out of range`},
		{`{"area":[{"width":1,"height":1,"margin":-5}]}`, `needle "boot-menu": area 1: margin -5 out of range`},
		{`{"area":[{"width":1,"height":1,"match":101}]}`, `needle "boot-menu": area 1: match 101 is not a percentage`},
		{`{"area":[{"width":1,"height":1,"match":"96"}]}`, `needle "boot-menu": area 1: match: `},
		{`{"area":[{"width":1,"height":1,"type":7}]}`, `needle "boot-menu": area 1: type: `},
		{`{"tags":["a"]}`, `needle "boot-menu": no area of type "match"`},
		{`{"area":[{"width":1,"height":1,"type":"ocr"}]}`, `needle "boot-menu": no area of type "match"`},
		{`{"area":[{"width":9,"height":9,"click_point":"centre"}]}`, `needle "boot-menu": area 1: click_point: want "center" or {"xpos":..,"ypos":..}, got "centre"`},
		{`{"area":[{"width":9,"height":9,"click_point":{"xpos":1}}]}`, `needle "boot-menu": area 1: click_point: ypos missing`},
		{`{"area":[{"width":9,"height":9,"click_point":{"xpos":10,"ypos":1}}]}`, `needle "boot-menu": area 1: click_point (10,1) is outside the area`},
		{`{"area":[{"width":9,"height":9,"click_point":"center"},{"width":9,"height":9,"click_point":"center"}]}`,
			`needle "boot-menu": 2 areas have a click_point, at most one may`},
		{`{"properties":[{"value":"x"}],"area":[{"width":1,"height":1}]}`, `needle "boot-menu": properties: want a name or {"name":..,"value":..}, got {"value":"x"}`},
		{`{"properties":[{"name":"w","value":3}],"area":[{"width":1,"height":1}]}`, `needle "boot-menu": properties: property "w": value: want a string, got 3`},
	}
	for _, tt := range tests {
		t.Run(tt.json, func(t *testing.T) {
			_, err := ParseNeedle("boot-menu", []byte(tt.json))
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			if !strings.HasPrefix(err.Error(), tt.want) || (!strings.HasSuffix(tt.want, ": ") && err.Error() != tt.want) {
				t.Errorf("error %q\nwant     %q", err, tt.want)
			}
			var ne *NeedleError
			if !errors.As(err, &ne) || ne.Needle != "boot-menu" {
				t.Errorf("error %#v is not a *NeedleError for boot-menu", err)
			}
		})
	}
}

func TestNeedleValidate(t *testing.T) {
	n, err := ParseNeedle("grub", []byte(`{"tags":["grub"],"area":[
		{"xpos":0,"ypos":0,"width":1024,"height":10},
		{"xpos":1000,"ypos":700,"width":24,"height":68,"type":"exclude"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		width, height int
		want          string
	}{
		{1024, 768, ""},
		{1280, 1024, ""},
		{1023, 768, `needle "grub": area 1: 1024x10 at (0,0) is outside the 1023x768 image`},
		{1024, 767, `needle "grub": area 2: 24x68 at (1000,700) is outside the 1024x767 image`},
		{0, 0, `needle "grub": area 1: 1024x10 at (0,0) is outside the 0x0 image`},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%dx%d", tt.width, tt.height), func(t *testing.T) {
			err := n.Validate(tt.width, tt.height)
			if got := fmt.Sprint(err); (err != nil || tt.want != "") && got != tt.want {
				t.Errorf("Validate = %v, want %q", err, tt.want)
			}
		})
	}

	// A needle built in code is held to the same rules as a parsed one.
	built := Needle{Name: "built", Areas: []NeedleArea{{Width: 5, Height: 5, Type: AreaTypeExclude}}}
	if err := built.Validate(10, 10); fmt.Sprint(err) != `needle "built": no area of type "match"` {
		t.Errorf("Validate = %v", err)
	}
}

func TestNeedleTagsAndProperties(t *testing.T) {
	n := Needle{Tags: []string{"bootloader", "ENV-UEFI"}, Properties: []NeedleProperty{{Name: "workaround", Value: "poo#1"}}}
	for tag, want := range map[string]bool{"bootloader": true, "ENV-UEFI": true, "boot": false, "": false, "BOOTLOADER": false} {
		if got := n.HasTag(tag); got != want {
			t.Errorf("HasTag(%q) = %v, want %v", tag, got, want)
		}
	}
	if !n.HasProperty("workaround") || n.HasProperty("glyph") {
		t.Errorf("HasProperty wrong for %+v", n.Properties)
	}
}

// Marshalling writes openQA's format, which parses back to the same needle.
func TestNeedleJSONRoundTrip(t *testing.T) {
	in := `{"tags":["shell-prompt"],"properties":["glyph",{"name":"workaround","value":"bsc#1"}],"area":[
		{"xpos":10,"ypos":20,"width":100,"height":16,"type":"match","match":96,"margin":50,"click_point":{"xpos":5,"ypos":5.5}},
		{"xpos":0,"ypos":0,"width":5,"height":5,"type":"exclude"}]}`
	n, err := ParseNeedle("shell", []byte(in))
	if err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"tags":["shell-prompt"],"properties":["glyph",{"name":"workaround","value":"bsc#1"}],"area":[` +
		`{"xpos":10,"ypos":20,"width":100,"height":16,"type":"match","match":96,"margin":50,"click_point":{"xpos":5,"ypos":5.5}},` +
		`{"xpos":0,"ypos":0,"width":5,"height":5,"type":"exclude","match":96,"margin":50}]}`
	if string(out) != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", out, want)
	}
	back, err := ParseNeedle("shell", out)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, n) {
		t.Errorf("round trip changed the needle:\n%+v\n%+v", back, n)
	}
	if out, _ := json.Marshal(ClickPoint{Center: true}); string(out) != `"center"` {
		t.Errorf("centre click point marshals to %s", out)
	}
}

func FuzzParseNeedle(f *testing.F) {
	f.Add("boot-menu", []byte(`{"tags":["shell-prompt"],"properties":["workaround"],"area":[{"xpos":10,"ypos":20,"width":100,"height":16,"type":"match","match":96,"margin":50,"click_point":{"xpos":5,"ypos":5}}]}`))
	f.Add("x", []byte(`{"tags":["t"],"properties":[{"name":"a","value":"b"}],"area":[{"width":5,"height":5,"click_point":"center"},{"width":1,"height":1,"type":"exclude"}]}`))
	f.Add("", []byte(`{"area":[{"xpos":1e1,"width":-1}]}`))
	f.Add("\"quoted\"\n", []byte(`[`))
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		n, err := ParseNeedle(name, data)
		if err != nil {
			var ne *NeedleError
			if !errors.As(err, &ne) || ne.Needle != name || !strings.Contains(err.Error(), fmt.Sprintf("%q", name)) {
				t.Fatalf("error %q does not name needle %q", err, name)
			}
			return
		}
		if n.Name != name {
			t.Fatalf("Name = %q, want %q", n.Name, name)
		}
		// A parsed needle re-marshals into JSON that parses to the same needle.
		out, err := json.Marshal(n)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseNeedle(name, out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		if !reflect.DeepEqual(back, n) {
			t.Fatalf("round trip changed the needle:\n%+v\n%+v", back, n)
		}
		if err := n.Validate(maxCoordinate*2, maxCoordinate*2); err != nil {
			t.Fatalf("parsed needle fails Validate on a huge image: %v", err)
		}
	})
}

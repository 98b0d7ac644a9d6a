package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// area is a match area with os-autoinst's defaults.
func area(x, y, w, h int) NeedleArea {
	return NeedleArea{X: x, Y: y, Width: w, Height: h, Type: AreaTypeMatch, Match: DefaultMatch, Margin: DefaultMargin}
}

// parsed is ParseNeedle's needle without its warnings, which
// TestNeedleWarnings checks.
func parsed(t *testing.T, name, js string) Needle {
	t.Helper()
	n, err := ParseNeedle(name, []byte(js))
	if err != nil {
		t.Fatal(err)
	}
	n.notes = nil
	return n
}

// TestParseNeedle reads needles as os-autoinst does; testdata/needle-corpus
// in stages/match/needle checks the same against os-autoinst itself.
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
			want: Needle{Tags: []string{"a"}, Areas: []NeedleArea{area(1, 2, 3, 4)}},
		},
		{
			name: "what is false to Perl gets the default too: 0, 0.0, null, false, \"\", \"0\"",
			json: `{"tags":null,"properties":false,"area":[{"xpos":null,"ypos":"0","width":3,"height":4,"type":"","match":0.0,"margin":"","click_point":0},
				{"width":3,"height":4,"type":false,"match":"0","margin":-0,"click_point":""}]}`,
			want: Needle{Areas: []NeedleArea{area(0, 0, 3, 4), area(0, 0, 3, 4)}},
		},
		{
			name: "numbers written as strings, as in real needle repositories",
			json: `{"area":[{"xpos":"495","ypos":" 371","width":"290 ","height":"21.0","match":"90","margin":"30.5","click_point":{"xpos":"5","ypos":"2.5"}}]}`,
			want: Needle{Areas: []NeedleArea{{X: 495, Y: 371, Width: 290, Height: 21, Type: AreaTypeMatch,
				Match: 90, Margin: 30.5, ClickPoint: &ClickPoint{X: 5, Y: 2.5}}}},
		},
		{
			name: "integers written as floats or with exponents, a fractional margin and match",
			json: `{"area":[{"xpos":1e1,"ypos":20.0,"width":"3e0","height":4,"match":95.5,"margin":30.0},{"width":3,"height":4,"margin":12.7}]}`,
			want: Needle{Areas: []NeedleArea{
				{X: 10, Y: 20, Width: 3, Height: 4, Type: AreaTypeMatch, Match: 95.5, Margin: 30},
				{Width: 3, Height: 4, Type: AreaTypeMatch, Match: DefaultMatch, Margin: 12.7}}},
		},
		{
			name: "positions and sizes are truncated toward 0, as Perl hands them to C",
			json: `{"area":[{"xpos":12.7,"ypos":"-0.5","width":"12.9","height":"4abc"},{"xpos":-3,"ypos":-2.5,"width":-1,"height":0}]}`,
			want: Needle{Areas: []NeedleArea{area(12, 0, 12, 4), area(-3, -2, -1, 0)}},
		},
		{
			name: `true to Perl but 0 as a number: "0.0", "00", "abc", true`,
			json: `{"area":[{"width":1,"height":1,"match":"0.0","margin":"00"},{"width":1,"height":1,"match":"abc","margin":"x"},{"width":1,"height":1,"match":true,"margin":true}]}`,
			want: Needle{Areas: []NeedleArea{
				{Width: 1, Height: 1, Type: AreaTypeMatch},
				{Width: 1, Height: 1, Type: AreaTypeMatch},
				{Width: 1, Height: 1, Type: AreaTypeMatch, Match: 1, Margin: 1}}},
		},
		{
			name: "match levels no similarity or every similarity reaches",
			json: `{"area":[{"width":1,"height":1,"match":150},{"width":1,"height":1,"match":-5},{"width":1,"height":1,"match":"inf"},{"width":1,"height":1,"match":"nan"}]}`,
			want: Needle{Areas: []NeedleArea{
				{Width: 1, Height: 1, Type: AreaTypeMatch, Match: 150, Margin: 50},
				{Width: 1, Height: 1, Type: AreaTypeMatch, Match: -5, Margin: 50},
				{Width: 1, Height: 1, Type: AreaTypeMatch, Match: math.MaxFloat64, Margin: 50},
				{Width: 1, Height: 1, Type: AreaTypeMatch, Match: -math.MaxFloat64, Margin: 50}}},
		},
		{
			name: "properties as names and as objects; what names nothing is left out",
			json: `{"tags":["t",7,2.50,null],"properties":["glyph",{"name":"workaround","value":"bsc#1234: slow"},{"name":"x"},{"value":"no name"},5,null,["a"]],
				"area":[{"xpos":0,"ypos":0,"width":1,"height":1}]}`,
			want: Needle{Tags: []string{"t", "7", "2.5"},
				Properties: []NeedleProperty{{Name: "glyph"}, {Name: "workaround", Value: "bsc#1234: slow"}, {Name: "x"}, {Name: "5"}},
				Areas:      []NeedleArea{area(0, 0, 1, 1)}},
		},
		{
			name: "exclude, ocr and unknown area types, centre click point, unknown keys ignored",
			json: `{"tags":["t"],"area":[
				{"xpos":0,"ypos":0,"width":50,"height":50,"type":"match","click_point":"center","processing_flags":[]},
				{"xpos":5,"ypos":5,"width":10,"height":10,"type":"exclude"},
				{"xpos":20,"ypos":20,"width":10,"height":10,"type":"ocr"},
				{"xpos":20,"ypos":20,"width":10,"height":10,"type":"nomatch"},
				{"xpos":20,"ypos":20,"width":10,"height":10,"type":7}],"comment":"x","Area":[]}`,
			want: Needle{Tags: []string{"t"}, Areas: []NeedleArea{
				{Width: 50, Height: 50, Type: AreaTypeMatch, Match: 96, Margin: 50, ClickPoint: &ClickPoint{Center: true}},
				{X: 5, Y: 5, Width: 10, Height: 10, Type: AreaTypeExclude, Match: 96, Margin: 50},
				{X: 20, Y: 20, Width: 10, Height: 10, Type: AreaTypeOCR, Match: 96, Margin: 50},
				{X: 20, Y: 20, Width: 10, Height: 10, Type: "nomatch", Match: 96, Margin: 50},
				{X: 20, Y: 20, Width: 10, Height: 10, Type: "7", Match: 96, Margin: 50},
			}},
		},
		{
			name: "a click point outside its area, negative margins, a byte order mark, a repeated key",
			json: "\xef\xbb\xbf" + `{"area":[{"xpos":0,"width":9,"height":9,"click_point":{"xpos":20,"ypos":-1}},{"width":60,"height":60,"margin":-30}],"tags":["a"],"tags":["b"]}`,
			want: Needle{Tags: []string{"b"}, Areas: []NeedleArea{
				{Width: 9, Height: 9, Type: AreaTypeMatch, Match: 96, Margin: 50, ClickPoint: &ClickPoint{X: 20, Y: -1}},
				{Width: 60, Height: 60, Type: AreaTypeMatch, Match: 96, Margin: -30}}},
		},
		{
			name: "numbers beyond C's long wrap as Perl casts them; far out ones are clamped, which moves them no closer",
			json: `{"area":[{"width":1,"height":1},{"xpos":1e300,"ypos":-1e300,"width":"9999999999","height":1e19}]}`,
			want: Needle{Areas: []NeedleArea{area(0, 0, 1, 1), area(-1, -maxCoordinate-1, maxCoordinate+1, -maxCoordinate-1)}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := parsed(t, "n", tt.json)
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
		want string // the whole message, or its start when it ends in ": "
	}{
		{`[]`, `needle "boot-menu": not a JSON object: []`},
		{`null`, `needle "boot-menu": not a JSON object: null`},
		{`{"area":`, `needle "boot-menu": not a JSON object: unexpected end of JSON input`},
		{`{"area":[]},`, `needle "boot-menu": not a JSON object: invalid character ',' after top-level value`},
		{"{\"tags\":[\"\xff\"]}", `needle "boot-menu": not a JSON object: a string has a byte 0xff that is not UTF-8`},
		{`{"tags":["\ud800x"]}`, `needle "boot-menu": not a JSON object: a string has \ud800 without the second half of its surrogate pair`},
		{`{"tags":["\udc00"]}`, `needle "boot-menu": not a JSON object: a string has \udc00 without the first half of its surrogate pair`},
		{`{"x":` + strings.Repeat("[", 512) + strings.Repeat("]", 512) + `}`, `needle "boot-menu": not a JSON object: nested deeper than 512 levels`},
		{`{"tags":"boot"}`, `needle "boot-menu": tags: want a list, got "boot": os-autoinst dies registering the needle's tags`},
		{`{"properties":"workaround","area":[{"width":1,"height":1}]}`,
			`needle "boot-menu": properties: want a list, got "workaround": os-autoinst dies asking it for the workaround property`},
		{`{"properties":{"name":"workaround"}}`, `needle "boot-menu": properties: want a list, got {"name":"workaround"}: `},
		{`{"area":{}}`, `needle "boot-menu": area: want a list of areas, got {}`},
		{`{"area":0}`, `needle "boot-menu": area: want a list of areas, got 0`},
		{`{"area":[7]}`, `needle "boot-menu": area 1: want an object, got 7: os-autoinst dies reading it`},
		{`{"area":[{"width":1,"height":1},null]}`,
			`needle "boot-menu": area 2: null: os-autoinst reads it as an empty match area at (0,0), which crashes its search`},
		{`{"area":[{"xpos":[10],"width":1,"height":1}]}`, `needle "boot-menu": area 1: xpos: want a number, got [10]`},
		{`{"area":[{"width":1,"height":1,"match":{}}]}`, `needle "boot-menu": area 1: match: want a number, got {}`},
		{`{"area":[{"width":1,"height":1,"margin":"nan"}]}`, `needle "boot-menu": area 1: margin NaN: want a finite number`},
		{`{"area":[{"width":1,"height":1,"margin":2e9}]}`,
			`needle "boot-menu": area 1: margin 2e+09 is out of range ±1073741824: os-autoinst's search overflows or crashes with it`},
		{`{"area":[{"width":0,"height":1}]}`,
			`needle "boot-menu": area 1: width/height 0x1: an empty area at a position of 0 or more crashes os-autoinst's search`},
		{`{"area":[{"width":1,"height":1},{"xpos":5,"width":-3,"height":1}]}`,
			`needle "boot-menu": area 2: width/height -3x1: an empty area at a position of 0 or more crashes os-autoinst's search`},
		{`{"area":[{"width":153,"height":16,"margin":-31}]}`,
			`needle "boot-menu": area 1: margin -31: at assert_screen's ratio 0.02 the search window is 9 pixels smaller than the 153x16 area on each side, which crashes os-autoinst`},
		{`{"tags":["a"]}`, `needle "boot-menu": no area of type "match": os-autoinst cannot search for the needle`},
		{`{"area":[{"width":1,"height":1,"type":"ocr"}]}`, `needle "boot-menu": no area of type "match": os-autoinst cannot search for the needle`},
		{`{"area":[{"width":1,"height":1,"type":"Match"}]}`, `needle "boot-menu": no area of type "match": os-autoinst cannot search for the needle`},
		{`{"area":[{"width":1,"height":1},{"xpos":-1,"width":1,"height":1,"type":"ocr"}]}`,
			`needle "boot-menu": area 2: 1x1 at (-1,0) is not inside the image: os-autoinst dies reading it when the needle matches`},
		{`{"area":[{"width":9,"height":9,"click_point":"centre"}]}`,
			`needle "boot-menu": area 1: click_point: os-autoinst refuses "centre": want "center" or {"xpos":..,"ypos":..}, both other than 0`},
		{`{"area":[{"width":9,"height":9,"click_point":{"xpos":1}}]}`,
			`needle "boot-menu": area 1: click_point: os-autoinst refuses {"xpos":1}: want "center" or {"xpos":..,"ypos":..}, both other than 0`},
		{`{"area":[{"width":9,"height":9,"click_point":{"xpos":0,"ypos":3}}]}`,
			`needle "boot-menu": area 1: click_point: os-autoinst refuses {"xpos":0,"ypos":3}: `},
		{`{"area":[{"width":9,"height":9,"click_point":true}]}`, `needle "boot-menu": area 1: click_point: os-autoinst refuses true: `},
		{`{"area":[{"width":9,"height":9,"click_point":{"xpos":[1],"ypos":1}}]}`,
			`needle "boot-menu": area 1: click_point: xpos: want a finite number, got [1]`},
		{`{"area":[{"width":9,"height":9,"click_point":"center"},{"width":9,"height":9,"click_point":"center"}]}`,
			`needle "boot-menu": area 2: a second click_point: os-autoinst refuses needles with more than one`},
	}
	for _, tt := range tests {
		t.Run(tt.json[:min(len(tt.json), 80)], func(t *testing.T) {
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

// TestNeedleWarnings lists what os-autoinst accepts, and so jetqa does,
// but `jetqa needle check` points out.
func TestNeedleWarnings(t *testing.T) {
	tests := []struct {
		json string
		want []string // on a 100x100 PNG, without `needle "n": `
	}{
		{`{"tags":["a"],"properties":[{"name":"workaround","value":"bsc#1"}],"area":[{"xpos":"10","width":"20","height":5.0,"match":"90","margin":30.0},{"width":5,"height":5,"type":"ocr"}]}`, nil},
		{`{"area":[{"xpos":"abc","ypos":"12px","width":5,"height":5}]}`, []string{
			`area 1: xpos "abc" is not a number: os-autoinst reads it as 0`,
			`area 1: ypos "12px" is not a number: os-autoinst reads it as 12`}},
		{`{"area":[{"xpos":1.5,"ypos":"2.5","width":5,"height":5}]}`, []string{
			`area 1: xpos 1.5 is read as 1`,
			`area 1: ypos 2.5 is read as 2`}},
		{`{"area":[{"width":5,"height":5},{"xpos":"nan","ypos":1e300,"width":5,"height":5}]}`, []string{
			`area 2: xpos NaN is read as 0`,
			`area 2: ypos 1e+300 is read as -1`,
			`area 2: xpos/ypos (0,-1): a negative position is never searched: similarity 0`}},
		{`{"area":[{"width":5,"height":5,"match":101},{"width":5,"height":5,"match":"0.0"},{"width":5,"height":5,"match":"inf"}]}`, []string{
			`area 3: match +Inf: no similarity reaches it`,
			`area 1: match 101: above 100 the area never passes`,
			`area 2: match 0: at 0 or below the area passes whatever the screen shows`,
			`area 3: match 1.7976931348623157e+308: above 100 the area never passes`}},
		{`{"area":[{"width":5,"height":5},{"xpos":-1,"width":5,"height":5},{"width":60,"height":60,"margin":-22}]}`, []string{
			`area 2: xpos/ypos (-1,0): a negative position is never searched: similarity 0`,
			`area 3: margin -22: at assert_screen's ratio 0.02 the search window is smaller than the area, so it is found only by searches of the whole screen`}},
		{`{"area":[{"width":5,"height":5},{"width":5,"height":5,"type":"nomatch"},{"xpos":-5,"width":5,"height":5,"type":"exclude"},{"xpos":99,"width":5,"height":5,"type":"exclude"},{"width":0,"height":5,"type":"ocr"}]}`, []string{
			`area 2: type "nomatch": os-autoinst ignores areas of types other than "match", "exclude" and "ocr"`,
			`area 3: 5x5 at (-5,0) is not inside the image: os-autoinst excludes nothing with it`,
			`area 4: 5x5 at (99,0) is not inside the image: os-autoinst excludes nothing with it`,
			`area 5: width/height 0x5: an empty ocr area reads nothing`}},
		{`{"tags":["a",null,[1]],"properties":[{"value":"x"},true],"area":[{"width":5,"height":5,"click_point":{"xpos":"5px","ypos":1}}]}`, []string{
			`tags: tag 2 is null, which no assert_screen can ask for: ignored`,
			`tags: tag 3 is [1], which no assert_screen can ask for: ignored`,
			`properties: property 1 is {"value":"x"}, which names no property: ignored`,
			`properties: property 2 is true, which names no property: ignored`,
			`area 1: click_point: xpos "5px" is not a number: os-autoinst reads it as 0 or its numeric prefix`}},
	}
	for _, tt := range tests {
		t.Run(tt.json, func(t *testing.T) {
			n, err := ParseNeedle("n", []byte(tt.json))
			if err != nil {
				t.Fatal(err)
			}
			if err := n.Validate(100, 100); err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, w := range n.Warnings(100, 100) {
				var ne *NeedleError
				if !errors.As(w, &ne) || ne.Needle != "n" {
					t.Errorf("warning %#v is not a *NeedleError for n", w)
				}
				got = append(got, strings.TrimPrefix(w.Error(), `needle "n": `))
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestPerlNumify pins Perl's reading of a string as a number, e.g.
// perl -e 'print " 12abc" + 0'.
func TestPerlNumify(t *testing.T) {
	tests := []struct {
		s     string
		want  float64
		clean bool
	}{
		{"90", 90, true}, {" 90", 90, true}, {"90 ", 90, true}, {"\t\n90\n", 90, true}, {"+5", 5, true}, {"-5", -5, true},
		{"12.7", 12.7, true}, {".5", 0.5, true}, {"5.", 5, true}, {"1e2", 100, true}, {"1E+2", 100, true}, {"-1.5e-1", -0.15, true},
		{"0.0", 0, true}, {"00", 0, true}, {"0 but true", 0, true},
		{"1e400", math.Inf(1), true}, {"inf", math.Inf(1), true}, {"-Infinity", math.Inf(-1), true}, {"NaN", math.NaN(), true},
		{"", 0, false}, {" ", 0, false}, {"abc", 0, false}, {".", 0, false}, {"-", 0, false}, {"+.e1", 0, false},
		{"12abc", 12, false}, {"1e", 1, false}, {"1e+", 1, false}, {"0x10", 0, false}, {"1_000", 1, false}, {"1 2", 1, false},
		{"infinite", math.Inf(1), false}, {"١٢", 0, false},
	}
	for _, tt := range tests {
		got, clean := perlNumify(tt.s)
		if !(got == tt.want || math.IsNaN(got) && math.IsNaN(tt.want)) || clean != tt.clean {
			t.Errorf("perlNumify(%q) = %v, %v; want %v, %v", tt.s, got, clean, tt.want, tt.clean)
		}
	}
}

// TestPerlIV pins how Perl turns a number into the C long os-autoinst's
// search gets, e.g. a width of 1e19 that becomes negative.
func TestPerlIV(t *testing.T) {
	for f, want := range map[float64]int64{
		12.7: 12, -12.7: -12, -0.5: 0, 1e15: 1e15, 1e19: -8446744073709551616, 1e20: -1,
		math.Inf(1): -1, math.Inf(-1): math.MinInt64, -1e19: math.MinInt64,
	} {
		if got := perlIV(f); got != want {
			t.Errorf("perlIV(%v) = %d, want %d", f, got, want)
		}
	}
	if got := perlIV(math.NaN()); got != 0 {
		t.Errorf("perlIV(NaN) = %d, want 0", got)
	}
}

func TestSearchMargin(t *testing.T) {
	for _, tt := range []struct{ margin, ratio, want float64 }{
		{50, 0.02, 69}, {12, 0.02, 32}, {11, 0.02, 31}, {30.7, 0.02, 50}, {30, 0.02, 49}, {-22, 0.02, -1}, {-20, 0.02, 0}, {50, 1, 1024}, {-1e9, 1, 1024},
	} {
		if got := SearchMargin(tt.margin, tt.ratio); got != tt.want {
			t.Errorf("SearchMargin(%v, %v) = %v, want %v", tt.margin, tt.ratio, got, tt.want)
		}
	}
}

func TestNeedleValidate(t *testing.T) {
	n := parsed(t, "grub", `{"tags":["grub"],"area":[
		{"xpos":0,"ypos":0,"width":1024,"height":10},
		{"xpos":1000,"ypos":700,"width":24,"height":68,"type":"ocr"},
		{"xpos":-5,"ypos":0,"width":2000,"height":10},
		{"xpos":1000,"ypos":760,"width":100,"height":100,"type":"exclude"}]}`)
	tests := []struct {
		width, height int
		want          string
	}{
		{1024, 768, ""},
		{1280, 1024, ""},
		{1023, 768, `needle "grub": area 1: 1024x10 at (0,0) is outside the 1023x768 image`},
		{1024, 767, `needle "grub": area 2: 24x68 at (1000,700) is not inside the image: os-autoinst dies reading it when the needle matches`},
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
	if err := built.Validate(10, 10); fmt.Sprint(err) != `needle "built": no area of type "match": os-autoinst cannot search for the needle` {
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
		{"xpos":10,"ypos":20,"width":100,"height":16,"type":"match","match":96,"margin":50.5,"click_point":{"xpos":5,"ypos":5.5}},
		{"xpos":0,"ypos":0,"width":5,"height":5,"type":"exclude"}]}`
	n := parsed(t, "shell", in)
	out, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"tags":["shell-prompt"],"properties":["glyph",{"name":"workaround","value":"bsc#1"}],"area":[` +
		`{"xpos":10,"ypos":20,"width":100,"height":16,"type":"match","match":96,"margin":50.5,"click_point":{"xpos":5,"ypos":5.5}},` +
		`{"xpos":0,"ypos":0,"width":5,"height":5,"type":"exclude","match":96,"margin":50}]}`
	if string(out) != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", out, want)
	}
	if back := parsed(t, "shell", string(out)); !reflect.DeepEqual(back, n) {
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
	f.Add("uefi", []byte(`{"area":[{"xpos":"495","ypos":371,"width":290,"height":"21","match":"90","margin":30.0},{"xpos":"-3","width":"abc","type":"ocr"}]}`))
	f.Add("zero", []byte(`{"area":[{"width":100,"height":1,"match":"A","margin":"00"}]}`)) // 0, not the defaults
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
		// A parsed needle re-marshals into JSON that parses to the same
		// needle (without the warnings about how it was written).
		n.notes = nil
		out, err := json.Marshal(n)
		if err != nil {
			t.Fatal(err)
		}
		back, err := ParseNeedle(name, out)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", out, err)
		}
		back.notes = nil
		if !reflect.DeepEqual(back, n) {
			t.Fatalf("round trip changed the needle:\n%+v\n%+v", back, n)
		}
		// Every area that is searched lies inside an image as large as
		// they reach, so Validate accepts it then.
		w, h := 0, 0
		for _, a := range n.Areas {
			w, h = max(w, a.X+a.Width), max(h, a.Y+a.Height)
		}
		if err := n.Validate(w, h); err != nil {
			t.Fatalf("parsed needle fails Validate on a %dx%d image: %v", w, h, err)
		}
	})
}

// written is JSON objects as messages quote them, shortened or not.
var written = regexp.MustCompile(`\{[^}]*?(\}|\.\.\.)`)

// FuzzNeedleNumbersAsStrings: a number written as a string, in any way
// Perl reads as that number, means what the number means, wherever a
// needle has a number, and is never refused for being a string.
func FuzzNeedleNumbersAsStrings(f *testing.F) {
	f.Add(495.0, 371.0, 290.0, 21.0, 90.0, 30.0, 5.0, 5.0, uint8(0), uint16(0xffff))
	f.Add(0.0, 0.0, 153.0, 16.0, 0.0, 50.0, 1.0, 1.0, uint8(3), uint16(1))
	f.Add(12.7, -3.0, 1e6, 1.0, 101.0, -22.0, 0.5, 2.5, uint8(5), uint16(0x55))
	f.Fuzz(func(t *testing.T, x, y, w, h, match, margin, cx, cy float64, spelling uint8, quoted uint16) {
		values := []float64{x, y, w, h, match, margin, cx, cy}
		for _, v := range values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return // JSON has no such numbers
			}
		}
		// spell writes v as a JSON number, or as a string Perl reads as
		// v. (Not 0: any string for it but "0" is true to Perl, so it
		// does not get the default a false value gets.)
		spell := func(i int, v float64) string {
			num := strconv.FormatFloat(v, 'g', -1, 64)
			if quoted&(1<<i) == 0 || v == 0 {
				return num
			}
			switch (int(spelling) + i) % 6 {
			case 0:
				return strconv.Quote(num)
			case 1:
				return strconv.Quote(" " + num)
			case 2:
				return strconv.Quote(num + "\n")
			case 3:
				return strconv.Quote(strconv.FormatFloat(v, 'e', -1, 64))
			case 4:
				if v >= 0 {
					return strconv.Quote("+" + num)
				}
				return strconv.Quote(num)
			default:
				return strconv.Quote(strconv.FormatFloat(v, 'f', -1, 64))
			}
		}
		needle := func(spell func(int, float64) string) string {
			return fmt.Sprintf(`{"area":[{"xpos":%s,"ypos":%s,"width":%s,"height":%s,"match":%s,"margin":%s,"click_point":{"xpos":%s,"ypos":%s}}]}`,
				spell(0, x), spell(1, y), spell(2, w), spell(3, h), spell(4, match), spell(5, margin), spell(6, cx), spell(7, cy))
		}
		numbers := needle(func(_ int, v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) })
		spelt := needle(spell)
		want, wantErr := ParseNeedle("n", []byte(numbers))
		got, err := ParseNeedle("n", []byte(spelt))
		// Messages quote JSON as written: compare them without it.
		if written.ReplaceAllString(fmt.Sprint(err), "{}") != written.ReplaceAllString(fmt.Sprint(wantErr), "{}") {
			t.Fatalf("%s:\n%v\nas numbers %s:\n%v", spelt, err, numbers, wantErr)
		}
		if err == nil && (!reflect.DeepEqual(got.Areas, want.Areas) || len(got.notes) != len(want.notes)) {
			t.Fatalf("%s:\n%+v\nas numbers %s:\n%+v", spelt, got, numbers, want)
		}
		if err != nil && (strings.Contains(err.Error(), "want a") || strings.Contains(err.Error(), "JSON")) {
			t.Fatalf("%s: refused for how a number is written: %v", spelt, err)
		}
	})
}

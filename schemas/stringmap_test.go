package schemas

import (
	"encoding/json"
	"maps"
	"testing"

	jsonv1 "github.com/go-json-experiment/json/v1"
)

// StringMap decodes as encoding/json decodes a map of strings: the same
// inputs accepted, the same maps made.
func FuzzStringMapDecodesAsEncodingJSON(f *testing.F) {
	for _, seed := range []string{`{"DISTRI":"testos","TEST":"demo"}`, `null`, `{}`, `{"a":null}`, `{"a":1}`,
		`{"a":"x","a":"y"}`, `{"\u00e9":"\ud800"}`, "{\"a\":\"\xff\"}", `[]`, `"s"`, `{"a":{"b":"c"}}`, `{"a":"b",}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var want map[string]string
		wantErr := json.Unmarshal(data, &want)
		var got StringMap
		gotErr := jsonv1.Unmarshal(data, &got)
		if (wantErr == nil) != (gotErr == nil) {
			t.Fatalf("%q: encoding/json says %v, StringMap %v", data, wantErr, gotErr)
		}
		if wantErr == nil && ((want == nil) != (got == nil) || !maps.Equal(want, got)) {
			t.Fatalf("%q: encoding/json reads %#v, StringMap %#v", data, want, got)
		}
	})
}

// Decoding into a map that is there adds to it, as encoding/json does.
func TestStringMapAddsToAMapThatIsThere(t *testing.T) {
	m := StringMap{"KEEP": "1", "OVER": "old"}
	if err := jsonv1.Unmarshal([]byte(`{"OVER":"new","NEW":"2"}`), &m); err != nil {
		t.Fatal(err)
	}
	if want := (StringMap{"KEEP": "1", "OVER": "new", "NEW": "2"}); !maps.Equal(m, want) {
		t.Errorf("got %v, want %v", m, want)
	}
}

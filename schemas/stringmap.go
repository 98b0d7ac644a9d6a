package schemas

import (
	"errors"
	"reflect"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// StringMap is a JSON object of strings, as job settings and result files
// are. It decodes into a map made at the object's size: growing it entry
// by entry was a fifth of decoding a job's first events, and the read
// model's rebuild decodes hundreds of thousands.
type StringMap map[string]string

// UnmarshalJSONFrom decodes an object of strings as encoding/json would:
// null leaves no map, a null value is empty, another value that is no
// string is an error, a name given twice keeps its last value, and the
// entries are added to a map that is there.
func (m *StringMap) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	tok, err := dec.ReadToken()
	if err != nil {
		return err
	}
	switch tok.Kind() {
	case 'n':
		*m = nil
		return nil
	case '{':
	default:
		return &jsonv2.SemanticError{JSONKind: tok.Kind(), GoType: reflect.TypeFor[StringMap](), Err: errors.New("want an object of strings")}
	}
	// Every name and value is unquoted into one buffer and becomes one
	// string the map's entries are slices of: one allocation, not two per
	// entry.
	var text [2048]byte
	var cuts [64]int
	all, ends := text[:0], cuts[:0]
	for dec.PeekKind() != '}' {
		for range 2 {
			v, err := dec.ReadValue()
			if err != nil {
				return err
			}
			switch v.Kind() {
			case 'n': // an empty value, as encoding/json stores it
			case '"':
				// The decoder checked the literal: an error here is
				// invalid UTF-8 replaced, which encoding/json accepts too.
				all, _ = jsontext.AppendUnquote(all, v)
			default:
				return &jsonv2.SemanticError{JSONKind: v.Kind(), GoType: reflect.TypeFor[string](), Err: errors.New("want a string")}
			}
			ends = append(ends, len(all))
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return err
	}
	strs := string(all)
	out := *m
	if out == nil {
		out = make(StringMap, len(ends)/2)
	}
	start := 0
	for i := 0; i < len(ends); i += 2 {
		out[strs[start:ends[i]]] = strs[ends[i]:ends[i+1]]
		start = ends[i+1]
	}
	*m = out
	return nil
}

package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// This file reads JSON the way os-autoinst's needle.pm sees it: decoded by
// Cpanel::JSON::XS (through Mojo::JSON), then used as Perl values, so that
// a needle file means to jetqa what it means to openQA.

// maxJSONDepth is Cpanel::JSON::XS's default max_depth: deeper nesting is
// a decoding error.
const maxJSONDepth = 512

var utf8BOM = []byte("\xef\xbb\xbf")

// checkJSONText refuses what Cpanel::JSON::XS refuses in syntactically
// valid JSON and encoding/json lets through: bytes that are not UTF-8
// (Cpanel::JSON::XS allows surrogate code points encoded in UTF-8,
// though), a \u escape of half a surrogate pair, and nesting deeper than
// maxJSONDepth.
func checkJSONText(data []byte) error {
	depth := 0
	for i := 0; i < len(data); i++ {
		switch c := data[i]; {
		case c == '[' || c == '{':
			if depth++; depth > maxJSONDepth {
				return fmt.Errorf("nested deeper than %d levels", maxJSONDepth)
			}
		case c == ']' || c == '}':
			depth--
		case c == '"':
			end, err := checkJSONString(data, i+1)
			if err != nil {
				return err
			}
			i = end
		}
	}
	return nil
}

// checkJSONString checks the string that starts at data[i], after its
// opening quote, and returns the index of its closing quote.
func checkJSONString(data []byte, i int) (int, error) {
	for i < len(data) {
		c := data[i]
		switch {
		case c == '"':
			return i, nil
		case c == '\\' && i+1 < len(data) && data[i+1] == 'u':
			r, ok := hexRune(data, i+2)
			switch {
			case !ok:
				i += 2
			case r >= 0xd800 && r < 0xdc00:
				low, ok := rune(0), i+11 < len(data) && data[i+6] == '\\' && data[i+7] == 'u'
				if ok {
					low, ok = hexRune(data, i+8)
				}
				if !ok || low < 0xdc00 || low >= 0xe000 {
					return 0, fmt.Errorf("a string has \\u%04x without the second half of its surrogate pair", r)
				}
				i += 12
			case r >= 0xdc00 && r < 0xe000:
				return 0, fmt.Errorf("a string has \\u%04x without the first half of its surrogate pair", r)
			default:
				i += 6
			}
		case c == '\\':
			i += 2
		case c < utf8.RuneSelf:
			i++
		default:
			r, size := utf8.DecodeRune(data[i:])
			// UTF-8 for a surrogate (ED A0..BF xx) is invalid to Go
			// but not to Cpanel::JSON::XS.
			if r == utf8.RuneError && size == 1 && !(c == 0xed && i+2 < len(data) &&
				data[i+1] >= 0xa0 && data[i+1] <= 0xbf && data[i+2]&0xc0 == 0x80) {
				return 0, fmt.Errorf("a string has a byte 0x%02x that is not UTF-8", c)
			}
			if r == utf8.RuneError && size == 1 {
				size = 3
			}
			i += size
		}
	}
	return 0, errors.New("unterminated string")
}

func hexRune(data []byte, i int) (rune, bool) {
	if i+4 > len(data) {
		return 0, false
	}
	v, err := strconv.ParseUint(string(data[i:i+4]), 16, 32)
	return rune(v), err == nil
}

// jsonKind is the kind of a JSON value: 'n' for null or missing, 't' and
// 'f' for true and false, '0' for a number, '"' for a string, '[' and '{'.
func jsonKind(raw json.RawMessage) byte {
	if len(raw) == 0 {
		return 'n'
	}
	switch c := raw[0]; c {
	case 'n', 't', 'f', '"', '[', '{':
		return c
	}
	return '0'
}

// jsonString is the string a JSON string value holds.
func jsonString(raw json.RawMessage) string {
	var s string
	_ = json.Unmarshal(raw, &s) // raw is a JSON string: it decodes
	return s
}

// jsonNumber is the value of a JSON number as Cpanel::JSON::XS decodes it:
// beyond float64, ±Inf.
func jsonNumber(raw json.RawMessage) float64 {
	f, _ := strconv.ParseFloat(string(raw), 64) // ErrRange leaves ±Inf or 0
	return f
}

// perlTrue is Perl's truth of a decoded JSON value, which os-autoinst's
// `||` defaults test: null, false, a number equal to 0, "" and "0" are
// false; everything else is true, "0.0", "00" and [] too.
func perlTrue(raw json.RawMessage) bool {
	switch jsonKind(raw) {
	case 'n', 'f':
		return false
	case '0':
		return jsonNumber(raw) != 0
	case '"':
		s := jsonString(raw)
		return s != "" && s != "0"
	}
	return true
}

// errNotANumber is perlNumber's error for a list, an object or a boolean
// where a number belongs.
var errNotANumber = errors.New("not a number")

// perlNumber is a JSON value as Perl reads it as a number: a number as it
// is, a string as Perl numifies strings (perlNumify), true as 1. clean is
// false where Perl would warn that the string "isn't numeric". A list or
// an object is errNotANumber: Perl would read its memory address, a
// number that means nothing; false and null are never asked for, being
// false.
func perlNumber(raw json.RawMessage) (f float64, clean bool, err error) {
	switch jsonKind(raw) {
	case '0':
		return jsonNumber(raw), true, nil
	case '"':
		f, clean := perlNumify(jsonString(raw))
		return f, clean, nil
	case 't':
		return 1, true, nil
	case 'n', 'f':
		return 0, true, nil
	}
	return 0, false, errNotANumber
}

// perlSpace is what Perl skips around a number in a string.
const perlSpace = " \t\n\r\f\v"

// perlNumify is Perl's number for a string: leading and trailing white
// space is skipped; then an optional sign and a decimal number with an
// optional exponent, or "inf", "infinity" or "nan" in any case; a prefix
// like that of a longer string counts (clean false), and no such prefix
// is 0 (clean false, except for "0 but true"). "0x10" is 0, "1_000" is 1.
func perlNumify(s string) (f float64, clean bool) {
	if s == "0 but true" {
		return 0, true
	}
	t := strings.TrimLeft(s, perlSpace)
	i := 0
	if i < len(t) && (t[i] == '+' || t[i] == '-') {
		i++
	}
	if word := strings.ToLower(t[i:]); strings.HasPrefix(word, "inf") || strings.HasPrefix(word, "nan") {
		n := 3
		if strings.HasPrefix(word, "infinity") {
			n = 8
		}
		f = math.Inf(1)
		if word[0] == 'n' {
			f = math.NaN()
		} else if t[0] == '-' {
			f = math.Inf(-1)
		}
		return f, strings.Trim(t[i+n:], perlSpace) == ""
	}
	digits := func() int {
		start := i
		for i < len(t) && t[i] >= '0' && t[i] <= '9' {
			i++
		}
		return i - start
	}
	mantissa := digits()
	if i < len(t) && t[i] == '.' {
		i++
		mantissa += digits()
	}
	if mantissa == 0 {
		return 0, false
	}
	if i < len(t) && (t[i] == 'e' || t[i] == 'E') {
		j := i
		i++
		if i < len(t) && (t[i] == '+' || t[i] == '-') {
			i++
		}
		if digits() == 0 {
			i = j // "1e" is 1 followed by garbage
		}
	}
	f, _ = strconv.ParseFloat(t[:i], 64) // a valid float; ErrRange gives ±Inf or 0
	return f, strings.Trim(t[i:], perlSpace) == ""
}

// perlIV is the integer Perl passes to C for a number (SvIV): truncated
// toward zero, NaN as 0, and beyond the int64 range wrapped the way Perl
// casts, through uint64 and then to -1. The C code's arithmetic then
// decides what such numbers do.
func perlIV(f float64) int64 {
	switch {
	case f != f:
		return 0
	case f < 1<<63:
		if f < -1<<63 {
			return math.MinInt64
		}
		return int64(f)
	case f < 1<<64:
		return int64(uint64(f))
	}
	return -1
}

// perlString is how Perl writes a JSON number or string it compares with
// `eq`, e.g. a tag or a property name: ok is false for other values.
func perlString(raw json.RawMessage) (s string, ok bool) {
	switch jsonKind(raw) {
	case '"':
		return jsonString(raw), true
	case '0':
		lit := string(raw)
		if !strings.ContainsAny(lit, ".eE") { // an integer keeps its digits
			if lit == "-0" {
				lit = "0"
			}
			return lit, true
		}
		f := jsonNumber(raw)
		switch {
		case math.IsInf(f, 1):
			return "Inf", true
		case math.IsInf(f, -1):
			return "-Inf", true
		case f == 0:
			return "0", true
		}
		return strconv.FormatFloat(f, 'g', 15, 64), true // Perl's %.15g
	}
	return "", false
}

// describeJSON is a JSON value for a message, shortened.
func describeJSON(raw json.RawMessage) string {
	s := string(bytes.TrimSpace(raw))
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return s
}

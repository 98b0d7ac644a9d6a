package boot

import (
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzPerlPattern compiles wait_serial patterns and matches them against
// serial output, both from anywhere: it never panics, and a match is a
// range of the output that, matched again on its own place, is found.
func FuzzPerlPattern(f *testing.F) {
	for _, seed := range []struct{ re, out string }{
		{`(?^i:login:\s*$)`, "testos login: "},
		{`(?<=echo )(\w+)\1`, "echo hihi\n"},
		{`(?^:foo(?!bar))`, "foobaz"},
		{`\d+-\d+`, "\xff\xfe12-34\x00"},
		{`(a+)+$`, "aaaaaaaaaaaaaaaaaaaaaaaaaaaa!"},
		{`ä.ö`, "xäüö"},
	} {
		f.Add(seed.re, seed.out, false)
	}
	f.Add("hello", "say hello", true)
	// A pattern that backtracks without end gives up within the timeout
	// (os-autoinst's tests can write one), here shortened for speed.
	defer func(was time.Duration) { perlMatchTimeout = was }(perlMatchTimeout)
	perlMatchTimeout = 50 * time.Millisecond
	f.Fuzz(func(t *testing.T, source, output string, plain bool) {
		p, err := compilePerl(source, plain)
		if err != nil {
			return
		}
		loc := p.FindIndex([]byte(output))
		if loc == nil {
			return
		}
		if len(loc) != 2 || loc[0] < 0 || loc[0] > loc[1] || loc[1] > len(output) {
			t.Fatalf("pattern %q on %q: match at %v, outside the output of %d bytes", source, output, loc, len(output))
		}
		if utf8.ValidString(output) && (!utf8.ValidString(output[loc[0]:]) || !utf8.ValidString(output[:loc[1]])) {
			t.Fatalf("pattern %q on %q: match at %v splits a character", source, output, loc)
		}
	})
}

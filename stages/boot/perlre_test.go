package boot

import "testing"

// Patterns as os-autoinst's test side sends them: stringified qr// with
// Perl's flags, lookarounds and backreferences.
func TestPerlPatterns(t *testing.T) {
	for _, c := range []struct {
		pattern, text, match string
		plain                bool
	}{
		{pattern: `(?^:SCRIPT_FINISHED-\d+-)`, text: "x\nSCRIPT_FINISHED-0-\n", match: "SCRIPT_FINISHED-0-"},
		{pattern: `(?^i:welcome)`, text: "Welcome to testos", match: "Welcome"},
		{pattern: `(?^u:(?<=id=)\d+)`, text: "id=42 x", match: "42"},
		{pattern: `(?^:(\w)\1)`, text: "abccd", match: "cc"},
		{pattern: `(?^:foo(?!bar))`, text: "foobar foobaz", match: "foo"},
		{pattern: `(?^i:a(?^:b))`, text: "AB Ab", match: "Ab"},
		{pattern: `(?^s:a.b)`, text: "a\nb", match: "a\nb"},
		{pattern: `a.b`, text: "a\nb", match: ""},
		{pattern: `$x (?^:`, text: "it costs $x (?^:", match: "$x (?^:", plain: true},
		{pattern: `(?^:ü+)`, text: "grüüße", match: "üü"},
	} {
		p, err := compilePerl(c.pattern, c.plain)
		if err != nil {
			t.Fatalf("%s: %v", c.pattern, err)
		}
		got := ""
		if loc := p.FindIndex([]byte(c.text)); loc != nil {
			got = c.text[loc[0]:loc[1]]
		}
		if got != c.match {
			t.Errorf("%s on %q: matched %q, want %q", c.pattern, c.text, got, c.match)
		}
	}
	if _, err := compilePerl(`(?^:a(b)`, false); err == nil {
		t.Error("an unbalanced pattern compiled")
	}
}

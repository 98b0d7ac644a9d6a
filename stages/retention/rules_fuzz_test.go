package retention

import "testing"

// FuzzParseRules reads --retention policies from anywhere: it never
// panics, and a policy it takes keeps nothing for a negative time (which
// would delete at once what it names).
func FuzzParseRules(f *testing.F) {
	for _, seed := range []string{
		"screenshots:failed=90d,screenshots=30d,logs=180d,events=365d",
		"video=36h", "logs:passed=0d", "events=9223372036854775807d", "other=-1h", "screenshots=1e9h",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rules, err := ParseRules(s)
		if err != nil {
			return
		}
		for _, r := range rules {
			if r.Keep < 0 {
				t.Fatalf("%q: %s kept for %v", s, r.Kind, r.Keep)
			}
		}
	})
}

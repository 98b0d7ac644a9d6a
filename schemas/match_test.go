package schemas

import (
	"reflect"
	"testing"
)

func TestMergeMatchParts(t *testing.T) {
	c := func(name string, ok bool, err float64, workaround bool) CandidateMatch {
		return CandidateMatch{Needle: name, OK: ok, Error: err, Workaround: workaround}
	}
	part := func(i, n int, matcher string, cands ...CandidateMatch) MatchResolved {
		r := MatchResolved{ID: "r", Matcher: matcher, Candidates: cands, Part: &MatchPart{Index: i, Count: n, Candidates: 3}, Micros: int64(100 * (i + 1))}
		if len(cands) > 0 {
			r.Best, r.Matched = &cands[0], cands[0].OK
		}
		return r
	}
	tests := []struct {
		name  string
		parts []MatchResolved
		want  []string // candidate names, best first
		match bool
		err   string
	}{
		{"the match of the second part wins over the first part's closest",
			[]MatchResolved{part(0, 2, "m1", c("a", false, 0.01, false)), part(1, 2, "m2", c("b", true, 0.002, false), c("c", false, 0.5, false))},
			[]string{"b", "a", "c"}, true, ""},
		{"equal errors: the workaround needle, then by name",
			[]MatchResolved{part(0, 2, "m1", c("z", true, 0, false), c("y", true, 0, false)), part(1, 2, "m2", c("x", true, 0, true))},
			[]string{"x", "y", "z"}, true, ""},
		{"only the best few are kept",
			[]MatchResolved{part(0, 2, "m1", c("a", false, 0.1, false), c("b", false, 0.2, false)), part(1, 2, "m2", c("c", false, 0.05, false), c("d", false, 0.3, false))},
			[]string{"c", "a", "b"}, false, ""},
		{"an error in a part is the answer's error",
			[]MatchResolved{part(0, 2, "m1", c("a", true, 0, false)), {ID: "r", Matcher: "m2", Micros: 200, Error: "needle ghost: not found", Part: &MatchPart{Index: 1, Count: 2, Candidates: 3}}},
			[]string{"a"}, false, "needle ghost: not found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := MergeMatchParts(tt.parts, 3)
			var names []string
			for _, c := range got.Candidates {
				names = append(names, c.Needle)
			}
			if !reflect.DeepEqual(names, tt.want) || got.Matched != tt.match || got.Error != tt.err || got.ID != "r" {
				t.Fatalf("merged %+v: candidates %v, matched %v, error %q", got, names, got.Matched, got.Error)
			}
			if got.Best == nil || got.Best.Needle != tt.want[0] {
				t.Errorf("best %+v, want %s", got.Best, tt.want[0])
			}
			if got.Matcher != "m1,m2" || got.Micros != 200 {
				t.Errorf("matcher %q micros %d", got.Matcher, got.Micros)
			}
		})
	}
}

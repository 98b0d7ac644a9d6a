package boot

import (
	"testing"

	"jetqa/schemas"
)

// TestSplitAnswersAreMergedOnceComplete: the answers to a split request's
// parts may come in any order, and a part may come twice; the request is
// answered once, when every part is in.
func TestSplitAnswersAreMergedOnceComplete(t *testing.T) {
	m := &remoteMatcher{waiting: map[string]*pendingMatch{}}
	ch := make(chan schemas.MatchResolved, 2)
	m.waiting["r"] = &pendingMatch{answer: ch, parts: map[int]schemas.MatchResolved{}}
	part := func(i int, name string, ok bool) schemas.MatchResolved {
		c := schemas.CandidateMatch{Needle: name, OK: ok}
		return schemas.MatchResolved{ID: "r", Matcher: name, Best: &c, Candidates: []schemas.CandidateMatch{c}, Part: &schemas.MatchPart{Index: i, Count: 3, Candidates: 5}}
	}
	m.answered(part(2, "c", false))
	m.answered(part(0, "a", false))
	m.answered(part(2, "c", false))
	m.answered(schemas.MatchResolved{ID: "other"})
	select {
	case res := <-ch:
		t.Fatalf("answered before every part came: %+v", res)
	default:
	}
	m.answered(part(1, "b", true))
	res := <-ch
	if !res.Matched || res.Best.Needle != "b" || len(res.Candidates) != 3 {
		t.Errorf("merged answer %+v", res)
	}
	if len(m.waiting) != 0 {
		t.Errorf("still waiting: %v", m.waiting)
	}
}

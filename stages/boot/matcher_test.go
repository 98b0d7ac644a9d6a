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
	m.waiting["r"] = &pendingMatch{answer: ch, parts: map[int]map[int]schemas.MatchResolved{}}
	partOf := func(count, i int, name string, ok bool) schemas.MatchResolved {
		c := schemas.CandidateMatch{Needle: name, OK: ok}
		return schemas.MatchResolved{ID: "r", Matcher: name, Best: &c, Candidates: []schemas.CandidateMatch{c}, Part: &schemas.MatchPart{Index: i, Count: count, Candidates: 5}}
	}
	part := func(i int, name string, ok bool) schemas.MatchResolved { return partOf(3, i, name, ok) }
	m.answered(part(2, "c", false))
	m.answered(part(0, "a", false))
	m.answered(part(2, "c", false))
	// A part of the same request cut in two by a retried split: its
	// index 1 is not the missing third of the cut in three.
	m.answered(partOf(2, 1, "x", true))
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

// A matcher that could not publish the parts of its split answers the
// request whole: that answer is final, and parts that come after it are
// dropped.
func TestWholeAnswerIsFinal(t *testing.T) {
	m := &remoteMatcher{waiting: map[string]*pendingMatch{}}
	ch := make(chan schemas.MatchResolved, 2)
	m.waiting["r"] = &pendingMatch{answer: ch, parts: map[int]map[int]schemas.MatchResolved{}}
	a := schemas.CandidateMatch{Needle: "a"}
	m.answered(schemas.MatchResolved{ID: "r", Best: &a, Candidates: []schemas.CandidateMatch{a}, Part: &schemas.MatchPart{Index: 1, Count: 2, Candidates: 5}})
	whole := schemas.MatchResolved{ID: "r", Matched: true, Candidates: []schemas.CandidateMatch{{Needle: "b", OK: true}}}
	m.answered(whole)
	m.answered(schemas.MatchResolved{ID: "r", Best: &a, Candidates: []schemas.CandidateMatch{a}, Part: &schemas.MatchPart{Index: 0, Count: 2, Candidates: 5}})
	if res := <-ch; !res.Matched || res.Part != nil || res.Candidates[0].Needle != "b" {
		t.Errorf("answer %+v, want the whole one", res)
	}
	select {
	case res := <-ch:
		t.Errorf("answered again: %+v", res)
	default:
	}
}

package schemas

import (
	"cmp"
	"slices"
	"strings"
)

// NeedleRef names a needle by the content hash of its JSON and PNG, so a
// matcher fetches and prepares each needle once, whatever job uses it.
type NeedleRef struct {
	Name string `json:"name"`
	Hash string `json:"hash"` // sha256 of the JSON bytes followed by the PNG bytes
}

// MatchRequested asks the matcher pool to look for needles on a screen.
type MatchRequested struct {
	ID      string      `json:"id"`
	ReplyTo WorkerRef   `json:"reply_to"`
	Tags    []string    `json:"tags"`
	Screen  []byte      `json:"screen"` // PNG
	Needles []NeedleRef `json:"needles"`
	// NeedlesCommit is the commit of the needle repository the needles
	// were taken from, for the record: the hashes decide what is matched.
	NeedlesCommit string  `json:"needles_commit,omitempty"`
	Threshold     float64 `json:"threshold"`
	Ratio         float64 `json:"ratio"` // search window: 0.02 near the area, 1 the whole screen
	// Part is set on the parts of a request that a matcher split across
	// the pool; each part keeps the request's ID and is answered on its own.
	Part *MatchPart `json:"part,omitempty"`
}

// MatchPart numbers one part of a split match request. The requester
// merges the Count answers with MergeMatchParts.
type MatchPart struct {
	Index int `json:"index"`
	Count int `json:"count"`
	// Candidates is how many candidates the merged answer keeps.
	Candidates int `json:"candidates"`
}

func (MatchRequested) Kind() string { return "match.requested.v1" }

// AreaMatch is where and how well one needle area was found.
type AreaMatch struct {
	X          int     `json:"x"`
	Y          int     `json:"y"`
	Width      int     `json:"w"`
	Height     int     `json:"h"`
	Similarity float64 `json:"similarity"`
	OK         bool    `json:"ok"`
}

// CandidateMatch is one needle's result on a screen.
type CandidateMatch struct {
	Needle string `json:"needle"`
	// Hash is the needle's content hash, as Step.NeedleHash; set in a
	// job's results, not by the matchers.
	Hash  string      `json:"hash,omitempty"`
	OK    bool        `json:"ok"`
	Error float64     `json:"error"`
	Areas []AreaMatch `json:"areas"`
	// Workaround is the needle's "workaround" property: it wins ties, and
	// the test counts its match as a soft failure.
	Workaround bool `json:"workaround,omitempty"`
}

// CompareCandidates orders candidates the way os-autoinst ranks them:
// matching before not matching, then by error, then needles with the
// workaround property, then by name.
func CompareCandidates(a, b CandidateMatch) int {
	switch {
	case a.OK != b.OK:
		if a.OK {
			return -1
		}
		return 1
	case a.Error != b.Error:
		return cmp.Compare(a.Error, b.Error)
	case a.Workaround != b.Workaround:
		if a.Workaround {
			return -1
		}
		return 1
	}
	return cmp.Compare(a.Needle, b.Needle)
}

// MatchResolved answers a MatchRequested.
type MatchResolved struct {
	ID      string `json:"id"`
	Matched bool   `json:"matched"`
	// Best is the winning needle when Matched, else the closest candidate:
	// the first of Candidates.
	Best *CandidateMatch `json:"best,omitempty"`
	// Candidates are the best few results, best first.
	Candidates []CandidateMatch `json:"candidates,omitempty"`
	// Error is set when the request could not be evaluated at all (a
	// needle that cannot be loaded, a screen that is not a PNG).
	Error   string `json:"error,omitempty"`
	Matcher string `json:"matcher"`
	Micros  int64  `json:"micros"` // time spent matching
	// Part is the part of a split request this answers, as in its request.
	Part *MatchPart `json:"part,omitempty"`
}

func (MatchResolved) Kind() string { return "match.resolved.v1" }

// MergeMatchParts combines the answers to the parts of one split request
// into the answer the whole request would have had, keeping at most keep
// candidates. An error in any part is the merged answer's error. Matcher
// lists the matchers that took part; Micros is the longest part's time.
func MergeMatchParts(parts []MatchResolved, keep int) MatchResolved {
	var out MatchResolved
	var matchers []string
	for _, p := range parts {
		out.ID = p.ID
		if p.Error != "" && out.Error == "" {
			out.Error = p.Error
		}
		out.Candidates = append(out.Candidates, p.Candidates...) // a part's best is its first candidate
		if !slices.Contains(matchers, p.Matcher) {
			matchers = append(matchers, p.Matcher)
		}
		out.Micros = max(out.Micros, p.Micros)
	}
	slices.SortStableFunc(out.Candidates, CompareCandidates)
	if len(out.Candidates) > keep {
		out.Candidates = out.Candidates[:keep]
	}
	if len(out.Candidates) > 0 {
		best := out.Candidates[0]
		out.Best, out.Matched = &best, best.OK
	}
	if out.Error != "" {
		out.Matched = false
	}
	out.Matcher = strings.Join(matchers, ",")
	return out
}

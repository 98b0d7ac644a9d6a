package schemas

// NeedleRef names a needle by the content hash of its JSON and PNG, so a
// matcher fetches and prepares each needle once, whatever job uses it.
type NeedleRef struct {
	Name string `json:"name"`
	Hash string `json:"hash"` // sha256 of the JSON bytes followed by the PNG bytes
}

// MatchRequested asks the matcher pool to look for needles on a screen.
type MatchRequested struct {
	ID        string      `json:"id"`
	ReplyTo   WorkerRef   `json:"reply_to"`
	Tags      []string    `json:"tags"`
	Screen    []byte      `json:"screen"` // PNG
	Needles   []NeedleRef `json:"needles"`
	Threshold float64     `json:"threshold"`
	Ratio     float64     `json:"ratio"` // search window: 0.02 near the area, 1 the whole screen
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
	Needle string      `json:"needle"`
	OK     bool        `json:"ok"`
	Error  float64     `json:"error"`
	Areas  []AreaMatch `json:"areas"`
}

// MatchResolved answers a MatchRequested.
type MatchResolved struct {
	ID      string `json:"id"`
	Matched bool   `json:"matched"`
	// Best is the winning needle when Matched, else the closest candidate.
	Best *CandidateMatch `json:"best,omitempty"`
	// Candidates are the best few results, best first.
	Candidates []CandidateMatch `json:"candidates,omitempty"`
	// Error is set when the request could not be evaluated at all (a
	// needle that cannot be loaded, a screen that is not a PNG).
	Error   string `json:"error,omitempty"`
	Matcher string `json:"matcher"`
	Micros  int64  `json:"micros"` // time spent matching
}

func (MatchResolved) Kind() string { return "match.resolved.v1" }

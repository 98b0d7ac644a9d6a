package retention

import (
	"fmt"
	"math"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"jetqa/schemas"
)

// File kinds a rule can name.
const (
	KindScreenshots = "screenshots"
	KindVideo       = "video"
	KindLogs        = "logs"
	KindOther       = "other"
	// KindEvents is the job itself: its events, its place in the lists,
	// and so every file it has left.
	KindEvents = "events"
)

var kinds = []string{KindScreenshots, KindVideo, KindLogs, KindOther, KindEvents}

// FileKind is the kind of a result file, by its name.
func FileKind(name string) string {
	switch ext := strings.ToLower(path.Ext(name)); {
	case ext == ".png" || ext == ".jpg" || ext == ".ppm":
		return KindScreenshots
	case ext == ".webm" || ext == ".ogv" || ext == ".mp4" || strings.HasPrefix(name, "video"):
		return KindVideo
	case ext == ".txt" || ext == ".log" || ext == ".json" || ext == ".xml" || ext == ".gz" || ext == ".xz":
		return KindLogs
	}
	return KindOther
}

// Rule keeps what it names for Keep after the job finished. An empty
// Result names every result.
type Rule struct {
	Kind   string
	Result string
	Keep   time.Duration
}

func (r Rule) String() string {
	s := r.Kind
	if r.Result != "" {
		s += ":" + r.Result
	}
	return s + "=" + formatDays(r.Keep)
}

// Rules are a retention policy. What no rule names is kept for good.
type Rules []Rule

// ParseRules reads a policy: comma-separated KIND[:RESULT]=AGE, where KIND
// is screenshots, video, logs, other or events, RESULT a job result, and
// AGE days (90d) or a Go duration (36h). For example
// "screenshots:failed=90d,screenshots=30d,logs=180d,events=365d".
func ParseRules(s string) (Rules, error) {
	var rules Rules
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		what, age, ok := strings.Cut(item, "=")
		if !ok {
			return nil, fmt.Errorf("retention rule %q: want KIND[:RESULT]=AGE, e.g. screenshots:passed=30d", item)
		}
		kind, result, _ := strings.Cut(what, ":")
		if !slices.Contains(kinds, kind) {
			return nil, fmt.Errorf("retention rule %q: kind %q is none of %s", item, kind, strings.Join(kinds, ", "))
		}
		if result != "" && !schemas.IsFinalResult(result) {
			return nil, fmt.Errorf("retention rule %q: %q is not a job result", item, result)
		}
		keep, err := parseAge(age)
		if err != nil {
			return nil, fmt.Errorf("retention rule %q: %w", item, err)
		}
		for _, r := range rules {
			if r.Kind == kind && r.Result == result {
				return nil, fmt.Errorf("retention rule %q: %s is set twice", item, what)
			}
		}
		rules = append(rules, Rule{Kind: kind, Result: result, Keep: keep})
	}
	return rules, nil
}

// maxDays is the longest age in days a time.Duration holds (292 years).
const maxDays = int(math.MaxInt64 / int64(24*time.Hour))

func parseAge(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > maxDays {
			return 0, fmt.Errorf("age %q: want a number of days up to %d, e.g. 30d", s, maxDays)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("age %q: want days (30d) or a duration (36h)", s)
	}
	return d, nil
}

func formatDays(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return strconv.Itoa(int(d/(24*time.Hour))) + "d"
	}
	return d.String()
}

// For is the rule for a file of kind of a job with result: the one naming
// both, else the kind's for every result.
func (rs Rules) For(kind, result string) (Rule, bool) {
	var general *Rule
	for i, r := range rs {
		if r.Kind != kind {
			continue
		}
		if r.Result == result {
			return r, true
		}
		if r.Result == "" {
			general = &rs[i]
		}
	}
	if general != nil {
		return *general, true
	}
	return Rule{}, false
}

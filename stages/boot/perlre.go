package boot

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/dlclark/regexp2/v2"
)

// perlPattern is a wait_serial pattern of an os-autoinst test: a Perl
// regular expression as the test side sends it (a qr// arrives as
// "(?^i:…)"), or a plain string with no_regex. Real tests use
// lookarounds and backreferences, which Go's regexp lacks, so it is
// matched by regexp2, a backtracking engine with Perl's syntax.
type perlPattern struct {
	source string
	re     *regexp2.Regexp // nil for a plain string
}

// perlMatchTimeout bounds one match, against a pattern that backtracks
// without end on a long serial log.
var perlMatchTimeout = 10 * time.Second

// perlFlagGroup is Perl's "(?^flags:", which stringified qr// begin with.
var perlFlagGroup = regexp.MustCompile(`\(\?\^([a-z]*)(:|\))`)

// compilePerl compiles a Perl regular expression.
func compilePerl(source string, plain bool) (*perlPattern, error) {
	if plain {
		return &perlPattern{source: source}, nil
	}
	// "(?^i:" resets every flag and sets i: regexp2 writes that
	// "(?i-msx:". Perl's character-set flags (u, a, l, d) and /p, /n have
	// no meaning here.
	expr := perlFlagGroup.ReplaceAllStringFunc(source, func(g string) string {
		m := perlFlagGroup.FindStringSubmatch(g)
		on, off := "", ""
		for _, f := range "imsx" {
			if strings.ContainsRune(m[1], f) {
				on += string(f)
			} else {
				off += string(f)
			}
		}
		return "(?" + on + "-" + off + m[2]
	})
	re, err := regexp2.Compile(expr, regexp2.None)
	if err != nil {
		return nil, fmt.Errorf("the Perl regular expression %q: %w", source, err)
	}
	re.MatchTimeout = perlMatchTimeout
	return &perlPattern{source: source, re: re}, nil
}

func (p *perlPattern) String() string { return p.source }

// FindIndex is the byte offsets of the first match in b, nil if none.
// A match that runs out of time counts as none.
func (p *perlPattern) FindIndex(b []byte) []int {
	if p.re == nil {
		if i := strings.Index(string(b), p.source); i >= 0 {
			return []int{i, i + len(p.source)}
		}
		return nil
	}
	loc, err := p.re.FindAllStringIndex(string(b), 1)
	if err != nil || len(loc) == 0 {
		return nil
	}
	return loc[0]
}

// anyPattern matches where the earliest of several patterns does, as
// wait_serial with a list of them.
type anyPattern []*perlPattern

func (ps anyPattern) String() string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.source
	}
	return strings.Join(s, " | ")
}

func (ps anyPattern) FindIndex(b []byte) []int {
	var best []int
	for _, p := range ps {
		if loc := p.FindIndex(b); loc != nil && (best == nil || loc[1] < best[1]) {
			best = loc
		}
	}
	return best
}

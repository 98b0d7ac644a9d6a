package boot

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"jetqa/schemas"
)

// RematchStep is one recorded screen match, decided again.
type RematchStep struct {
	Module     string   `json:"module"`
	Step       int      `json:"step"` // 1-based, in the module's details
	Call       string   `json:"call"`
	Tags       []string `json:"tags"`
	Screenshot string   `json:"screenshot"`
	Before     string   `json:"before"` // passed or failed
	BeforeBy   string   `json:"before_needle,omitempty"`
	After      string   `json:"after"`
	AfterBy    string   `json:"after_needle,omitempty"`
	Similarity float64  `json:"similarity"`
	// Error says why the step could not be matched again.
	Error string `json:"error,omitempty"`
}

// Changed says the decision is not the recorded one.
func (s RematchStep) Changed() bool { return s.Error == "" && s.Before != s.After }

// RematchReport is what a job's recorded matches say against other needles.
type RematchReport struct {
	Job    int64         `json:"job"`
	Result string        `json:"result"` // the job's recorded result
	Steps  []RematchStep `json:"steps"`
	// WouldPass: every assert that failed now matches, none that matched
	// now fails, and the job failed for nothing else.
	WouldPass bool `json:"would_pass"`
	// Why explains WouldPass, and what a re-match cannot know.
	Why []string `json:"why"`
}

// asserts says whether a testapi call fails its module when no needle
// matches: all but check_screen.
func asserts(call string) bool { return !strings.HasPrefix(call, "check_") }

// Rematch decides again, through the matcher pool, every screen match a
// job recorded (its match steps: the screen that matched, or the last one
// before the timeout) against the needles in needlesDir, without a VM.
// screen reads a screenshot of the job's results by name.
func Rematch(ctx context.Context, bus Bus, job int64, result string, modules []schemas.ModuleResult, needlesDir, needlesCommit string, screen func(ctx context.Context, name string) ([]byte, error)) (RematchReport, error) {
	report := RematchReport{Job: job, Result: result}
	needles, err := loadNeedles(needlesDir)
	if err != nil {
		return report, err
	}
	self := schemas.WorkerRef{Host: "replay-" + newID(), Instance: 1}
	matcher, err := startMatcher(ctx, bus, self, job, needlesCommit)
	if err != nil {
		return report, err
	}
	failedForOther := false
	for _, m := range modules {
		fixed, stillFails := false, false
		for i, st := range m.Details {
			if st.Kind != "match" {
				continue
			}
			rs := RematchStep{Module: m.Name, Step: i + 1, Call: st.Text, Tags: st.Tags, Screenshot: st.Screenshot, Before: st.Result, BeforeBy: st.Needle}
			rs.After, rs.AfterBy, rs.Similarity, rs.Error = rematchStep(ctx, bus, matcher, needles, st, screen)
			if rs.Error != "" {
				report.Why = append(report.Why, fmt.Sprintf("%s step %d: %s", m.Name, rs.Step, rs.Error))
			}
			report.Steps = append(report.Steps, rs)
			if !asserts(st.Text) {
				continue
			}
			switch {
			case rs.Error != "":
				failedForOther = true
			case rs.Before == schemas.ResultFailed && rs.After == schemas.ResultPassed:
				fixed = true
			case rs.After == schemas.ResultFailed:
				failedForOther, stillFails = true, true
				report.Why = append(report.Why, fmt.Sprintf("%s step %d: %s %s would fail", m.Name, rs.Step, rs.Call, strings.Join(rs.Tags, ",")))
			}
		}
		switch m.Result {
		case schemas.ResultPassed, schemas.ResultSoftfailed:
		case schemas.ResultFailed:
			if fixed {
				report.Why = append(report.Why, fmt.Sprintf("%s would get past its failed match; what it did after that was never run", m.Name))
			} else if !stillFails && !slices.Contains(m.Flags, "ignore_failure") {
				failedForOther = true
				report.Why = append(report.Why, fmt.Sprintf("%s failed for another reason than a screen match: %s", m.Name, m.Reason))
			}
		default:
			report.Why = append(report.Why, fmt.Sprintf("%s is %s: it never ran to a verdict", m.Name, m.Result))
		}
	}
	switch result {
	case schemas.ResultPassed, schemas.ResultSoftfailed, schemas.ResultFailed:
		report.WouldPass = !failedForOther
	default:
		report.Why = append(report.Why, fmt.Sprintf("the job ended %s, not on a screen match", result))
	}
	return report, nil
}

// rematchStep asks the pool about one recorded screen with the new
// needles carrying its tags.
func rematchStep(ctx context.Context, bus Bus, matcher *remoteMatcher, needles *needleSet, st schemas.Step, screen func(context.Context, string) ([]byte, error)) (after, by string, similarity float64, problem string) {
	if len(st.Tags) == 0 || st.Screenshot == "" {
		return "", "", 0, "the job did not record what it looked for (a job run before jetqa recorded match tags)"
	}
	png, err := screen(ctx, st.Screenshot)
	if err != nil {
		return "", "", 0, fmt.Sprintf("screenshot %s: %v", st.Screenshot, err)
	}
	candidates := needles.withTags(st.Tags)
	if len(candidates) == 0 {
		return schemas.ResultFailed, "", 0, ""
	}
	refs, err := needles.publish(ctx, bus, candidates)
	if err != nil {
		return "", "", 0, err.Error()
	}
	res, err := matcher.match(ctx, png, st.Tags, refs, 1)
	if err != nil {
		return "", "", 0, err.Error()
	}
	if res.Error != "" {
		return "", "", 0, "matcher: " + res.Error
	}
	after = schemas.ResultFailed
	if res.Matched {
		after = schemas.ResultPassed
	}
	if res.Best != nil {
		by, similarity = res.Best.Needle, 1
		for _, a := range res.Best.Areas {
			similarity = min(similarity, a.Similarity)
		}
	}
	return after, by, similarity, ""
}

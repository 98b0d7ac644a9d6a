package boot

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"jetqa/schemas"
)

// The test side writes a module's results as os-autoinst does, into
// testresults/: result-<module>.json with its details, and the
// screenshots and text files they name. They become the module's
// ModuleResult, and the files join the job's results under their names.

// resultsFile is a file of the test side's testresults/.
func (p *perlSide) resultsFile(name string) string {
	return filepath.Join(p.dir, "testresults", name)
}

// perlResult is os-autoinst's result-<module>.json.
type perlResult struct {
	Result  string         `json:"result"`
	Details []perlDetail   `json:"details"`
	Dents   perlNumber     `json:"dents"`
	Extra   map[string]any `json:"extra_test_results"`
}

// perlDetail is one of its details: a screenshot (with the needle that
// matched or the candidates that did not), or a text result.
type perlDetail struct {
	Result     string          `json:"result"`
	Screenshot string          `json:"screenshot"`
	Needle     string          `json:"needle"`
	Area       []perlArea      `json:"area"`
	Tags       []string        `json:"tags"`
	Needles    []perlCandidate `json:"needles"`
	Title      string          `json:"title"`
	Text       string          `json:"text"`
}

type perlArea struct {
	X, Y       int
	W, H       int
	Similarity perlNumber `json:"similarity"` // in percent
	Result     string     `json:"result"`
}

type perlCandidate struct {
	Name  string     `json:"name"`
	Area  []perlArea `json:"area"`
	Error perlNumber `json:"error"`
}

// perlResults maps os-autoinst's results onto jetqa's.
var perlResults = map[string]string{
	"ok": schemas.ResultPassed, "fail": schemas.ResultFailed, "softfail": schemas.ResultSoftfailed,
	"skip": schemas.ResultSkipped, "canceled": schemas.ResultIncomplete, "na": schemas.ResultPassed,
}

// perlTextLimit bounds a text result kept in the module's details; the
// whole file is among the job's results.
const perlTextLimit = 16 << 10

// readResult reads a module's result file and copies the files it names
// into the job's results.
func (pr *perlRun) readResult(name string) (schemas.ModuleResult, error) {
	mr := schemas.ModuleResult{Name: name, Result: schemas.ResultIncomplete, Flags: pr.flags(name)}
	data, err := os.ReadFile(pr.p.resultsFile("result-" + name + ".json"))
	if err != nil {
		return mr, fmt.Errorf("the test side wrote no result for %s: %w", name, err)
	}
	var res perlResult
	if err := json.Unmarshal(data, &res); err != nil {
		return mr, fmt.Errorf("result-%s.json of the test side: %w", name, err)
	}
	result, ok := perlResults[res.Result]
	if !ok {
		return mr, fmt.Errorf("result-%s.json of the test side: unknown result %q", name, res.Result)
	}
	mr.Result = result
	for _, d := range res.Details {
		step := pr.step(d)
		mr.Details = append(mr.Details, step)
		if _, text, _ := strings.Cut(step.Text, "\n"); step.Kind == "info" && d.Title == "Failed" && mr.Reason == "" {
			mr.Reason = strings.TrimSpace(strings.TrimPrefix(text, "# Test died: "))
		}
	}
	if mr.Result == schemas.ResultFailed && mr.Reason == "" {
		mr.Reason = pr.lastMiss
	}
	if mr.Result == schemas.ResultFailed && mr.Reason == "" {
		mr.Reason = "the module failed (see its details)"
	}
	return mr, nil
}

// stepResults are os-autoinst's detail results; "unk" (a screenshot for
// information, a check_screen that found nothing) has none.
var stepResults = map[string]string{"ok": schemas.ResultPassed, "fail": schemas.ResultFailed, "softfail": schemas.ResultSoftfailed}

func (pr *perlRun) step(d perlDetail) schemas.Step {
	step := schemas.Step{Kind: "screenshot", Result: stepResults[d.Result]}
	if d.Screenshot != "" {
		step.Screenshot = pr.copyResult(d.Screenshot, true)
	}
	switch {
	case d.Needle != "" || len(d.Tags) > 0:
		step.Kind, step.Needle, step.Tags = "match", d.Needle, d.Tags
		step.Areas = areaMatches(d.Area)
		if len(step.Areas) > 0 {
			step.Similarity = 1
			for _, a := range step.Areas {
				step.Similarity = min(step.Similarity, a.Similarity)
			}
		}
		for _, c := range d.Needles {
			step.Candidates = append(step.Candidates, schemas.CandidateMatch{Needle: c.Name, Error: float64(c.Error), Areas: areaMatches(c.Area)})
		}
		pr.r.needles.hashSteps(&step)
		if d.Needle != "" {
			step.Text = "assert_screen"
		} else {
			step.Text = "check_screen"
			if d.Result == "fail" {
				step.Text = "assert_screen"
			}
		}
	case d.Text != "":
		step.Kind = "info"
		if d.Title == "wait_serial" {
			step.Kind = "serial"
		}
		text := pr.copyResult(d.Text, false)
		content, _ := os.ReadFile(pr.p.resultsFile(d.Text))
		if len(content) > perlTextLimit {
			content = append(content[:perlTextLimit], fmt.Sprintf("\n[… the whole text is in %s]", text)...)
		}
		step.Text = strings.TrimSpace(d.Title + "\n" + string(content))
	}
	return step
}

func areaMatches(areas []perlArea) []schemas.AreaMatch {
	var out []schemas.AreaMatch
	for _, a := range areas {
		out = append(out, schemas.AreaMatch{X: a.X, Y: a.Y, Width: a.W, Height: a.H,
			Similarity: float64(a.Similarity) / 100, OK: a.Result == "ok"})
	}
	return out
}

// copyResult copies a file of testresults/ into the job's results, with
// its thumbnail for a screenshot, and gives its name there ("" if lost).
func (pr *perlRun) copyResult(name string, thumb bool) string {
	if strings.Contains(name, "/") || strings.HasPrefix(name, ".") {
		pr.r.log.Warn("the test side named a result file outside its results", "file", name)
		return ""
	}
	if err := copyFile(pr.p.resultsFile(name), filepath.Join(pr.r.resultsDir, name)); err != nil {
		pr.r.log.Warn("result file not kept", "file", name, "err", err)
		return ""
	}
	if thumb {
		// os-autoinst writes thumbnails beside them, as jetqa keeps them.
		if err := copyFile(pr.p.resultsFile(filepath.Join(schemas.ThumbsDir, name)), filepath.Join(pr.r.resultsDir, schemas.ThumbsDir, name)); err != nil {
			pr.r.log.Warn("no thumbnail", "screenshot", name, "err", err)
		}
	}
	return name
}

func copyFile(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return err
	}
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

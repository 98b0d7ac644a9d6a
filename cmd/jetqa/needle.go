package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	"jetqa/schemas"
	"jetqa/stages/match/needle"
)

const needleUsage = `usage:
  jetqa needle check [--json] DIR
      list every problem of the needles below DIR; exit status 1 when there is one
  jetqa needle match [flags] SCREEN.png DIR --tag T [--tag T2 ...]
      search the needles with any of the tags on a screenshot, as assert_screen does;
      exit status 0 when one matched, 1 when none did
Both exit with status 2 on a usage error or input they cannot read.`

// cmdNeedle lets a needle author check a needle directory and try needles
// on a screenshot without a running jetqa: the same reading and the same
// search a job does, so what passes here passes there.
func cmdNeedle(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "check":
			return needleCheck(args[1:], stdout, stderr)
		case "match":
			return needleMatch(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintln(stderr, needleUsage)
	return exitCode(2)
}

// badInput reports input the command cannot work with, exit status 2.
func badInput(stderr io.Writer, format string, args ...any) error {
	fmt.Fprintf(stderr, "jetqa needle: "+format+"\n", args...)
	return exitCode(2)
}

// parseInterspersed parses flags placed before, between and after the
// positional arguments (`match SCREEN DIR --tag T`), which flag.Parse
// alone stops at, and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return positional, nil
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// needleCheckReport is `jetqa needle check --json`.
type needleCheckReport struct {
	Dir      string          `json:"dir"`
	Needles  int             `json:"needles"` // JSON files found
	Usable   int             `json:"usable"`  // of them, needles a job can search for
	Problems []needleProblem `json:"problems"`
}

type needleProblem struct {
	File    string `json:"file"` // relative to dir
	Message string `json:"message"`
	Warning bool   `json:"warning,omitempty"`
}

// needleCheck reads the directory as a job does, then prepares every
// needle as the matcher does, so that a needle the matcher would refuse
// (a PNG whose header reads but whose pixels do not) is caught here too.
func needleCheck(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("needle check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, needleUsage); fs.PrintDefaults() }
	asJSON := fs.Bool("json", false, "print the report as JSON")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return badInput(stderr, "check wants one needle directory, got %d arguments", len(pos))
	}
	nd, err := schemas.ReadNeedleDir(pos[0])
	if err != nil {
		return badInput(stderr, "%v", err)
	}
	problems := nd.Problems
	usable := 0
	for _, n := range nd.Needles {
		p, problem := prepareNeedle(n)
		if problem != nil {
			problems = append(problems, *problem)
			continue
		}
		p.Close()
		usable++
	}
	sort.SliceStable(problems, func(a, b int) bool { return problems[a].File < problems[b].File })

	report := needleCheckReport{Dir: nd.Dir, Needles: nd.JSONs, Usable: usable, Problems: []needleProblem{}}
	errs, warnings := 0, 0
	for _, p := range problems {
		report.Problems = append(report.Problems, needleProblem{File: p.File, Message: p.Err.Error(), Warning: p.Warning})
		if p.Warning {
			warnings++
		} else {
			errs++
		}
	}
	if *asJSON {
		if err := printJSON(stdout, report); err != nil {
			return err
		}
	} else {
		for _, p := range report.Problems {
			if p.Warning {
				fmt.Fprintf(stdout, "%s: warning: %s\n", p.File, p.Message)
			} else {
				fmt.Fprintf(stdout, "%s: %s\n", p.File, p.Message)
			}
		}
		summary := fmt.Sprintf("%s, %s", plural(nd.JSONs, "needle"), plural(errs, "problem"))
		if warnings > 0 {
			summary += ", " + plural(warnings, "warning")
		}
		fmt.Fprintln(stdout, summary)
	}
	if errs > 0 {
		return exitCode(1)
	}
	return nil
}

// prepareNeedle reads a needle's PNG and prepares it for searching; a
// failure is a problem of the PNG, the JSON having been checked already.
func prepareNeedle(n schemas.NeedleFile) (*needle.Needle, *schemas.NeedleProblem) {
	pngFile := strings.TrimSuffix(n.File, ".json") + ".png"
	data, err := os.ReadFile(n.PNGPath)
	if err != nil {
		return nil, &schemas.NeedleProblem{File: pngFile, Err: err}
	}
	p, err := needle.Prepare(n.Needle, data)
	if err != nil {
		return nil, &schemas.NeedleProblem{File: pngFile, Err: err}
	}
	return p, nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// needleMatchReport is `jetqa needle match --json`.
type needleMatchReport struct {
	Screen     string           `json:"screen"`
	Width      int              `json:"width"`
	Height     int              `json:"height"`
	Tags       []string         `json:"tags"`
	Ratio      float64          `json:"ratio"`
	Threshold  float64          `json:"threshold"`
	Found      string           `json:"found"` // empty when no needle matched
	Candidates []matchCandidate `json:"candidates"`
	Millis     struct {
		Decode  float64 `json:"decode"` // the screen's PNG
		Prepare float64 `json:"prepare"`
		Search  float64 `json:"search"`
	} `json:"ms"`
}

type matchCandidate struct {
	Needle string      `json:"needle"`
	OK     bool        `json:"ok"`
	Error  float64     `json:"error"` // mean (1 − similarity)², 0 is perfect
	Areas  []matchArea `json:"areas"`
}

type matchArea struct {
	X          int     `json:"x"`
	Y          int     `json:"y"`
	Width      int     `json:"width"`
	Height     int     `json:"height"`
	NeedleX    int     `json:"needle_x"` // where the area is in the needle
	NeedleY    int     `json:"needle_y"`
	Similarity float64 `json:"similarity"`
	Level      float64 `json:"level"` // the similarity the area needs: match/100 − threshold
	OK         bool    `json:"ok"`
}

// needleMatch searches a screenshot for the needles with any of the tags,
// with assert_screen's ratio and threshold unless told otherwise.
func needleMatch(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("needle match", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, needleUsage); fs.PrintDefaults() }
	var tags []string
	fs.Func("tag", "search the needles with this tag (repeat for more: any of them)", func(v string) error {
		tags = append(tags, v)
		return nil
	})
	ratio := fs.Float64("ratio", 0.02, "how far to search around each area, from 0 (its margin) to 1 (the whole screen); assert_screen uses 0.02 and 1")
	threshold := fs.Float64("threshold", 0, "how much less similar than its match level an area may be and still pass")
	all := fs.Bool("all", false, "print every candidate, not only the best 5")
	asJSON := fs.Bool("json", false, "print the result as JSON, with every candidate")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 || len(tags) == 0 {
		fs.Usage()
		if len(pos) != 2 {
			return badInput(stderr, "match wants a screenshot and a needle directory, got %d arguments", len(pos))
		}
		return badInput(stderr, "match wants at least one --tag")
	}
	if !(*ratio >= 0) || math.IsInf(*ratio, 0) {
		return badInput(stderr, "--ratio %v: want 0 or more (assert_screen uses 0.02, and 1 for the whole screen)", *ratio)
	}
	if !(*threshold >= 0 && *threshold <= 1) {
		return badInput(stderr, "--threshold %v: want a number from 0 to 1", *threshold)
	}
	screenPath, dir := pos[0], pos[1]

	nd, err := schemas.ReadNeedleDir(dir)
	if err != nil {
		return badInput(stderr, "%v", err)
	}
	if errs := nd.Errors(); len(errs) > 0 {
		return badInput(stderr, "%s has %s, which would fail a job:\n%s\n(`jetqa needle check %s` lists every problem)",
			dir, plural(len(errs), "broken needle file"), problemLines(errs), dir)
	}
	specs := nd.WithTags(tags)
	if len(specs) == 0 {
		return badInput(stderr, "no needle in %s has the tag %s; %s", dir, strings.Join(tags, " or "), closeTags(nd, tags))
	}

	start := time.Now()
	data, err := os.ReadFile(screenPath)
	if err != nil {
		return badInput(stderr, "screen: %v", err)
	}
	screen, err := needle.DecodeScreen(data)
	if err != nil {
		return badInput(stderr, "screen %s: %v", screenPath, err)
	}
	defer screen.Close()
	decoded := time.Now()

	prepared := make([]*needle.Needle, 0, len(specs))
	defer func() {
		for _, p := range prepared {
			p.Close()
		}
	}()
	var broken []schemas.NeedleProblem
	for _, n := range specs {
		p, problem := prepareNeedle(n)
		if problem != nil {
			broken = append(broken, *problem)
			continue
		}
		prepared = append(prepared, p)
	}
	if len(broken) > 0 {
		return badInput(stderr, "the matcher refuses %s:\n%s", plural(len(broken), "needle"), problemLines(broken))
	}
	ready := time.Now()
	best, candidates := needle.Search(screen, prepared, *threshold, *ratio)
	searched := time.Now()

	byName := map[string]schemas.NeedleFile{}
	for _, n := range specs {
		byName[n.Name] = n
	}
	b := screen.Bounds()
	report := needleMatchReport{
		Screen: screenPath, Width: b.Dx(), Height: b.Dy(), Tags: tags, Ratio: *ratio, Threshold: *threshold,
	}
	report.Millis.Decode, report.Millis.Prepare, report.Millis.Search = millis(decoded.Sub(start)), millis(ready.Sub(decoded)), millis(searched.Sub(ready))
	if best != nil {
		report.Found = best.Needle
	}
	for _, c := range candidates {
		report.Candidates = append(report.Candidates, describeCandidate(c, byName[c.Needle].Needle, *threshold))
	}

	if *asJSON {
		if err := printJSON(stdout, report); err != nil {
			return err
		}
	} else {
		printMatch(stdout, report, *all)
	}
	if best == nil {
		return exitCode(1)
	}
	return nil
}

// describeCandidate pairs a search result with its needle's match areas,
// which the result lists in the same order.
func describeCandidate(c needle.Candidate, spec schemas.Needle, threshold float64) matchCandidate {
	mc := matchCandidate{Needle: c.Needle, OK: c.OK, Error: c.Error}
	var areas []schemas.NeedleArea
	for _, a := range spec.Areas {
		if a.Type == schemas.AreaTypeMatch {
			areas = append(areas, a)
		}
	}
	for i, r := range c.Areas {
		ma := matchArea{X: r.X, Y: r.Y, Width: r.Width, Height: r.Height, Similarity: r.Similarity, OK: r.OK}
		if i < len(areas) {
			ma.NeedleX, ma.NeedleY, ma.Level = areas[i].X, areas[i].Y, areas[i].Match/100-threshold
		}
		mc.Areas = append(mc.Areas, ma)
	}
	return mc
}

// printMatch writes the found needle, then the best of the others.
func printMatch(w io.Writer, r needleMatchReport, all bool) {
	fmt.Fprintf(w, "screen %s, %dx%d; %s with tag %s; ratio %v, threshold %v\n",
		r.Screen, r.Width, r.Height, plural(len(r.Candidates), "needle"), strings.Join(r.Tags, " or "), r.Ratio, r.Threshold)
	others, header := r.Candidates, "candidates, best first:"
	if r.Found != "" {
		fmt.Fprintf(w, "found %s\n", r.Found)
		printAreas(w, r.Candidates[0])
		others, header = others[1:], "other candidates, best first:"
	} else {
		fmt.Fprintln(w, "no match")
	}
	if len(others) > 0 {
		fmt.Fprintln(w, header)
	}
	for i, c := range others {
		if i == 5 && !all {
			fmt.Fprintf(w, "  … %d more (--all shows them)\n", len(others)-i)
			break
		}
		verdict := "failed"
		if c.OK {
			verdict = "matched too"
		}
		// os-autoinst's log shows a candidate as 1 − √error.
		fmt.Fprintf(w, "  %s: %s, %.2f%% overall\n", c.Needle, verdict, 100*(1-math.Sqrt(c.Error)))
		printAreas(w, c)
	}
	fmt.Fprintf(w, "decode %.1f ms, prepare %.1f ms, search %.1f ms\n", r.Millis.Decode, r.Millis.Prepare, r.Millis.Search)
}

func printAreas(w io.Writer, c matchCandidate) {
	for i, a := range c.Areas {
		verdict := "passed"
		if !a.OK {
			verdict = "FAILED"
		}
		moved := ""
		if a.X != a.NeedleX || a.Y != a.NeedleY {
			moved = fmt.Sprintf(" (in the needle at (%d,%d))", a.NeedleX, a.NeedleY)
		}
		fmt.Fprintf(w, "    area %d at (%d,%d) %dx%d%s: similarity %.2f%% (%v), level %.2f%%: %s\n",
			i+1, a.X, a.Y, a.Width, a.Height, moved, 100*a.Similarity, a.Similarity, 100*a.Level, verdict)
	}
}

func problemLines(problems []schemas.NeedleProblem) string {
	lines := make([]string, len(problems))
	for i, p := range problems {
		lines[i] = "  " + p.Error()
	}
	return strings.Join(lines, "\n")
}

func millis(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// closeTags helps with a tag no needle has: the tags that look like it
// (a typo, another case, a longer or shorter name), or how many needles
// and tags there are.
func closeTags(nd *schemas.NeedleDir, wanted []string) string {
	have := map[string]bool{}
	for _, n := range nd.Needles {
		for _, t := range n.Tags {
			have[t] = true
		}
	}
	var close []string
	for t := range have {
		for _, w := range wanted {
			lt, lw := strings.ToLower(t), strings.ToLower(w)
			if strings.Contains(lt, lw) || strings.Contains(lw, lt) || editDistance(lt, lw) <= 2 {
				close = append(close, t)
				break
			}
		}
	}
	if len(close) == 0 {
		return fmt.Sprintf("its %s carry %s, none close to it", plural(len(nd.Needles), "needle"), plural(len(have), "tag"))
	}
	sort.Strings(close)
	return "tags that look close: " + strings.Join(close, ", ")
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

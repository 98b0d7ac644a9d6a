package needle

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"jetqa/schemas"
)

// BenchmarkAgainstTinycv makes the same decisions with jetqa and with
// os-autoinst's tinycv (Debian's os-autoinst, driven by
// testdata/tinycv_bench.pl in one perl process) and reports whether they
// agree and how long each takes. Run it once: make bench, or
//
//	go test -run '^$' -bench AgainstTinycv -benchtime 1x ./stages/match/needle/
//
// A decision is one assert_screen check: read a screenshot PNG into a
// fresh image and search it for every needle of a tag, the needles loaded
// once beforehand as both keep them for a job. The decisions are the real
// testos screens with the testos needles (720x400), and synthetic
// 1024x768 desktops with tags of 1, 10 and 50 needles, a few of them on
// the screen; each at ratio 0.02 and at ratio 1 (assert_screen's near and
// whole-screen searches). tinycv runs with os-autoinst's OpenCV threads
// (tinycv::create_threads(): one less than the CPUs, at least one),
// jetqa with OpenCV's default.
//
// Metrics: agree-% of the decisions with the same verdicts (the same
// needle found, the same needles passing), max-dsim the largest
// difference of an area's similarity, pos-differ the areas found at other
// positions (pos-differ-passing those that pass, which must be 0); per ratio the mean time per decision of each and x-faster,
// tinycv's time over jetqa's (the goal is 3 or more).
func BenchmarkAgainstTinycv(b *testing.B) {
	if _, err := os.Stat("/usr/lib/os-autoinst/needle.pm"); err != nil {
		b.Skip("os-autoinst is not installed, nothing to compare with: bash deploy/install-deps.sh test")
	}
	HoldFreedMemory() // as the matcher pool does
	set := newDecisionSet(b)
	tinycv := startTinycv(b, set)
	jetqa := prepareJetqa(b, set)
	// Taking turns, both sides see the same load of the machine.
	jetqas, tinycvs := map[string]decided{}, map[string]decided{}
	for _, d := range set.Decisions {
		tinycvs[d.ID] = tinycv.next(b, d)
		jetqas[d.ID] = jetqa.decide(b, d)
	}
	report(b, set, jetqas, tinycvs)
}

// benchDecision is one needle search of the set, as tinycv_bench.pl reads it.
type benchDecision struct {
	ID        string   `json:"id"`
	Screen    string   `json:"screen"` // PNG file
	Needles   []string `json:"needles"`
	Threshold float64  `json:"threshold"`
	Ratio     float64  `json:"ratio"`
	Reps      int      `json:"reps"` // timed repetitions
	group     string   // what the report sums up
}

// decided is one decision's outcome on either side.
type decided struct {
	osAutoinstResult
	ID            string  `json:"id"`
	NsPerDecision float64 `json:"ns_per_decision"`
}

type decisionSet struct {
	NeedlesDir string          `json:"needles_dir"`
	Decisions  []benchDecision `json:"decisions"`
	needles    map[string]testNeedle
}

// Repetitions of each decision: near searches are quick, so they are
// repeated for steadier times.
const (
	repsNear  = 5
	repsWhole = 1
)

func newDecisionSet(b *testing.B) *decisionSet {
	dir := b.TempDir()
	set := &decisionSet{NeedlesDir: filepath.Join(dir, "needles"), needles: map[string]testNeedle{}}
	if err := os.Mkdir(set.NeedlesDir, 0o755); err != nil {
		b.Fatal(err)
	}
	write := func(path string, data []byte) {
		if err := os.WriteFile(path, data, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	addNeedle := func(tn testNeedle) {
		set.needles[tn.name] = tn
		write(filepath.Join(set.NeedlesDir, tn.name+".json"), tn.needleJSON())
		write(filepath.Join(set.NeedlesDir, tn.name+".png"), pngOf(b, tn.img))
	}
	add := func(group, screen, tag string, needles []string) {
		for _, ratio := range []float64{0.02, 1} {
			reps := repsNear
			if ratio == 1 {
				reps = repsWhole
			}
			set.Decisions = append(set.Decisions, benchDecision{
				ID:     fmt.Sprintf("%s %s ratio %v", filepath.Base(screen), tag, ratio),
				Screen: screen, Needles: needles, Ratio: ratio, Reps: reps, group: group,
			})
		}
	}

	// The testos demo: each real screen checked for each tag.
	tags := []string{"testos-shell", "hello-output", "graphical-desktop"}
	for _, tag := range tags {
		addNeedle(testosNeedle(b, tag))
	}
	screens, err := filepath.Glob("testdata/testos/*.png")
	if err != nil || len(screens) == 0 {
		b.Fatalf("no testos screens: %v", err)
	}
	for _, screen := range screens {
		abs, err := filepath.Abs(screen)
		if err != nil {
			b.Fatal(err)
		}
		for _, tag := range tags {
			add("testos 720x400", abs, tag, []string{tag})
		}
	}

	// Desktops: tags of 1, 10 and 50 needles.
	var names []string
	for i := range 50 {
		tn := desktopNeedle(i)
		addNeedle(tn)
		names = append(names, tn.name)
	}
	for _, s := range desktopScreens() {
		path := filepath.Join(dir, s.name+".png")
		write(path, pngOf(b, s.img))
		for _, n := range []int{1, 10, 50} {
			add(fmt.Sprintf("desktop 1024x768, %d needles", n), path, fmt.Sprintf("dialog-%d", n), names[:n])
		}
	}
	return set
}

// desktop is a 1024x768 desktop: wallpaper, icons, and a panel with a
// menu button, a task list and a clock drawn from clock.
func desktop(clock uint64) *image.RGBA {
	img := canvas(1024, 768, color.RGBA{36, 64, 108, 255})
	for i := range 5 {
		fill(img, image.Rect(24, 24+96*i, 72, 72+96*i), grey200)
		text(img, image.Pt(16, 76+96*i), uint64(20+i), 8, 1, grey200)
	}
	fill(img, image.Rect(0, 736, 1024, 768), grey60)
	fill(img, image.Rect(4, 740, 92, 764), amber)
	text(img, image.Pt(12, 744), 11, 10, 1, grey40)
	text(img, image.Pt(120, 744), 12, 40, 1, grey200)
	text(img, image.Pt(960, 744), clock, 7, 1, grey200)
	return img
}

// dialogAt is where desktop needle i has its dialog.
func dialogAt(i int) image.Point { return image.Pt(140+i*151%680, 40+i*97%600) }

// desktopNeedle i is a dialog of its own text at its own place, taken on
// a desktop with one clock, with areas of four kinds.
func desktopNeedle(i int) testNeedle {
	img := desktop(13)
	at := dialogAt(i)
	dialog(img, at, uint64(100+2*i), grey200)
	area := func(r image.Rectangle, extra string) string {
		return fmt.Sprintf(`{"xpos":%d,"ypos":%d,"width":%d,"height":%d%s}`, r.Min.X, r.Min.Y, r.Dx(), r.Dy(), extra)
	}
	body := image.Rect(0, 0, 200, 80).Add(at)
	var areas string
	switch i % 4 {
	case 0: // the dialog
		areas = area(body, "")
	case 1: // the dialog and the menu button
		areas = area(body, "") + "," + area(image.Rect(4, 740, 92, 764), "")
	case 2: // the dialog's first line and the panel without its clock
		areas = area(image.Rect(8, 12, 192, 28).Add(at), "") + "," + area(image.Rect(0, 736, 1024, 768), "") +
			"," + area(image.Rect(960, 740, 1024, 764), `,"type":"exclude"`)
	case 3: // the dialog, a lower level and a smaller margin
		areas = area(body, `,"match":90,"margin":20`)
	}
	return testNeedle{fmt.Sprintf("dialog-%02d", i), areas, img}
}

// desktopScreens show a few of the desktop needles' dialogs, others' places
// taken by dialogs of other text, one dialog moved, and the clock on
// another time.
func desktopScreens() []struct {
	name string
	img  image.Image
} {
	two := desktop(14)
	dialog(two, dialogAt(0), 100, grey200)
	dialog(two, dialogAt(7).Add(image.Pt(12, -9)), 114, grey200)
	dialog(two, dialogAt(23), 146, grey200)
	dialog(two, dialogAt(2), 999, grey200)

	brighter := desktop(15)
	dialog(brighter, dialogAt(4).Add(image.Pt(3, 3)), 108, grey200)
	dialog(brighter, dialogAt(31), 162, grey200)
	dialog(brighter, dialogAt(9), 998, grey200)

	return []struct {
		name string
		img  image.Image
	}{
		{"desktop-dialogs", two},
		{"desktop-brighter", brighten(brighter, constant(4))}, // MSE 16: similarity 0.963
	}
}

// tinycvProcess is testdata/tinycv_bench.pl making the set's decisions
// one by one, each when asked.
type tinycvProcess struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *bufio.Scanner
	stderr bytes.Buffer
}

func startTinycv(b *testing.B, set *decisionSet) *tinycvProcess {
	script, err := filepath.Abs("testdata/tinycv_bench.pl")
	if err != nil {
		b.Fatal(err)
	}
	input, err := json.Marshal(set)
	if err != nil {
		b.Fatal(err)
	}
	inputPath := filepath.Join(filepath.Dir(set.NeedlesDir), "decisions.json")
	if err := os.WriteFile(inputPath, input, 0o644); err != nil {
		b.Fatal(err)
	}
	p := &tinycvProcess{cmd: exec.Command("perl", script, inputPath)}
	p.cmd.Stderr = &p.stderr
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	p.out = bufio.NewScanner(stdout)
	p.out.Buffer(nil, 1<<24)
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		p.stdin.Close()
		p.cmd.Wait()
	})
	return p
}

// next makes decision d with os-autoinst.
func (p *tinycvProcess) next(b *testing.B, d benchDecision) decided {
	if _, err := io.WriteString(p.stdin, "\n"); err != nil {
		b.Fatalf("os-autoinst: %v\n%s", err, &p.stderr)
	}
	if !p.out.Scan() {
		b.Fatalf("os-autoinst stopped before %s: %v\n%s", d.ID, p.out.Err(), &p.stderr)
	}
	var r decided
	if err := json.Unmarshal(p.out.Bytes(), &r); err != nil {
		b.Fatalf("os-autoinst printed %q: %v", p.out.Text(), err)
	}
	if r.ID != d.ID {
		b.Fatalf("os-autoinst made decision %q, want %q", r.ID, d.ID)
	}
	return r
}

// jetqaDecider makes decisions with jetqa's API, timed as
// tinycv_bench.pl does: the needles prepared once, a fresh screen decoded
// from its PNG file for each repetition.
type jetqaDecider map[string]*Needle

func prepareJetqa(b *testing.B, set *decisionSet) jetqaDecider {
	prepared := jetqaDecider{}
	for name, tn := range set.needles {
		spec, err := schemas.ParseNeedle(name, tn.needleJSON())
		if err != nil {
			b.Fatal(err)
		}
		n, err := Prepare(spec, pngOf(b, tn.img))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(n.Close)
		prepared[name] = n
	}
	return prepared
}

func (prepared jetqaDecider) decide(b *testing.B, d benchDecision) decided {
	var needles []*Needle
	for _, name := range d.Needles {
		needles = append(needles, prepared[name])
	}
	search := func() (*Candidate, []Candidate) {
		data, err := os.ReadFile(d.Screen)
		if err != nil {
			b.Fatal(err)
		}
		s, err := DecodeScreen(data)
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		return Search(s, needles, d.Threshold, d.Ratio)
	}
	search() // as the untimed first search of tinycv_bench.pl
	var best *Candidate
	var all []Candidate
	start := time.Now()
	for range d.Reps {
		best, all = search()
	}
	elapsed := time.Since(start)

	r := decided{ID: d.ID, NsPerDecision: float64(elapsed.Nanoseconds()) / float64(d.Reps)}
	r.Best = bestName(best)
	for _, c := range all {
		w := osAutoinstCandidate{Needle: c.Needle, OK: c.OK, Error: c.Error}
		for _, a := range c.Areas {
			w.Areas = append(w.Areas, osAutoinstArea{X: a.X, Y: a.Y, Similarity: a.Similarity, OK: a.OK})
		}
		r.All = append(r.All, w)
	}
	return r
}

// sums adds up one group of decisions at one ratio.
type sums struct {
	decisions, needles, passing, found, agree int
	jetqa, tinycv                             float64 // ns, over the decisions
}

func (s *sums) add(o sums) {
	s.decisions += o.decisions
	s.needles += o.needles
	s.passing += o.passing
	s.found += o.found
	s.agree += o.agree
	s.jetqa += o.jetqa
	s.tinycv += o.tinycv
}

func (s sums) row(group string, ratio float64) string {
	ms := func(ns float64) float64 { return ns / float64(s.decisions) / 1e6 }
	return fmt.Sprintf("%-30s %5v %9d %8.1f %8d %6d %7.1f%% %9.2f %9.2f %8.2fx",
		group, ratio, s.decisions, float64(s.needles)/float64(s.decisions), s.passing, s.found, 100*float64(s.agree)/float64(s.decisions),
		ms(s.jetqa), ms(s.tinycv), s.tinycv/s.jetqa)
}

// report compares the two sides' decisions and prints the table.
func report(b *testing.B, set *decisionSet, jetqa, tinycv map[string]decided) {
	type key struct {
		group string
		ratio float64
	}
	var groups []key
	byGroup := map[key]*sums{}
	var disagreements []string
	maxDSim, posDiffer, passingDiffer := 0.0, 0, 0
	for _, d := range set.Decisions {
		j, t := jetqa[d.ID], tinycv[d.ID]
		verdicts, dsim, positions, passing := compareDecided(j, t)
		maxDSim = max(maxDSim, dsim)
		posDiffer += positions
		passingDiffer += passing
		if !verdicts || passing > 0 || dsim > 1e-3 {
			disagreements = append(disagreements, fmt.Sprintf("%s: jetqa %s\n    tinycv %s", d.ID, verdictOf(j), verdictOf(t)))
		}
		k := key{d.group, d.Ratio}
		if byGroup[k] == nil {
			byGroup[k] = &sums{}
			groups = append(groups, k)
		}
		s := sums{decisions: 1, needles: len(d.Needles), jetqa: j.NsPerDecision, tinycv: t.NsPerDecision}
		if verdicts {
			s.agree = 1
		}
		if t.Best != "" {
			s.found = 1
		}
		for _, c := range t.All {
			if c.OK {
				s.passing++
			}
		}
		byGroup[k].add(s)
	}

	var out strings.Builder
	fmt.Fprintf(&out, "%d CPUs; needles: per decision; passing: needles that passed, found: decisions with a needle found (by tinycv);\n", runtime.NumCPU())
	fmt.Fprintf(&out, "agree: same verdicts; ms: mean time per decision, PNG decoding included; x-faster = tinycv / jetqa\n")
	fmt.Fprintf(&out, "%-30s %5s %9s %8s %8s %6s %8s %9s %9s %9s\n", "decisions", "ratio", "decisions", "needles", "passing", "found", "agree", "jetqa ms", "tinycv ms", "x-faster")
	all := sums{}
	for _, ratio := range []float64{0.02, 1} {
		total := sums{}
		for _, k := range groups {
			if k.ratio == ratio {
				fmt.Fprintln(&out, byGroup[k].row(k.group, ratio))
				total.add(*byGroup[k])
			}
		}
		fmt.Fprintln(&out, total.row("all", ratio))
		ms := func(ns float64) float64 { return ns / float64(total.decisions) / 1e6 }
		b.ReportMetric(ms(total.jetqa), fmt.Sprintf("jetqa-ms@%v", ratio))
		b.ReportMetric(ms(total.tinycv), fmt.Sprintf("tinycv-ms@%v", ratio))
		b.ReportMetric(total.tinycv/total.jetqa, fmt.Sprintf("x-faster@%v", ratio))
		all.add(total)
	}
	fmt.Fprintf(&out, "verdicts agree in %d of %d decisions; max |Δsimilarity| %.2g; %d areas at other positions, %d of them passing\n",
		all.agree, all.decisions, maxDSim, posDiffer, passingDiffer)
	for _, d := range disagreements {
		fmt.Fprintf(&out, "differs: %s\n", d)
	}
	// Printed, not logged: the testing package keeps only 10 lines of a
	// benchmark's log.
	fmt.Print(out.String())

	b.ReportMetric(0, "ns/op")
	b.ReportMetric(100*float64(all.agree)/float64(all.decisions), "agree-%")
	b.ReportMetric(maxDSim, "max-dsim")
	b.ReportMetric(float64(posDiffer), "pos-differ")
	b.ReportMetric(float64(passingDiffer), "pos-differ-passing")
}

// compareDecided says whether two outcomes of a decision reach the same
// verdicts (the same needle found, the same needles passing), the largest
// difference of an area's similarity, how many areas were found at
// different positions, and how many of those pass in b.
func compareDecided(a, b decided) (verdicts bool, maxDSim float64, positions, passing int) {
	verdicts = a.Best == b.Best && len(a.All) == len(b.All)
	others := map[string]osAutoinstCandidate{}
	for _, c := range b.All {
		others[c.Needle] = c
	}
	for _, c := range a.All {
		o, ok := others[c.Needle]
		if !ok || o.OK != c.OK || len(o.Areas) != len(c.Areas) {
			verdicts = false
			continue
		}
		for i, area := range c.Areas {
			maxDSim = max(maxDSim, math.Abs(area.Similarity-o.Areas[i].Similarity))
			if area.X != o.Areas[i].X || area.Y != o.Areas[i].Y {
				positions++
				if o.Areas[i].OK {
					passing++
				}
			}
		}
	}
	return verdicts, maxDSim, positions, passing
}

// verdictOf is a decision's outcome in one line.
func verdictOf(d decided) string {
	var s strings.Builder
	fmt.Fprintf(&s, "best %q:", d.Best)
	for _, c := range d.All {
		fmt.Fprintf(&s, " %s", c.Needle)
		if c.OK {
			s.WriteString(" ok")
		}
		for _, a := range c.Areas {
			fmt.Fprintf(&s, " (%d,%d) %.4f", a.X, a.Y, a.Similarity)
		}
		s.WriteString(";")
	}
	return s.String()
}

package needle

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"jetqa/schemas"
)

// realNeedlesDir holds real needles of KDE Linux's openQA tests, chosen
// as its README.md says. Each PNG is a full screenshot, so it doubles as
// a screen to search.
const realNeedlesDir = "testdata/kdelinux-needles"

// TestRealNeedlesAgreeWithOsAutoinst searches every screen of
// realNeedlesDir for the needles of its own tags and of two other tags,
// near the areas and on the whole screen (ratio 0.02 and 1, threshold 0),
// with jetqa and with os-autoinst (testdata/tinycv_decide.pl, one perl
// process for all of them), and requires every decision to come out as
// agreeWithOsAutoinst says: the same best needle and verdicts,
// similarities within 1e-3, and each area that passes found at the same
// position, since assert_and_click clicks there. Real screens have what
// makes positions tie: rows of identical icons, flat panels and dialogs,
// lines of text on black, areas mostly excluded.
func TestRealNeedlesAgreeWithOsAutoinst(t *testing.T) {
	if _, err := os.Stat("/usr/lib/os-autoinst/needle.pm"); err != nil {
		t.Skip("os-autoinst is not installed: bash deploy/install-deps.sh test")
	}
	dir, err := filepath.Abs(realNeedlesDir)
	if err != nil {
		t.Fatal(err)
	}
	nd, err := schemas.ReadNeedleDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if errs := nd.Errors(); len(errs) > 0 {
		t.Fatalf("needles refused: %v", errs)
	}
	set := realDecisions(t, nd)
	start := time.Now()
	tinycv := runTinycv(t, set)

	prepared := map[string]*Needle{}
	for _, spec := range nd.Needles {
		pngData, err := os.ReadFile(spec.PNGPath)
		if err != nil {
			t.Fatal(err)
		}
		n, err := Prepare(spec.Needle, pngData)
		if err != nil {
			t.Fatalf("%s: %v", spec.File, err)
		}
		t.Cleanup(n.Close)
		prepared[spec.Name] = n
	}
	type jetqaDecision struct {
		needles []*Needle
		best    *Candidate
		all     []Candidate
	}
	// jetqa decides while os-autoinst does, each on a core.
	jetqa := map[string]jetqaDecision{}
	screens := map[string]image.Image{} // decoded once, for agreeWithOsAutoinst
	for _, d := range set.Decisions {
		data, err := os.ReadFile(d.Screen)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := screens[d.Screen]; !ok {
			if screens[d.Screen], err = png.Decode(bytes.NewReader(data)); err != nil {
				t.Fatalf("%s: %v", d.Screen, err)
			}
		}
		s, err := DecodeScreen(data)
		if err != nil {
			t.Fatalf("%s: %v", d.Screen, err)
		}
		var needles []*Needle
		for _, name := range d.Needles {
			needles = append(needles, prepared[name])
		}
		best, all := Search(s, needles, d.Threshold, d.Ratio)
		s.Close()
		jetqa[d.ID] = jetqaDecision{needles, best, all}
	}
	jetqaTook := time.Since(start)
	theirs := tinycv()
	tinycvTook := time.Since(start)

	var passing, areas, moved int
	for _, d := range set.Decisions {
		want, ok := theirs[d.ID]
		if !ok {
			t.Errorf("%s: os-autoinst did not decide it", d.ID)
			continue
		}
		if want.Best != "" {
			passing++
		}
		ours := jetqa[d.ID]
		for _, w := range want.All {
			k := slices.IndexFunc(ours.all, func(c Candidate) bool { return c.Needle == w.Needle })
			for j, wa := range w.Areas {
				if !wa.OK {
					continue
				}
				areas++
				if k < 0 || j >= len(ours.all[k].Areas) {
					continue // agreeWithOsAutoinst says what is missing
				}
				if a := ours.all[k].Areas[j]; a.X != wa.X || a.Y != wa.Y {
					moved++
				}
			}
		}
		t.Run(d.ID, func(t *testing.T) {
			agreeWithOsAutoinst(t, want.osAutoinstResult, screens[d.Screen], d.Ratio, ours.needles, ours.best, ours.all)
			if t.Failed() {
				t.Logf("os-autoinst: %s", describeResult(want.osAutoinstResult))
			}
		})
	}
	t.Logf("%d needles, %d screens: %d decisions, %d of them passing; %d areas passing, %d of them found elsewhere by jetqa",
		len(nd.Needles), len(screens), len(set.Decisions), passing, areas, moved)
	t.Logf("jetqa took %v, os-autoinst beside it %v", jetqaTook.Round(time.Millisecond), tinycvTook.Round(time.Millisecond))
}

// realDecisions are the searches of TestRealNeedlesAgreeWithOsAutoinst.
// Needles with the same PNG share a screen, searched for all their tags.
// The two other tags are the one after the screen's first tag, in the
// order of names, often a neighbour on the same kind of screen, and the
// one halfway round, most often an unrelated screen.
func realDecisions(t *testing.T, nd *schemas.NeedleDir) *decisionSet {
	t.Helper()
	type screen struct {
		path string
		tags []string
	}
	byContent := map[[sha256.Size]byte]*screen{}
	var screens []*screen
	var allTags []string
	for _, n := range nd.Needles {
		data, err := os.ReadFile(n.PNGPath)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		s, ok := byContent[sum]
		if !ok {
			s = &screen{path: n.PNGPath}
			byContent[sum] = s
			screens = append(screens, s)
		}
		for _, tag := range n.Tags {
			if !slices.Contains(s.tags, tag) {
				s.tags = append(s.tags, tag)
			}
			if !slices.Contains(allTags, tag) {
				allTags = append(allTags, tag)
			}
		}
	}
	sort.Strings(allTags)

	set := &decisionSet{NeedlesDir: nd.Dir}
	for _, s := range screens {
		tags := slices.Clone(s.tags)
		i := slices.Index(allTags, s.tags[0])
		for _, step := range []int{1, len(allTags) / 2} {
			for k := range allTags {
				other := allTags[(i+step+k)%len(allTags)]
				if !slices.Contains(tags, other) {
					tags = append(tags, other)
					break
				}
			}
		}
		for _, tag := range tags {
			var names []string
			for _, n := range nd.WithTags([]string{tag}) {
				names = append(names, n.Name)
			}
			for _, ratio := range []float64{schemas.AssertScreenRatio, 1} {
				set.Decisions = append(set.Decisions, benchDecision{
					ID:     fmt.Sprintf("%s %s ratio %v", strings.TrimSuffix(filepath.Base(s.path), ".png"), tag, ratio),
					Screen: s.path, Needles: names, Ratio: ratio,
				})
			}
		}
	}
	return set
}

// runTinycv starts testdata/tinycv_decide.pl on set's decisions; the
// function it returns waits for them, by decision id.
func runTinycv(t *testing.T, set *decisionSet) func() map[string]decided {
	t.Helper()
	script, err := filepath.Abs("testdata/tinycv_decide.pl")
	if err != nil {
		t.Fatal(err)
	}
	input, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	inputPath := filepath.Join(t.TempDir(), "decisions.json")
	write(t, inputPath, input)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("perl", script, inputPath)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waited := false
	t.Cleanup(func() {
		if !waited {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return func() map[string]decided {
		t.Helper()
		waited = true
		if err := cmd.Wait(); err != nil {
			t.Fatalf("os-autoinst: %v\n%s", err, &stderr)
		}
		res := map[string]decided{}
		lines := bufio.NewScanner(&stdout)
		lines.Buffer(nil, 1<<24)
		for lines.Scan() {
			var d decided
			if err := json.Unmarshal(lines.Bytes(), &d); err != nil {
				t.Fatalf("os-autoinst printed %q: %v", lines.Text(), err)
			}
			res[d.ID] = d
		}
		return res
	}
}

package needle

import (
	"encoding/json"
	"fmt"
	"image"
	"image/draw"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// testosNeedlesDir holds the needles of the testos demo, the real needles
// the screens in testdata/testos were taken for.
const testosNeedlesDir = "../../../deploy/testos/needles"

// testosPictures decodes every PNG of testdata/testos and testosNeedlesDir
// once, by file name without ".png".
var testosPictures = sync.OnceValues(func() (map[string]image.Image, error) {
	screens, err := filepath.Glob("testdata/testos/*.png")
	if err != nil {
		return nil, err
	}
	needles, err := filepath.Glob(testosNeedlesDir + "/*.png")
	if err != nil {
		return nil, err
	}
	pictures := map[string]image.Image{}
	for _, path := range append(screens, needles...) {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		pictures[strings.TrimSuffix(filepath.Base(path), ".png")] = img
	}
	return pictures, nil
})

// testosPicture is a real screen of testdata/testos, e.g. "08-shell-prompt".
func testosPicture(tb testing.TB, name string) image.Image {
	tb.Helper()
	pictures, err := testosPictures()
	if err != nil {
		tb.Fatal(err)
	}
	img, ok := pictures[name]
	if !ok {
		tb.Fatalf("no picture %q in testdata/testos or %s", name, testosNeedlesDir)
	}
	return img
}

// testosNeedle is a needle of the testos demo as it is in the repository.
func testosNeedle(tb testing.TB, name string) testNeedle {
	tb.Helper()
	js, err := os.ReadFile(filepath.Join(testosNeedlesDir, name+".json"))
	if err != nil {
		tb.Fatal(err)
	}
	return testNeedle{name, string(js), testosPicture(tb, name)}
}

// shifted is img moved right by d.X and down by d.Y, black where nothing
// was moved in: a needle taken from a slightly different screen.
func shifted(img image.Image, d image.Point) *image.RGBA {
	out := image.NewRGBA(img.Bounds())
	draw.Draw(out, out.Bounds(), image.Black, image.Point{}, draw.Src)
	draw.Draw(out, img.Bounds().Add(d), img, img.Bounds().Min, draw.Src)
	return out
}

// testosCases search the real screens of testdata/testos, 80x25 text in
// 720x400 pixels, glyphs of 9x16: the testos needles, and needles cut
// from those screens around the thresholds.
func testosCases(tb testing.TB) []searchCase {
	screen := func(name string) image.Image { return testosPicture(tb, name) }
	repo := func(names ...string) []testNeedle {
		var needles []testNeedle
		for _, name := range names {
			needles = append(needles, testosNeedle(tb, name))
		}
		return needles
	}
	cut := func(name, json, from string) []testNeedle { return []testNeedle{{name, json, screen(from)}} }
	// hello-output with its first area's match level changed.
	helloAt := func(match int) []testNeedle {
		return cut(fmt.Sprintf("hello-output-%d", match),
			fmt.Sprintf(`{"xpos":0,"ypos":0,"width":144,"height":16,"match":%d},{"xpos":0,"ypos":16,"width":81,"height":16}`, match),
			"10-hello-output")
	}
	// The prompt "testos:~#", 81x16 at (0,48) on the shell prompt screen.
	promptWithMargin := func(margin int) []testNeedle {
		return cut(fmt.Sprintf("prompt-margin-%d", margin),
			fmt.Sprintf(`{"xpos":0,"ypos":48,"width":81,"height":16,"margin":%d}`, margin), "08-shell-prompt")
	}
	const (
		promptAndCursor = `{"xpos":0,"ypos":48,"width":99,"height":16}` // "testos:~# " and the cursor
		cursor          = `{"xpos":90,"ypos":48,"width":9,"height":16,"type":"exclude"}`
		grubTitle       = `{"xpos":200,"ypos":16,"width":310,"height":16}`
		grubCountdown   = `{"xpos":27,"ypos":352,"width":530,"height":16}`
	)
	// On the ls screen the first line, "jetqa says hello", is followed by
	// "testos:~# uname -a" where the needle has "testos:~# " and the
	// cursor: the blur carries a little of that into the line's last
	// pixel row. Squared differences, summed over the 144x16 area:
	const (
		helloOnLs       = 14596 // blurred in part (ratio 0.02)
		helloOnLsWhole  = 14928 // blurred whole (ratio 1)
		helloOnLsPixels = 144 * 16
	)

	return []searchCase{
		{name: "shell prompt: testos-shell",
			needles: repo("testos-shell"), screen: screen("08-shell-prompt"), ratio: 0.02, best: "testos-shell",
			areas: []areaWant{{0, 0, 1}, {0, 48, 1}}},
		{name: "shell prompt at ratio 1: testos-shell",
			needles: repo("testos-shell"), screen: screen("08-shell-prompt"), ratio: 1, best: "testos-shell",
			areas: []areaWant{{0, 0, 1}, {0, 48, 1}}},
		{name: "a command typed at the prompt: testos-shell still",
			needles: repo("testos-shell"), screen: screen("09-typing-command"), ratio: 0.02, best: "testos-shell",
			areas: []areaWant{{0, 0, 1}, {0, 48, 1}}},
		{name: "hello output: hello-output",
			needles: repo("hello-output"), screen: screen("10-hello-output"), ratio: 0.02, best: "hello-output",
			areas: []areaWant{{0, 0, 1}, {0, 16, 1}}},
		{name: "hello output: the banner is gone, testos-shell finds only the prompt 32 px up",
			needles: repo("testos-shell"), screen: screen("10-hello-output"), ratio: 0.02,
			areas: []areaWant{{sim: -1}, {0, 16, 1}}},
		{name: "hello output, all testos needles: hello-output wins",
			needles: repo("testos-shell", "hello-output", "graphical-desktop"), screen: screen("10-hello-output"), ratio: 0.02,
			best: "hello-output", order: []string{"hello-output", "testos-shell", "graphical-desktop"},
			areas: []areaWant{{0, 0, 1}, {0, 16, 1}}},
		{name: "ls output: hello-output, its first line blurred with the next",
			needles: repo("hello-output"), screen: screen("11-ls-output"), ratio: 0.02, best: "hello-output",
			areas: []areaWant{{0, 0, simOf(helloOnLs / float64(helloOnLsPixels))}, {0, 16, 1}}},
		// The prompt is on two lines, exactly: tinycv's float32 squared
		// difference at its own place is not exactly 0, so tinycv takes
		// the one on the later line, closer by its distance quirk.
		{name: "ls output at ratio 1: hello-output, the prompt found on a later line",
			needles: repo("hello-output"), screen: screen("11-ls-output"), ratio: 1, best: "hello-output",
			areas: []areaWant{{0, 0, simOf(helloOnLsWhole / float64(helloOnLsPixels))}, {0, 64, 1}}},
		{name: "ls output: match 98 passes at similarity 0.9886",
			needles: helloAt(98), screen: screen("11-ls-output"), ratio: 0.02, best: "hello-output-98",
			areas: []areaWant{{0, 0, simOf(helloOnLs / float64(helloOnLsPixels))}, {0, 16, 1}}},
		{name: "ls output: match 99 fails at similarity 0.9886",
			needles: helloAt(99), screen: screen("11-ls-output"), ratio: 0.02,
			areas: []areaWant{{0, 0, simOf(helloOnLs / float64(helloOnLsPixels))}, {0, 16, 1}}},
		{name: "ls output: match 99 passes with threshold 0.01",
			needles: helloAt(99), screen: screen("11-ls-output"), ratio: 0.02, threshold: 0.01, best: "hello-output-99",
			areas: []areaWant{{0, 0, simOf(helloOnLs / float64(helloOnLsPixels))}, {0, 16, 1}}},
		{name: "GRUB menu: no testos needle",
			needles: repo("testos-shell", "hello-output", "graphical-desktop"), screen: screen("04-grub-menu"), ratio: 0.02,
			order: []string{"graphical-desktop", "hello-output", "testos-shell"},
			areas: []areaWant{{sim: -1}}},
		{name: "kernel messages: no testos-shell",
			needles: repo("testos-shell"), screen: screen("05-kernel-boot"), ratio: 1,
			areas: []areaWant{{sim: -1}, {sim: -1}}},
		{name: "cleared console: no testos-shell",
			needles: repo("testos-shell"), screen: screen("07-cleared"), ratio: 0.02,
			areas: []areaWant{{sim: -1}, {sim: -1}}},
		{name: "640x480 before text mode: graphical-desktop's 720 px wide area is out of range",
			needles: repo("graphical-desktop"), screen: screen("01-display-not-initialized"), ratio: 1,
			areas: []areaWant{{0, 0, 0}}},
		{name: "640x480 before text mode: testos-shell's areas fit but are not there",
			needles: repo("testos-shell"), screen: screen("01-display-not-initialized"), ratio: 0.02,
			areas: []areaWant{{sim: -1}, {sim: -1}}},

		{name: "needle drawn 5 px right and 3 px down: the prompt found at its place",
			needles: []testNeedle{{"prompt-shifted", `{"xpos":5,"ypos":51,"width":81,"height":16}`, shifted(screen("08-shell-prompt"), image.Pt(5, 3))}},
			screen:  screen("08-shell-prompt"), ratio: 0.02, best: "prompt-shifted",
			areas: []areaWant{{0, 48, 1}}},
		{name: "margin 12 grows to int(12+0.02·1012)=32: the prompt 32 px up is found",
			needles: promptWithMargin(12), screen: screen("10-hello-output"), ratio: 0.02, best: "prompt-margin-12",
			areas: []areaWant{{0, 16, 1}}},
		{name: "margin 11 grows to int(11+0.02·1013)=31: the prompt 32 px up is beyond it",
			needles: promptWithMargin(11), screen: screen("10-hello-output"), ratio: 0.02,
			areas: []areaWant{{sim: -1}}},
		{name: "margin 11 at ratio 1: the prompt 32 px up is found",
			needles: promptWithMargin(11), screen: screen("10-hello-output"), ratio: 1, best: "prompt-margin-11",
			areas: []areaWant{{0, 16, 1}}},
		{name: "prompt and cursor: found on the idle prompt",
			needles: cut("prompt-cursor", promptAndCursor, "08-shell-prompt"), screen: screen("08-shell-prompt"), ratio: 0.02,
			best: "prompt-cursor", areas: []areaWant{{0, 48, 1}}},
		{name: "prompt and cursor: a typed command covers the cursor's place",
			needles: cut("prompt-cursor", promptAndCursor, "08-shell-prompt"), screen: screen("09-typing-command"), ratio: 0.02,
			areas: []areaWant{{sim: -1}}},
		{name: "prompt with the cursor excluded: found while a command is typed",
			needles: cut("prompt-no-cursor", promptAndCursor+","+cursor, "08-shell-prompt"), screen: screen("09-typing-command"), ratio: 0.02,
			best: "prompt-no-cursor", areas: []areaWant{{0, 48, 1}}},
		{name: "prompt with the cursor excluded: the exclude area does not move with prompts on other lines",
			needles: cut("prompt-no-cursor", promptAndCursor+","+cursor, "08-shell-prompt"), screen: screen("12-typing-at-prompt"), ratio: 0.02,
			areas: []areaWant{{sim: -1}}},
		{name: "GRUB title and countdown: both on the menu",
			needles: cut("grub-countdown", grubTitle+","+grubCountdown, "04-grub-menu"), screen: screen("04-grub-menu"), ratio: 0.02,
			best: "grub-countdown", areas: []areaWant{{200, 16, 1}, {27, 352, 1}}},
		{name: "GRUB menu still drawing: the title is there, the countdown not yet",
			needles: cut("grub-countdown", grubTitle+","+grubCountdown, "04-grub-menu"), screen: screen("03-grub-menu-drawing"), ratio: 0.02,
			areas: []areaWant{{200, 16, 1}, {sim: -1}}},
	}
}

// TestTestosScreens decides the needles of testos on its real screens.
// When os-autoinst is installed each case also runs through its own search
// (testdata/tinycv_search.pl), which must reach the same verdicts, at the
// same positions or ones as good.
func TestTestosScreens(t *testing.T) {
	_, err := os.Stat("/usr/lib/os-autoinst/needle.pm")
	withOsAutoinst := err == nil
	if !withOsAutoinst {
		t.Log("os-autoinst is not installed: checking jetqa alone")
	}
	for _, tc := range testosCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			needles := prepareAll(t, tc.needles)
			best, all := Search(decodeScreen(t, tc.screen), needles, tc.threshold, tc.ratio)
			checkSearch(t, tc, best, all)
			if withOsAutoinst {
				checkAgainstOsAutoinst(t, tc, needles, best, all)
			}
		})
	}
}

// checkAgainstOsAutoinst runs tc through os-autoinst's search and requires
// the same best needle, the same verdicts of every candidate, similarities
// within 1e-3, the same positions of the areas that pass, as
// TestAgreesWithOsAutoinst does (see docs/matching.md).
func checkAgainstOsAutoinst(t *testing.T, tc searchCase, needles []*Needle, best *Candidate, all []Candidate) {
	t.Helper()
	agreeWithOsAutoinst(t, osAutoinstSearch(t, tc), tc.screen, tc.ratio, needles, best, all)
}

// osAutoinstSearch is tc as os-autoinst's search decides it.
func osAutoinstSearch(t *testing.T, tc searchCase) osAutoinstResult {
	t.Helper()
	script, err := filepath.Abs("testdata/tinycv_search.pl")
	if err != nil {
		t.Fatal(err)
	}
	needleDir, screenDir := t.TempDir(), t.TempDir()
	screenPath := filepath.Join(screenDir, "screen.png")
	write(t, screenPath, pngOf(t, tc.screen))
	args := []string{script, needleDir, screenPath, fmt.Sprint(tc.threshold), fmt.Sprint(tc.ratio)}
	for _, tn := range tc.needles {
		write(t, filepath.Join(needleDir, tn.name+".json"), tn.needleJSON())
		write(t, filepath.Join(needleDir, tn.name+".png"), pngOf(t, tn.img))
		args = append(args, tn.name)
	}
	cmd := exec.Command("perl", args...)
	cmd.Dir = screenDir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("os-autoinst: %v\n%s", err, stderrOf(err))
	}
	var res osAutoinstResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("os-autoinst printed %q: %v", out, err)
	}
	return res
}

func bestName(best *Candidate) string {
	if best == nil {
		return ""
	}
	return best.Needle
}

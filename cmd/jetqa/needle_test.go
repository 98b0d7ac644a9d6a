package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// testosNeedles are the demo's needles; their PNGs are screenshots of
// testos, so each needle's own PNG is a screen it matches.
var testosNeedles = filepath.Join("..", "..", "deploy", "testos", "needles")

// runJetqa runs the jetqa command in a child process, as a user would, and
// returns what it printed and its exit status.
func runJetqa(t *testing.T, args ...string) (stdout, stderr string, status int) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "JETQA_RUN_MAIN=1")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		status = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errOut.String(), status
}

// needleTree writes files (slash path → content) below a fresh directory.
func needleTree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, content := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, full, content)
	}
	return dir
}

// grayPNG is a w×h PNG with a gradient.
func grayPNG(t *testing.T, w, h int) string {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = uint8(i * 7)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func readTestosNeedle(t *testing.T, name string) string {
	t.Helper()
	return readFile(t, filepath.Join(testosNeedles, name))
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestNeedleCheck(t *testing.T) {
	good := `{"tags":["a"],"area":[{"xpos":0,"ypos":0,"width":10,"height":10}]}`
	img := grayPNG(t, 32, 16)
	// A PNG whose header reads but whose pixels are cut off: only the
	// matcher's full decode notices.
	truncated := grayPNG(t, 64, 64)[:60]
	for _, tc := range []struct {
		name   string
		files  map[string]string
		status int
		lines  []string // the whole output, line by line
	}{
		{
			name:   "clean directory",
			files:  map[string]string{"a.json": good, "a.png": img, "sub/b.json": good, "sub/b.png": img},
			status: 0,
			lines:  []string{"2 needles, 0 problems"},
		},
		{
			name:   "a PNG without JSON is only a warning",
			files:  map[string]string{"a.json": good, "a.png": img, "old.png": img},
			status: 0,
			lines:  []string{"old.png: warning: no old.json beside it, so no needle uses this image", "1 needle, 0 problems, 1 warning"},
		},
		{
			name:   "broken JSON",
			files:  map[string]string{"bad.json": `{"tags":["a"],`, "bad.png": img},
			status: 1,
			lines:  []string{`bad.json: needle "bad": not a JSON object: unexpected end of JSON input`, "1 needle, 1 problem"},
		},
		{
			name:   "missing PNG",
			files:  map[string]string{"sub/lonely.json": good},
			status: 1,
			lines:  []string{"sub/lonely.json: its image sub/lonely.png is missing", "1 needle, 1 problem"},
		},
		{
			name:   "area outside the image",
			files:  map[string]string{"big.json": strings.Replace(good, `"width":10`, `"width":40`, 1), "big.png": img},
			status: 1,
			lines:  []string{`big.json: needle "big": area 1: 40x10 at (0,0) is outside the 32x16 image (big.png)`, "1 needle, 1 problem"},
		},
		{
			name:   "the only area of an unknown type",
			files:  map[string]string{"typo.json": strings.Replace(good, `}]`, `,"type":"matc"}]`, 1), "typo.png": img},
			status: 1,
			lines:  []string{`typo.json: needle "typo": no area of type "match": os-autoinst cannot search for the needle`, "1 needle, 1 problem"},
		},
		{
			name: "numbers written as strings are numbers; what os-autoinst accepts but is surely a mistake is a warning",
			files: map[string]string{"a.json": `{"tags":["a"],"area":[{"xpos":"0","ypos":"0","width":"10","height":10.0,"match":"90","margin":30.0},
				{"xpos":"two","ypos":0,"width":5,"height":5,"match":101},{"xpos":0,"ypos":0,"width":5,"height":5,"type":"matc"}]}`, "a.png": img},
			status: 0,
			lines: []string{
				`a.json: warning: needle "a": area 2: xpos "two" is not a number: os-autoinst reads it as 0`,
				`a.json: warning: needle "a": area 2: match 101: above 100 the area never passes`,
				`a.json: warning: needle "a": area 3: type "matc": os-autoinst ignores areas of types other than "match", "exclude" and "ocr"`,
				"1 needle, 0 problems, 3 warnings",
			},
		},
		{
			name:   "duplicate name in two subdirectories",
			files:  map[string]string{"one/x.json": good, "one/x.png": img, "two/x.json": good, "two/x.png": img},
			status: 1,
			lines:  []string{`two/x.json: the needle name "x" is used twice (one/x.json and two/x.json): rename one`, "2 needles, 1 problem"},
		},
		{
			name:   "PNG the matcher cannot decode",
			files:  map[string]string{"cut.json": good, "cut.png": truncated},
			status: 1,
			lines:  []string{`cut.png: needle "cut": PNG of 64x64 pixels does not decode`, "1 needle, 1 problem"},
		},
		{
			name: "every problem at once",
			files: map[string]string{"a.json": "[]", "a.png": img, "b.json": good, "c.json": good, "c.png": img,
				"d.json": strings.Replace(good, `"xpos":0`, `"xpos":30`, 1), "d.png": img},
			status: 1,
			lines: []string{
				`a.json: needle "a": not a JSON object: []`,
				"b.json: its image b.png is missing",
				`d.json: needle "d": area 1: 10x10 at (30,0) is outside the 32x16 image (d.png)`,
				"4 needles, 3 problems",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, status := runJetqa(t, "needle", "check", needleTree(t, tc.files))
			if status != tc.status {
				t.Errorf("exit status %d, want %d; stderr: %s", status, tc.status, stderr)
			}
			if got, want := strings.TrimSuffix(stdout, "\n"), strings.Join(tc.lines, "\n"); got != want {
				t.Errorf("output:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestNeedleCheckJSONAndUsage(t *testing.T) {
	dir := needleTree(t, map[string]string{"n.json": `{"area":[{"width":1,"height":1,"type":"x"}]}`, "n.png": grayPNG(t, 4, 4)})
	stdout, _, status := runJetqa(t, "needle", "check", "--json", dir)
	var report needleCheckReport
	if err := json.Unmarshal([]byte(stdout), &report); err != nil || status != 1 {
		t.Fatalf("status %d, %v: %s", status, err, stdout)
	}
	if report.Needles != 1 || report.Usable != 0 || len(report.Problems) != 1 || report.Problems[0].File != "n.json" ||
		report.Problems[0].Message != `needle "n": no area of type "match": os-autoinst cannot search for the needle` {
		t.Errorf("report %+v", report)
	}

	if stdout, stderr, status := runJetqa(t, "needle", "check", testosNeedles); status != 0 || stdout != "3 needles, 0 problems\n" {
		t.Errorf("the testos needles: status %d, %q %q", status, stdout, stderr)
	}
	for _, args := range [][]string{
		{"needle"},
		{"needle", "check"},
		{"needle", "check", "a", "b"},
		{"needle", "check", "--no-such-flag", dir},
		{"needle", "check", filepath.Join(dir, "none")},
		{"needle", "check", filepath.Join(dir, "n.json")},
	} {
		if _, stderr, status := runJetqa(t, args...); status != 2 || stderr == "" {
			t.Errorf("jetqa %s: status %d, stderr %q; want 2 and a message", strings.Join(args, " "), status, stderr)
		}
	}
}

func TestNeedleMatchTestosScreens(t *testing.T) {
	shell := filepath.Join(testosNeedles, "testos-shell.png")
	for _, tc := range []struct {
		name   string
		args   []string
		status int
		want   []string // lines of the output, in this order
		not    []string // in no line of the output
	}{
		{
			name:   "the shell prompt is on its own screenshot",
			args:   []string{shell, testosNeedles, "--tag", "testos-shell"},
			status: 0,
			want: []string{
				"1 needle with tag testos-shell; ratio 0.02, threshold 0",
				"found testos-shell",
				"    area 1 at (0,0) 153x16: similarity 100.00% (1), level 96.00%: passed",
				"    area 2 at (0,48) 81x16: similarity 100.00% (1), level 96.00%: passed",
				"decode ",
			},
			not: []string{"candidates"},
		},
		{
			name:   "hello output is not on the shell screenshot",
			args:   []string{shell, testosNeedles, "--tag", "hello-output"},
			status: 1,
			want:   []string{"no match", "candidates, best first:", "  hello-output: failed, ", "FAILED"},
			not:    []string{"found"},
		},
		{
			name:   "flags before, between and after; any tag may match",
			args:   []string{"--ratio", "1", shell, "--tag", "hello-output", testosNeedles, "--tag", "testos-shell", "--threshold", "0.01"},
			status: 0,
			want:   []string{"2 needles with tag hello-output or testos-shell; ratio 1, threshold 0.01", "found testos-shell", "level 95.00%: passed", "other candidates, best first:", "  hello-output: failed"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, status := runJetqa(t, append([]string{"needle", "match"}, tc.args...)...)
			if status != tc.status {
				t.Errorf("exit status %d, want %d; stderr: %s", status, tc.status, stderr)
			}
			rest := stdout
			for _, w := range tc.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("output lacks %q (in order):\n%s", w, stdout)
				}
				rest = rest[i+len(w):]
			}
			for _, n := range tc.not {
				if strings.Contains(stdout, n) {
					t.Errorf("output has %q:\n%s", n, stdout)
				}
			}
		})
	}
}

func TestNeedleMatchJSON(t *testing.T) {
	stdout, stderr, status := runJetqa(t, "needle", "match", "--json", filepath.Join(testosNeedles, "hello-output.png"), testosNeedles,
		"--tag", "hello-output", "--tag", "testos-shell", "--tag", "graphical-desktop")
	var r needleMatchReport
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || status != 0 {
		t.Fatalf("status %d, %v: %s%s", status, err, stdout, stderr)
	}
	if r.Found != "hello-output" || len(r.Candidates) != 3 || r.Width != 720 || r.Height != 400 {
		t.Fatalf("report %+v", r)
	}
	first := r.Candidates[0]
	if !first.OK || first.Error != 0 || len(first.Areas) != 2 || first.Areas[1] != (matchArea{X: 0, Y: 16, Width: 81, Height: 16, NeedleX: 0, NeedleY: 16, Similarity: 1, Level: 0.96, OK: true}) {
		t.Errorf("found %+v", first)
	}
	for _, c := range r.Candidates[1:] {
		if c.OK {
			t.Errorf("%s matched the hello-output screen too", c.Needle)
		}
	}
}

// kdeNeedles are real needles of KDE Linux's openQA tests, two of them
// with "match": "90" (see its README.md).
var kdeNeedles = filepath.Join("..", "..", "stages", "match", "needle", "testdata", "needle-corpus", "kdelinux")

// TestNeedleRealNeedles checks and tries real needles, and one of them
// with xpos written as a string and margin as a float too, on their own
// screenshots: each finds itself (its twin too), the others fail, as
// os-autoinst decides (TestNeedleCorpus compares with it).
func TestNeedleRealNeedles(t *testing.T) {
	files := map[string]string{
		"uefi_screen-quoted.json": `{"properties":[],"tags":["uefi_screen"],"area":[{"xpos":"495","ypos":371,"width":290,"height":21,"type":"match","match":"90","margin":30.0}]}`,
		"uefi_screen-quoted.png":  readFile(t, filepath.Join(kdeNeedles, "uefi_screen.png")),
	}
	for _, name := range []string{"uefi_screen", "uefi_screen-buildstream", "uefi_screen-upgrade"} {
		for _, ext := range []string{".json", ".png"} {
			files[name+ext] = readFile(t, filepath.Join(kdeNeedles, name+ext))
		}
	}
	dir := needleTree(t, files)
	if stdout, stderr, status := runJetqa(t, "needle", "check", dir); status != 0 || stdout != "4 needles, 0 problems\n" {
		t.Errorf("check: status %d, %q %q", status, stdout, stderr)
	}
	for _, tc := range []struct {
		screen string
		found  matchArea
		twin   string // matched too
	}{
		{"uefi_screen", matchArea{X: 495, Y: 371, Width: 290, Height: 21, NeedleX: 495, NeedleY: 371, Similarity: 1, Level: 0.9, OK: true}, "uefi_screen-quoted"},
		{"uefi_screen-buildstream", matchArea{X: 367, Y: 357, Width: 290, Height: 36, NeedleX: 367, NeedleY: 357, Similarity: 1, Level: 0.9, OK: true}, ""},
		{"uefi_screen-upgrade", matchArea{X: 368, Y: 352, Width: 288, Height: 40, NeedleX: 368, NeedleY: 352, Similarity: 1, Level: 0.96, OK: true}, ""},
	} {
		for _, ratio := range []string{"0.02", "1"} {
			stdout, stderr, status := runJetqa(t, "needle", "match", "--json", "--ratio", ratio, filepath.Join(dir, tc.screen+".png"), dir, "--tag", "uefi_screen")
			var r needleMatchReport
			if err := json.Unmarshal([]byte(stdout), &r); err != nil || status != 0 {
				t.Fatalf("%s: status %d, %v: %s%s", tc.screen, status, err, stdout, stderr)
			}
			if r.Found != tc.screen || len(r.Candidates) != 4 || len(r.Candidates[0].Areas) != 1 || r.Candidates[0].Areas[0] != tc.found {
				t.Errorf("%s at ratio %s: %+v", tc.screen, ratio, r)
				continue
			}
			for _, c := range r.Candidates[1:] {
				if c.OK != (c.Needle == tc.twin) || !c.OK && c.Areas[0].Similarity != 0 {
					t.Errorf("%s at ratio %s: %+v", tc.screen, ratio, c)
				}
			}
		}
	}
}

// TestNeedleMatchShowsTheBestFive lists five failing candidates and how
// many more there are, and all of them with --all.
func TestNeedleMatchShowsTheBestFive(t *testing.T) {
	files := map[string]string{}
	for _, name := range []string{"n1", "n2", "n3", "n4", "n5", "n6", "n7"} {
		files[name+".json"] = readTestosNeedle(t, "graphical-desktop.json")
		files[name+".png"] = readTestosNeedle(t, "graphical-desktop.png")
	}
	dir := needleTree(t, files)
	shell := filepath.Join(testosNeedles, "testos-shell.png")
	stdout, _, status := runJetqa(t, "needle", "match", shell, dir, "--tag", "graphical-desktop")
	if status != 1 || strings.Count(stdout, ": failed, ") != 5 || !strings.Contains(stdout, "  … 2 more (--all shows them)\n") {
		t.Errorf("status %d:\n%s", status, stdout)
	}
	stdout, _, status = runJetqa(t, "needle", "match", shell, dir, "--tag", "graphical-desktop", "--all")
	if status != 1 || strings.Count(stdout, ": failed, ") != 7 || strings.Contains(stdout, "more") {
		t.Errorf("--all: status %d:\n%s", status, stdout)
	}
}

func TestNeedleMatchBadInput(t *testing.T) {
	shell := filepath.Join(testosNeedles, "testos-shell.png")
	broken := needleTree(t, map[string]string{
		"testos-shell.json": readTestosNeedle(t, "testos-shell.json"), "testos-shell.png": readTestosNeedle(t, "testos-shell.png"),
		"typo.json": `{"tags":["x"],"area":[{"width":1,"height":1,"type":"matc"}]}`, "typo.png": grayPNG(t, 4, 4),
	})
	cut := needleTree(t, map[string]string{
		"testos-shell.json": readTestosNeedle(t, "testos-shell.json"), "testos-shell.png": readTestosNeedle(t, "testos-shell.png")[:100],
	})
	for _, tc := range []struct {
		name    string
		args    []string
		message string // in stderr
	}{
		{"a tag no needle has, with a close one", []string{shell, testosNeedles, "--tag", "testos-shel"}, "no needle in " + testosNeedles + " has the tag testos-shel; tags that look close: testos-shell"},
		{"a tag nothing looks like", []string{shell, testosNeedles, "--tag", "zzz"}, "its 3 needles carry 3 tags, none close to it"},
		{"no tag", []string{shell, testosNeedles}, "match wants at least one --tag"},
		{"one argument", []string{shell, "--tag", "testos-shell"}, "match wants a screenshot and a needle directory, got 1 arguments"},
		{"no screen file", []string{filepath.Join(broken, "none.png"), testosNeedles, "--tag", "testos-shell"}, "screen: open "},
		{"a screen that is no PNG", []string{filepath.Join(testosNeedles, "testos-shell.json"), testosNeedles, "--tag", "testos-shell"}, "testos-shell.json: not a PNG"},
		{"broken needles in the directory", []string{shell, broken, "--tag", "testos-shell"}, "has 1 broken needle file, which would fail a job:\n  typo.json: needle \"typo\": no area of type \"match\""},
		{"a needle the matcher refuses", []string{shell, cut, "--tag", "testos-shell"}, "the matcher refuses 1 needle:\n  testos-shell.png: needle \"testos-shell\": PNG of 720x400 pixels does not decode"},
		{"a negative ratio", []string{shell, testosNeedles, "--tag", "testos-shell", "--ratio", "-1"}, "--ratio -1: want 0 or more"},
		{"a threshold above 1", []string{shell, testosNeedles, "--tag", "testos-shell", "--threshold", "2"}, "--threshold 2: want a number from 0 to 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, status := runJetqa(t, append([]string{"needle", "match"}, tc.args...)...)
			if status != 2 || !strings.Contains(stderr, tc.message) {
				t.Errorf("status %d, stderr:\n%s\nwant 2 and %q (stdout %q)", status, stderr, tc.message, stdout)
			}
		})
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"", "", 0},
		{"abc", "", 3},
		{"testos-shell", "testos-shel", 1},
		{"kitten", "sitting", 3},
		{"grub", "gurb", 2},
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

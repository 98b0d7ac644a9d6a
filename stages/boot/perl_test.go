package boot

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"jetqa/schemas"
)

// The job's result from its modules', by openQA's rules.
func TestModuleVerdict(t *testing.T) {
	m := func(name, result string, flags ...string) schemas.ModuleResult {
		return schemas.ModuleResult{Name: name, Result: result, Reason: "why " + name, Flags: flags}
	}
	for _, c := range []struct {
		modules        []schemas.ModuleResult
		result, reason string
	}{
		{[]schemas.ModuleResult{m("a", "passed"), m("b", "passed")}, "passed", ""},
		{[]schemas.ModuleResult{m("a", "passed"), m("b", "failed"), m("c", "failed")}, "failed", "b: why b"},
		{[]schemas.ModuleResult{m("a", "failed", "ignore_failure"), m("b", "passed")}, "passed", ""},
		{[]schemas.ModuleResult{m("a", "softfailed"), m("b", "passed")}, "softfailed", ""},
		{[]schemas.ModuleResult{m("a", "softfailed"), m("b", "failed")}, "failed", "b: why b"},
		{[]schemas.ModuleResult{m("a", "failed"), m("b", "incomplete")}, "incomplete", "b: why b"},
		{[]schemas.ModuleResult{m("a", "failed", "fatal"), m("b", "skipped")}, "failed", "a: why a"},
	} {
		result, reason := moduleVerdict(c.modules)
		if result != c.result || reason != c.reason {
			t.Errorf("%+v: %s (%s), want %s (%s)", c.modules, result, reason, c.result, c.reason)
		}
	}
}

// check_screen's mustmatch as the test side sends it.
func TestMustmatchTags(t *testing.T) {
	for raw, want := range map[string][]string{
		`"bootloader"`:                      {"bootloader"},
		`"inst-bootmenu ENV-FLAVOR-dvd"`:    {"inst-bootmenu", "ENV-FLAVOR-dvd"},
		`["a", "b c"]`:                      {"a", "b", "c"},
		`["a", {"name": "n1", "tags": []}]`: {"a", needleNameTag + "n1"},
	} {
		got, err := mustmatchTags(json.RawMessage(raw))
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%s: %q %v, want %q", raw, got, err, want)
		}
	}
	for _, bad := range []string{`42`, `[{"tags": []}]`} {
		if _, err := mustmatchTags(json.RawMessage(bad)); err == nil {
			t.Errorf("%s was taken as tags", bad)
		}
	}
}

// Perl's truth and numbers, in whatever JSON form they arrive.
func TestPerlValues(t *testing.T) {
	var v struct {
		A, B, C, D, E perlBool
		N, M, O       perlNumber
	}
	if err := json.Unmarshal([]byte(`{"A": 1, "B": "0", "C": "", "D": true, "E": null, "N": "2.5", "M": 7, "O": null}`), &v); err != nil {
		t.Fatal(err)
	}
	if !v.A || v.B || v.C || !v.D || v.E || v.N != 2.5 || v.M != 7 || v.O != 0 {
		t.Errorf("got %+v", v)
	}
	if err := json.Unmarshal([]byte(`{"N": "soon"}`), &v); err == nil {
		t.Error(`"soon" was taken as a number`)
	}
}

// os-autoinst's console objects map onto jetqa's consoles, or are
// refused with the reason.
func TestConsoleOf(t *testing.T) {
	c, err := consoleOf("root-console", perlConsole{Class: "consoles::ttyConsole", Args: map[string]any{"tty": float64(2)}})
	if err != nil || c.kind != consoleTTY || c.tty != 2 {
		t.Errorf("tty console: %+v %v", c, err)
	}
	if c, err := consoleOf("x11", perlConsole{Class: "consoles::vnc_base"}); err != nil || c.kind != consoleScreen {
		t.Errorf("vnc-base: %+v %v", c, err)
	}
	if _, err := consoleOf("root-ssh", perlConsole{Class: "consoles::sshXtermVt"}); err == nil {
		t.Error("an ssh console was taken")
	}
}

// A main.pm that wants what os-autoinst or the worker lacks is told
// which, from Perl's own words.
func TestPerlLoadHint(t *testing.T) {
	dir := osAutoinstDir()
	if _, err := os.Stat(filepath.Join(dir, "testapi.pm")); err != nil {
		t.Fatalf("os-autoinst's test side is not installed (%v): `make test-deps` installs it", err)
	}
	iface := osAutoinstInterface(dir)
	caseDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(caseDir, "helpers"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(caseDir, "helpers", "displays.pm"), []byte("package helpers::displays; 1;\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if iface < 30 {
		t.Fatalf("the interface of the os-autoinst at %s: %d", dir, iface)
	}
	perlSays := func(code string) string {
		out, err := exec.Command("perl", "-I"+dir, "-e", code).CombinedOutput()
		if err == nil {
			t.Fatalf("perl -e %q did not fail", code)
		}
		return string(out)
	}
	newer := fmt.Sprintf("interface %d, and the distribution is written for a newer one", iface)
	for code, want := range map[string]string{
		`use testapi qw(assert_the_future);`:     "os-autoinst's testapi has no assert_the_future: the os-autoinst at " + dir + " is " + newer,
		`use testapi; testapi::assert_future();`: "os-autoinst's testapi has no assert_future",
		`use basetest; basetest->future_method;`: "os-autoinst's basetest has no future_method",
		`use consoles::future_console;`:          "os-autoinst has no consoles::future_console: the os-autoinst at " + dir + " is " + newer,
		`use No::Such::Module;`:                  "the Perl module No::Such::Module is not installed on the worker: install it, on Debian most often as the package libno-such-module-perl",
	} {
		if got := perlLoadHint(dir, caseDir, perlSays(code)); !strings.Contains(got, want) {
			t.Errorf("perl -e %q: hint %q, want it to say %q", code, got, want)
		}
	}
	if got := perlLoadHint(dir, caseDir, perlSays(`die "the distribution's own bug\n"`)); got != "" {
		t.Errorf("a distribution's own error got the hint %q", got)
	}
}

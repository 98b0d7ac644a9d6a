package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"

	"jetqa/schemas"
	"jetqa/stages/boot/qemu"
)

// distriRepo publishes deploy/testos/openqa-distri, testos' tests as an
// os-autoinst Perl distribution, as a git repository, after change.
func distriRepo(t *testing.T, change func(dir string)) string {
	t.Helper()
	if _, err := os.Stat("/usr/lib/os-autoinst/autotest.pm"); err != nil {
		t.Fatalf("os-autoinst's test side is not installed (%v): `make test-deps` installs it", err)
	}
	dir := filepath.Join(t.TempDir(), "distri")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join("..", "..", "deploy", "testos", "openqa-distri"))); err != nil {
		t.Fatal(err)
	}
	change(dir)
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	commitAll(t, repo, "distri")
	return dir
}

// moduleResults lists a job's modules as name:result.
func moduleResults(fin schemas.JobFinished) string {
	var got []string
	for _, m := range fin.Modules {
		got = append(got, m.Name+":"+m.Result)
	}
	return strings.Join(got, " ")
}

// TestOpenQADistributionRuns runs an os-autoinst Perl distribution,
// unchanged, with os-autoinst's own test side: its modules pass, fail
// and roll back as under isotovideo, and their details are jetqa's.
func TestOpenQADistributionRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("two testos VMs")
	}
	testos := testosDir(t)
	s := startSystem(t)
	repo := distriRepo(t, func(string) {})
	id := s.post(t, demoSettings(testos, "CASEDIR="+repo))
	fin := s.finish(t, id, 10*time.Minute)
	const want = "boot_to_shell:passed tablet_click:passed greeting:passed shell_commands:passed guest_files:passed switch_consoles:passed broken:failed rolled_back:passed"
	if fin.Result != schemas.ResultPassed || moduleResults(fin) != want {
		t.Fatalf("job %d: %s (%s), modules:\n%s\nwant passed with\n%s", id, fin.Result, fin.Reason, moduleResults(fin), want)
	}
	if side := s.show(t, id).TestSide; !strings.HasPrefix(side, "os-autoinst interface ") {
		t.Errorf("job %d does not say it ran on os-autoinst's test side: %q", id, side)
	}
	hello := fin.Modules[slices.IndexFunc(fin.Modules, func(m schemas.ModuleResult) bool { return m.Name == "greeting" })]
	var matched, info bool
	for _, st := range hello.Details {
		matched = matched || st.Kind == "match" && st.Needle == "hello-output" && st.Result == schemas.ResultPassed && st.Screenshot != ""
		info = info || st.Kind == "info" && strings.HasPrefix(st.Text, "Hello\nthe screen and the serial console both answered (42)")
	}
	if !matched || !info {
		t.Errorf("greeting's details lack the hello-output match or the record_info: %+v", hello.Details)
	}
	resp, err := http.Get(fmt.Sprintf("%s/tests/%d/file/%s?seq=%d", s.api, id, hello.Details[0].Screenshot, s.finishedAt(id)))
	if err != nil {
		t.Fatal(err)
	}
	shot, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.HasPrefix(shot, []byte("\x89PNG")) {
		t.Errorf("greeting's screenshot %s is not served as a PNG: %s %.40q", hello.Details[0].Screenshot, resp.Status, shot)
	}

	// The guest's curl reached the job's routes: its upload_logs file is
	// among the job's ulogs, served where openQA serves it, and its
	// upload_asset file is an asset of the job.
	resp, err = http.Get(fmt.Sprintf("%s/tests/%d/file/guest_files-dmesg.txt", s.api, id))
	if err != nil {
		t.Fatal(err)
	}
	dmesg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !bytes.Contains(dmesg, []byte("Linux version")) {
		t.Errorf("the guest's dmesg, uploaded with upload_logs: %s %.200q", resp.Status, dmesg)
	}
	var details struct{ Job struct{ ULogs []string } }
	s.get(t, fmt.Sprintf("/api/v1/jobs/%d/details?seq=%d", id, s.finishedAt(id)), &details)
	if !slices.Equal(details.Job.ULogs, []string{"guest_files-dmesg.txt"}) {
		t.Errorf("job %d's ulogs: %v", id, details.Job.ULogs)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if reg, err := s.bus.LookupAsset(ctx, fmt.Sprintf("%d-notes.txt", id)); err != nil || reg.Size != int64(len("made by the guest\n")) {
		t.Errorf("the guest's upload_asset: %+v, %v", reg, err)
	}

	// The same files under os-autoinst's own isotovideo give the same
	// module results.
	if got := isotovideoResults(t, testos, repo); got != want {
		t.Errorf("under isotovideo the modules are\n%s\nunder jetqa\n%s", got, want)
	}

	// Without its needle, hello fails at its assert_screen, showing the
	// needle with the tag that did not match.
	repo = distriRepo(t, func(dir string) {
		for _, f := range []string{"hello-output.json", "hello-output.png"} {
			if err := os.Remove(filepath.Join(dir, "needles", f)); err != nil {
				t.Fatal(err)
			}
		}
	})
	id = s.post(t, demoSettings(testos, "CASEDIR="+repo, "NO_FAILURES=1"))
	fin = s.finish(t, id, 10*time.Minute)
	if fin.Result != schemas.ResultFailed || !strings.HasPrefix(fin.Reason, "greeting: ") || !strings.Contains(fin.Reason, "hello-output") {
		t.Fatalf("job %d without the hello-output needle: %s (%s), modules %s", id, fin.Result, fin.Reason, moduleResults(fin))
	}
	hello = fin.Modules[slices.IndexFunc(fin.Modules, func(m schemas.ModuleResult) bool { return m.Name == "greeting" })]
	var candidate bool
	for _, st := range hello.Details {
		candidate = candidate || st.Result == schemas.ResultFailed && slices.ContainsFunc(st.Candidates, func(c schemas.CandidateMatch) bool {
			return c.Needle == "hello-output-framebuffer"
		})
	}
	if !candidate {
		t.Errorf("greeting's failed match does not show its candidate hello-output-framebuffer: %+v", hello.Details)
	}
}

// isotovideoResults runs a Perl distribution under os-autoinst's
// isotovideo on testos, as a job's settings would, and lists its modules
// as name:result in jetqa's words.
func isotovideoResults(t *testing.T, testos, casedir string) string {
	t.Helper()
	isotovideo, err := exec.LookPath("isotovideo")
	if err != nil {
		t.Fatalf("os-autoinst's isotovideo is not installed (%v): `make test-deps` installs it", err)
	}
	pool := t.TempDir()
	vars := demoSettings(testos, "CASEDIR="+casedir, "PRODUCTDIR="+casedir, "NEEDLES_DIR="+filepath.Join(casedir, "needles"),
		"BACKEND=qemu", "QEMUCPUS=1", "TIMEOUT_SCALE=2", "QEMU=x86_64")
	if !qemu.KVMUsable() {
		// os-autoinst enables KVM whenever /dev/kvm is there.
		vars["QEMU_NO_KVM"] = "1"
	}
	data, _ := json.Marshal(vars)
	if err := os.WriteFile(filepath.Join(pool, "vars.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(isotovideo)
	cmd.Dir = pool
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("isotovideo: %v\n%s", err, tail(out, 3000))
	}
	var order []struct{ Name string }
	data, err = os.ReadFile(filepath.Join(pool, "testresults", "test_order.json"))
	if err == nil {
		err = json.Unmarshal(data, &order)
	}
	if err != nil {
		t.Fatalf("isotovideo's test_order.json: %v\n%s", err, tail(out, 3000))
	}
	words := map[string]string{"ok": schemas.ResultPassed, "fail": schemas.ResultFailed, "softfail": schemas.ResultSoftfailed}
	var got []string
	for _, m := range order {
		var res struct{ Result string }
		result := schemas.ResultSkipped
		if data, err := os.ReadFile(filepath.Join(pool, "testresults", "result-"+m.Name+".json")); err == nil && json.Unmarshal(data, &res) == nil {
			result = cmp.Or(words[res.Result], res.Result)
		}
		got = append(got, m.Name+":"+result)
	}
	return strings.Join(got, " ")
}

// A developer pauses a Perl job at a module, types on its VM while it is
// paused and resumes it: the module sees what was typed, and passes. A
// failed assert_screen pauses it too, and a retry with a needle the
// developer made of the live screen passes it; with PAUSE_ON_FAILURE=1 a
// failed module waits for the developer.
func TestOpenQADistributionDeveloperMode(t *testing.T) {
	if testing.Short() {
		t.Skip("a testos VM")
	}
	testos := testosDir(t)
	s := startSystem(t)
	repo := distriRepo(t, func(dir string) {
		writeFile(t, filepath.Join(dir, "tests", "console", "typed_by_developer.pm"), `use base 'basetest';
use strict;
use warnings;
use testapi;

sub run { wait_serial('DEV-TYPED', 60) or die 'nobody typed on the paused VM' }

1;
`)
		writeFile(t, filepath.Join(dir, "tests", "boot", "to_the_shell.pm"), `use base 'basetest';
use testapi;
sub run { assert_screen 'testos-shell', 120 }
1;
`)
		writeFile(t, filepath.Join(dir, "tests", "console", "needs_a_new_needle.pm"), `use base 'basetest';
use testapi;
sub run { assert_screen 'made-by-the-developer', 5 }
1;
`)
		writeFile(t, filepath.Join(dir, "tests", "console", "fails_on_purpose.pm"), `use base 'basetest';
sub run { die 'failed on purpose' }
sub test_flags { {ignore_failure => 1} }
1;
`)
		writeFile(t, filepath.Join(dir, "main.pm"), `use strict;
use testapi;
use testosdistribution;
testapi::set_distribution(testosdistribution->new());
autotest::loadtest('tests/boot/to_the_shell.pm');
autotest::loadtest('tests/console/typed_by_developer.pm');
autotest::loadtest('tests/console/needs_a_new_needle.pm');
autotest::loadtest('tests/console/fails_on_purpose.pm');
1;
`)
	})
	id := s.post(t, demoSettings(testos, "CASEDIR="+repo, "PAUSE_ON_FAILURE=1"))
	ID := strconv.FormatInt(id, 10)
	dev := func(args ...string) {
		t.Helper()
		var out, errs bytes.Buffer
		if err := dispatch(append([]string{"dev", ID, args[0], "--api", s.api}, args[1:]...), &out, &errs); err != nil {
			t.Fatalf("jetqa dev %s %s: %v\n%s%s", ID, strings.Join(args, " "), err, out.String(), errs.String())
		}
	}
	s.waitFor(t, id, 3*time.Minute, "started", isKind[*schemas.JobStarted])
	dev("pause", "--module", "typed_by_developer")
	s.waitFor(t, id, 3*time.Minute, "paused at typed_by_developer", func(p schemas.Payload) bool {
		e, ok := p.(*schemas.JobPaused)
		return ok && e.Module == "typed_by_developer" && e.At == schemas.PausedAtModule
	})
	dev("pause", "--on-mismatch", "assert_screen")
	dev("type", "echo DEV-TYPED > /dev/ttyS0")
	dev("keys", "ret")
	dev("resume")

	pausedAt := func(at, module string) {
		t.Helper()
		s.waitFor(t, id, 3*time.Minute, "paused ("+at+") in "+module, func(p schemas.Payload) bool {
			e, ok := p.(*schemas.JobPaused)
			return ok && e.Module == module && e.At == at
		})
	}
	pausedAt(schemas.PausedOnMismatch, "needs_a_new_needle")
	// The developer makes the needle of the live screen's first line.
	needle := filepath.Join(t.TempDir(), "made-by-the-developer")
	dev("screen", needle+".png")
	writeFile(t, needle+".json", `{"tags": ["made-by-the-developer"], "area": [{"xpos": 0, "ypos": 0, "width": 160, "height": 16, "type": "match"}]}`)
	dev("retry", needle+".json")

	pausedAt(schemas.PausedOnFailure, "fails_on_purpose")
	dev("resume")
	fin := s.finish(t, id, 5*time.Minute)
	const want = "to_the_shell:passed typed_by_developer:passed needs_a_new_needle:passed fails_on_purpose:failed"
	if fin.Result != schemas.ResultPassed || moduleResults(fin) != want {
		t.Fatalf("job %d: %s (%s), modules\n%s\nwant passed with\n%s", id, fin.Result, fin.Reason, moduleResults(fin), want)
	}
}

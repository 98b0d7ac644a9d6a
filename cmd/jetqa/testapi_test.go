package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// testapiModule exercises openQA's testapi on testos: typing at openQA's
// speeds, screen changes, output read through the serial port, keys held
// down, variables, the CD drive, and a shutdown the test asks for.
const testapiModule = `
def run():
    type_string("clear; echo slow typing\n", max_interval=40)
    if not wait_screen_change(lambda: enter_cmd("echo the screen changes"), timeout=10):
        fail("typing a command did not change the screen")
    send_key("ret", wait_screen_change=True)

    out = script_output("echo out1; echo out2 >&2")
    if out != "out1\nout2":
        fail("script_output gave %r" % out)
    validate_script_output("cat /proc/version", "Linux version")
    validate_script_output("echo abc", lambda o: o == "abc")
    if script_output("exit 3", proceed_on_failure=True) != "":
        fail("proceed_on_failure")

    type_string("echo ")
    hold_key("shift")
    send_key("h")
    send_key("i")
    release_key("shift")
    type_string(" > /dev/ttyS0\n")
    if not wait_serial("HI", timeout=30):
        fail("keys typed with shift held did not arrive as HI")

    if not check_var("DISTRI", "testos") or check_var("DISTRI", "other"):
        fail("check_var")
    set_var("SEEN_BY", "testapi")
    if get_required_var("SEEN_BY") != "testapi":
        fail("set_var did not reach get_required_var")
    diag("testapi module done with the console")

    type_string("clear; echo jetqa says hello")
    send_key_until_needlematch("hello-output", "ret", 3)
    eject_cd()
`

const shutdownModule = `
def run():
    enter_cmd("poweroff")
    assert_shutdown(60)
    if not check_shutdown(1):
        fail("check_shutdown after the machine went off")
`

// The testapi calls do what openQA's do, against a real VM; a command
// that times out fails its module, a loop that never waits is stopped by
// cancel, and main.star's loop by its step limit.
func TestTestapiOnARealVM(t *testing.T) {
	testos := testosDir(t)
	s := startSystem(t)
	repo := repoVariant(t, testos, func(dir string) {
		writeFile(t, filepath.Join(dir, "tests", "testapi.star"), testapiModule)
		writeFile(t, filepath.Join(dir, "tests", "shutdown.star"), shutdownModule)
		writeFile(t, filepath.Join(dir, "tests", "timeout.star"), "def run():\n    script_run('sleep 120', timeout=3)\n")
		writeFile(t, filepath.Join(dir, "tests", "loop.star"), "def run():\n    while True:\n        pass\n")
		writeFile(t, filepath.Join(dir, "main.star"), "for m in get_var('MODULES').split(','):\n    loadtest(m)\n")
	})
	loopy := repoVariant(t, testos, func(dir string) {
		writeFile(t, filepath.Join(dir, "main.star"), "while True:\n    pass\n")
	})

	id := s.post(t, demoSettings(testos, "CASEDIR="+repo, "MODULES=boot,testapi,shutdown"))
	if fin := s.finish(t, id, 5*time.Minute); fin.Result != schemas.ResultPassed {
		t.Fatalf("testapi job %d: %s (%s)", id, fin.Result, fin.Reason)
	}

	id = s.post(t, demoSettings(testos, "CASEDIR="+repo, "MODULES=boot,timeout,shutdown"))
	fin := s.finish(t, id, 5*time.Minute)
	if fin.Result != schemas.ResultFailed || !strings.Contains(fin.Reason, `timeout: script_run "sleep 120": command timed out`) {
		t.Fatalf("job %d with a command that times out: %s (%s)", id, fin.Result, fin.Reason)
	}

	id = s.post(t, demoSettings(testos, "CASEDIR="+loopy))
	fin = s.finish(t, id, time.Minute)
	if fin.Result != schemas.ResultIncomplete || !strings.Contains(fin.Reason, "main.star did not end within") {
		t.Fatalf("job %d whose main.star never ends: %s (%s)", id, fin.Result, fin.Reason)
	}

	// Cancelled while a module spins, the job ends at once, VM and all.
	id = s.post(t, demoSettings(testos, "CASEDIR="+repo, "MODULES=boot,loop"))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	err := s.bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.JobSubject(id) + ".module"}},
		func(_ schemas.Event, p schemas.Payload, _ streams.Delivery) error {
			if m, ok := p.(*schemas.ModuleStarted); ok && m.Module == "loop" {
				return streams.ErrStopWatch
			}
			return nil
		})
	if err != nil {
		t.Fatalf("job %d never started its loop: %v", id, err)
	}
	s.postAction(t, id, "cancel", 200)
	start := time.Now()
	fin = s.finish(t, id, 30*time.Second)
	if fin.Result != schemas.ResultUserCancelled {
		t.Fatalf("job %d cancelled in a loop: %s (%s)", id, fin.Result, fin.Reason)
	}
	t.Logf("the spinning job ended %s after the cancel", time.Since(start).Round(time.Millisecond))
}

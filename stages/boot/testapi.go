package boot

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.starlark.net/starlark"

	"jetqa/schemas"
	"jetqa/stages/boot/qemu"
)

// testFailure is a failed assertion of the test: the module fails.
type testFailure struct{ msg string }

func (e *testFailure) Error() string { return e.msg }

func failf(format string, args ...any) error { return &testFailure{fmt.Sprintf(format, args...)} }

// errIncomplete wraps a problem of the system rather than of the system
// under test (the VM died, no matcher answered): the job is incomplete.
type errIncomplete struct{ err error }

func (e *errIncomplete) Error() string { return e.err.Error() }
func (e *errIncomplete) Unwrap() error { return e.err }

func incomplete(err error) error { return &errIncomplete{err} }

// runner runs one job's test modules against its VM.
type runner struct {
	ctx          context.Context
	job          int64
	bus          Bus
	vm           *qemu.VM
	needles      *needleSet
	matcher      *remoteMatcher
	settings     map[string]string
	scale        float64
	resultsDir   string
	log          *slog.Logger
	matchTimeout time.Duration
	worker       schemas.WorkerRef
	dev          *developer
	// assets are those upload_asset made: asset name → file.
	assets map[string]string

	module       *schemas.ModuleResult
	shots        int
	serialOffset int64
	virtioOffset int64 // of the serial terminal, as serialOffset
	// noWait is assert_screen's and check_screen's no_wait, during the call.
	noWait bool
	// poweredOff says the test shut the machine down and saw it go.
	poweredOff bool
	// snapshots says the VM may be saved (QEMU_DISABLE_SNAPSHOTS unset,
	// and no save failed yet).
	snapshots bool
	// carried are steps for the next module's details: a rollback.
	carried []schemas.Step
	// matched is the needle found last, for click_lastmatch; mouseAt is
	// where mouse_set put the pointer, nil when hidden or never set.
	matched *lastMatch
	mouseAt *[2]int
	// consoles are those main.star added; console is the one selected.
	consoles map[string]console
	console  string
	// milestoneConsole was selected when the VM was saved.
	milestoneConsole string
	// lastScreen is the screen the last screen check looked at.
	lastScreen []byte
	// perl says the test side is os-autoinst's Perl: it records the
	// module's details and screenshots itself.
	perl bool
}

// testapiNames are the functions test modules may call, openQA's names.
var testapiNames = map[string]func(r *runner) starlark.Callable{
	"assert_screen":       func(r *runner) starlark.Callable { return r.builtin("assert_screen", r.assertScreen) },
	"check_screen":        func(r *runner) starlark.Callable { return r.builtin("check_screen", r.checkScreen) },
	"send_key":            func(r *runner) starlark.Callable { return r.builtin("send_key", r.sendKey) },
	"type_string":         func(r *runner) starlark.Callable { return r.builtin("type_string", r.typeString) },
	"wait_serial":         func(r *runner) starlark.Callable { return r.builtin("wait_serial", r.waitSerial) },
	"script_run":          func(r *runner) starlark.Callable { return r.builtin("script_run", r.scriptRun) },
	"assert_script_run":   func(r *runner) starlark.Callable { return r.builtin("assert_script_run", r.assertScriptRun) },
	"save_screenshot":     func(r *runner) starlark.Callable { return r.builtin("save_screenshot", r.saveScreenshot) },
	"wait_still_screen":   func(r *runner) starlark.Callable { return r.builtin("wait_still_screen", r.waitStillScreen) },
	"record_info":         func(r *runner) starlark.Callable { return r.builtin("record_info", r.recordInfo) },
	"record_soft_failure": func(r *runner) starlark.Callable { return r.builtin("record_soft_failure", r.recordSoftFailure) },
	"get_var":             func(r *runner) starlark.Callable { return getVarBuiltin(r.settings) },
	"get_required_var":    func(r *runner) starlark.Callable { return r.builtin("get_required_var", r.getRequiredVar) },
	"check_var":           func(r *runner) starlark.Callable { return r.builtin("check_var", r.checkVar) },
	"set_var":             func(r *runner) starlark.Callable { return r.builtin("set_var", r.setVar) },
	"diag":                func(r *runner) starlark.Callable { return r.builtin("diag", r.diag) },
	"enter_cmd":           func(r *runner) starlark.Callable { return r.builtin("enter_cmd", r.enterCmd) },
	"hold_key":            func(r *runner) starlark.Callable { return r.builtin("hold_key", r.holdKey) },
	"release_key":         func(r *runner) starlark.Callable { return r.builtin("release_key", r.releaseKey) },
	"wait_screen_change":  func(r *runner) starlark.Callable { return r.withThread("wait_screen_change", r.waitScreenChangeFn) },
	"script_output":       func(r *runner) starlark.Callable { return r.builtin("script_output", r.scriptOutput) },
	"validate_script_output": func(r *runner) starlark.Callable {
		return r.withThread("validate_script_output", r.validateScriptOutput)
	},
	"send_key_until_needlematch": func(r *runner) starlark.Callable {
		return r.builtin("send_key_until_needlematch", r.sendKeyUntilNeedlematch)
	},
	"upload_logs":     func(r *runner) starlark.Callable { return r.builtin("upload_logs", r.uploadLogs) },
	"upload_asset":    func(r *runner) starlark.Callable { return r.builtin("upload_asset", r.uploadAsset) },
	"power":           func(r *runner) starlark.Callable { return r.builtin("power", r.power) },
	"eject_cd":        func(r *runner) starlark.Callable { return r.builtin("eject_cd", r.ejectCD) },
	"mouse_set":       func(r *runner) starlark.Callable { return r.builtin("mouse_set", r.mouseSet) },
	"select_console":  func(r *runner) starlark.Callable { return r.builtin("select_console", r.selectConsole) },
	"current_console": func(r *runner) starlark.Callable { return r.builtin("current_console", r.currentConsole) },
	"mouse_hide":      func(r *runner) starlark.Callable { return r.builtin("mouse_hide", r.mouseHide) },
	"mouse_click":     func(r *runner) starlark.Callable { return r.builtin("mouse_click", r.mouseClick) },
	"mouse_dclick":    func(r *runner) starlark.Callable { return r.builtin("mouse_dclick", r.mouseDclick) },
	"click_lastmatch": func(r *runner) starlark.Callable { return r.builtin("click_lastmatch", r.clickLastmatch) },
	"assert_and_click": func(r *runner) starlark.Callable {
		return r.builtin("assert_and_click", r.assertAndClick)
	},
	"assert_and_dclick": func(r *runner) starlark.Callable {
		return r.builtin("assert_and_dclick", r.assertAndDclick)
	},
	"check_shutdown":  func(r *runner) starlark.Callable { return r.builtin("check_shutdown", r.checkShutdown) },
	"assert_shutdown": func(r *runner) starlark.Callable { return r.builtin("assert_shutdown", r.assertShutdown) },
}

// withoutVM are the testapi functions that work once the machine is off.
var withoutVM = map[string]bool{
	"check_shutdown": true, "assert_shutdown": true, "get_var": true, "get_required_var": true,
	"check_var": true, "set_var": true, "diag": true, "record_info": true, "record_soft_failure": true,
}

type builtinFunc func(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error)

func (r *runner) builtin(name string, fn builtinFunc) *starlark.Builtin {
	return starlark.NewBuiltin(name, func(_ *starlark.Thread, _ *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		select {
		case <-r.vm.Done():
			if !withoutVM[name] {
				if r.poweredOff {
					return nil, failf("%s: the machine is powered off", name)
				}
				return nil, incomplete(fmt.Errorf("QEMU exited during %s: %v", name, r.vm.Err()))
			}
		default:
		}
		if err := r.ctx.Err(); err != nil {
			return nil, incomplete(err)
		}
		r.logCall(name, args, kwargs)
		if r.dev.pauseNow() {
			if _, err := r.hold(schemas.PausedAtCommand, "before "+name); err != nil {
				return nil, err
			}
		}
		return fn(args, kwargs)
	})
}

// typed are the testapi functions whose text argument is never logged:
// it may be a password.
var typed = map[string]bool{"type_string": true, "enter_cmd": true}

// logCall writes a testapi call to the job's log, as os-autoinst's
// autoinst-log.txt has them.
func (r *runner) logCall(name string, args starlark.Tuple, kwargs []starlark.Tuple) {
	var b strings.Builder
	for i, a := range args {
		if i > 0 {
			b.WriteString(", ")
		}
		if typed[name] && i == 0 {
			if s, ok := starlark.AsString(a); ok {
				fmt.Fprintf(&b, "<%d characters>", len(s))
				continue
			}
		}
		b.WriteString(a.String())
	}
	for _, kv := range kwargs {
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		if typed[name] && string(kv[0].(starlark.String)) == "string" {
			b.WriteString("string=<hidden>")
			continue
		}
		fmt.Fprintf(&b, "%s=%s", string(kv[0].(starlark.String)), kv[1])
	}
	module := ""
	if r.module != nil {
		module = r.module.Name
	}
	r.log.Info("testapi", "module", module, "call", name+"("+b.String()+")")
}

func (r *runner) predeclared() starlark.StringDict {
	d := starlark.StringDict{}
	for name, mk := range testapiNames {
		d[name] = mk(r)
	}
	return d
}

// Module flags, as openQA's test_flags(): a failing fatal module stops
// the job; ignore_failure keeps a module's failure out of the job's
// result; after a milestone the VM is saved as a snapshot, to which it
// rolls back after a failed module or one with always_rollback, unless
// that one has no_rollback.
var moduleFlags = []string{"fatal", "ignore_failure", "milestone", "always_rollback", "no_rollback"}

// runModules runs the modules in order, as os-autoinst: a failed module
// fails the job and the next modules run, unless it is fatal; an
// incomplete one stops the job. The remaining modules are skipped.
func (r *runner) runModules(modules []*testModule) (result, reason string, results []schemas.ModuleResult) {
	milestone := "" // the module after which the VM was saved
	var rollback error
	for i, m := range modules {
		mr := r.runModule(m)
		results = append(results, mr)
		ignore := slices.Contains(mr.Flags, "ignore_failure")
		stop := mr.Result == schemas.ResultIncomplete ||
			mr.Result == schemas.ResultFailed && !ignore && slices.Contains(mr.Flags, "fatal")
		if !stop && i+1 < len(modules) {
			if rollback = r.snapshotAfter(mr, &milestone); rollback != nil {
				stop = true
			}
		}
		if stop {
			for _, rest := range modules[i+1:] {
				results = append(results, schemas.ModuleResult{Name: rest.name, Result: schemas.ResultSkipped})
			}
			break
		}
	}
	if rollback != nil {
		return schemas.ResultIncomplete, rollback.Error(), results
	}
	result, reason = moduleVerdict(results)
	return result, reason, results
}

// moduleVerdict is the job's result from its modules', as openQA's: a
// failure counts unless the module has ignore_failure, the first one
// giving the reason; soft failures make it softfailed; an incomplete
// module makes it incomplete.
func moduleVerdict(results []schemas.ModuleResult) (result, reason string) {
	result = schemas.ResultPassed
	for _, mr := range results {
		ignore := slices.Contains(mr.Flags, "ignore_failure")
		switch {
		case mr.Result == schemas.ResultIncomplete:
			return mr.Result, mr.Name + ": " + mr.Reason
		case ignore:
		case mr.Result == schemas.ResultFailed:
			if result != schemas.ResultFailed {
				result, reason = schemas.ResultFailed, mr.Name+": "+mr.Reason
			}
		case mr.Result == schemas.ResultSoftfailed && result == schemas.ResultPassed:
			result = schemas.ResultSoftfailed
		}
	}
	return result, reason
}

// snapshotName is the snapshot of the last milestone, os-autoinst's name.
const snapshotName = "lastgood"

// snapshotAfter acts on a module's flags before the next module, as
// os-autoinst: it rolls the VM back to the last milestone after a failed
// module or one with always_rollback (unless no_rollback), and saves it
// after a milestone that did not fail. A VM that cannot be saved (a raw
// disk) runs on without snapshots; one that cannot be rolled back is an
// error: its state is unknown.
func (r *runner) snapshotAfter(mr schemas.ModuleResult, milestone *string) error {
	has := func(flag string) bool { return slices.Contains(mr.Flags, flag) }
	failed := mr.Result == schemas.ResultFailed
	if *milestone != "" && !has("no_rollback") && (failed || has("always_rollback")) {
		why := fmt.Sprintf("%s failed", mr.Name)
		if !failed {
			why = fmt.Sprintf("%s has always_rollback", mr.Name)
		}
		if err := r.vm.LoadSnapshot(r.ctx, snapshotName); err != nil {
			return fmt.Errorf("rolling back to the snapshot after %s, because %s: %w", *milestone, why, err)
		}
		r.console = r.milestoneConsole // the guest's active console came back too
		r.log.Info("VM rolled back", "to-after", *milestone, "because", why)
		r.carried = append(r.carried, schemas.Step{Kind: "info", Result: schemas.ResultPassed,
			Text: fmt.Sprintf("Snapshot\nLoaded the snapshot taken after %s, because %s", *milestone, why)})
	}
	if failed || !has("milestone") || !r.snapshots {
		return nil
	}
	start := time.Now()
	if err := r.vm.SaveSnapshot(r.ctx, snapshotName); err != nil {
		r.snapshots = false
		r.log.Warn("no VM snapshots in this job: milestone and always_rollback do nothing", "err", err)
		return nil
	}
	*milestone, r.milestoneConsole = mr.Name, r.console
	r.log.Info("VM saved as a snapshot", "after", mr.Name, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func (r *runner) runModule(m *testModule) schemas.ModuleResult {
	start := time.Now()
	r.module = &schemas.ModuleResult{Name: m.name, Result: schemas.ResultPassed, Details: r.carried}
	r.carried = nil
	r.shots = 0
	if _, err := r.bus.Append(r.ctx, r.job, schemas.ModuleStarted{Module: m.name}); err != nil {
		r.module.Result, r.module.Reason = schemas.ResultIncomplete, err.Error()
		return *r.module
	}
	r.log.Info("module started", "module", m.name)
	r.dev.current.Store(&m.name)
	if r.dev.pauseAtModule(m.name) {
		if _, err := r.hold(schemas.PausedAtModule, "at the start of "+m.name); err != nil {
			r.module.Result, r.module.Reason = schemas.ResultIncomplete, err.Error()
			r.finishModule(start)
			return *r.module
		}
	}
	thread, stop := newThread(r.ctx, m.file, moduleSteps, func(_ *starlark.Thread, msg string) { r.log.Info("test output", "module", m.name, "msg", msg) })
	err := r.callRun(thread, m)
	stop()
	var tf *testFailure
	var inc *errIncomplete
	switch {
	case err == nil:
	case r.ctx.Err() != nil:
		r.module.Result, r.module.Reason = schemas.ResultIncomplete, "stopped: "+context.Cause(r.ctx).Error()
	case thread.ExecutionSteps() >= moduleSteps:
		r.module.Result, r.module.Reason = schemas.ResultFailed, fmt.Sprintf("the module did not end within %d steps (a loop that never waits?): %s", moduleSteps, starlarkError(err))
	case errors.As(err, &inc):
		r.module.Result, r.module.Reason = schemas.ResultIncomplete, inc.Error()
	case errors.As(err, &tf):
		r.module.Result, r.module.Reason = schemas.ResultFailed, tf.msg+" (at "+position(err)+")"
	default:
		// An error in the test code itself: fail() or a Starlark runtime error.
		r.module.Result, r.module.Reason = schemas.ResultFailed, starlarkError(err)
	}
	r.finishModule(start)
	return *r.module
}

// finishModule records the module's result.
func (r *runner) finishModule(start time.Time) {
	r.module.Duration = time.Since(start).Round(time.Millisecond)
	r.log.Info("module finished", "module", r.module.Name, "result", r.module.Result, "reason", r.module.Reason)
	if _, err := r.bus.Append(context.WithoutCancel(r.ctx), r.job, schemas.ModuleFinished{ModuleResult: *r.module}); err != nil {
		r.log.Error("module result not recorded", "module", r.module.Name, "err", err)
	}
}

func (r *runner) callRun(thread *starlark.Thread, m *testModule) error {
	globals, err := m.prog.Init(thread, r.predeclared())
	if err != nil {
		return err
	}
	if r.module.Flags, err = testFlags(thread, globals, m.file); err != nil {
		return err
	}
	run, ok := globals["run"].(starlark.Callable)
	if !ok {
		return fmt.Errorf("%s defines no run() function", m.file)
	}
	_, err = starlark.Call(thread, run, nil, nil)
	return err
}

// testFlags calls a module's test_flags(), which returns a dict such as
// {"fatal": True}, and gives the flags set.
func testFlags(thread *starlark.Thread, globals starlark.StringDict, file string) ([]string, error) {
	fn, ok := globals["test_flags"].(starlark.Callable)
	if !ok {
		return nil, nil
	}
	v, err := starlark.Call(thread, fn, nil, nil)
	if err != nil {
		return nil, err
	}
	d, ok := v.(*starlark.Dict)
	if !ok {
		return nil, fmt.Errorf("%s: test_flags() must return a dict such as {\"fatal\": True}, not %s", file, v.Type())
	}
	var flags []string
	for _, item := range d.Items() {
		name, ok := starlark.AsString(item[0])
		if !ok || !slices.Contains(moduleFlags, name) {
			return nil, fmt.Errorf("%s: test_flags(): unknown flag %s (%s)", file, item[0], strings.Join(moduleFlags, ", "))
		}
		if item[1].Truth() {
			flags = append(flags, name)
		}
	}
	slices.Sort(flags)
	return flags, nil
}

// position is file:line of the innermost test code frame of an error.
func position(err error) string {
	var ee *starlark.EvalError
	if !errors.As(err, &ee) || len(ee.CallStack) == 0 {
		return "?"
	}
	for i := len(ee.CallStack) - 1; i >= 0; i-- {
		if pos := ee.CallStack[i].Pos; pos.IsValid() && pos.Filename() != "<builtin>" {
			return pos.String()
		}
	}
	return "?"
}

// timeout is a testapi timeout argument in seconds, scaled by TIMEOUT_SCALE.
func (r *runner) timeout(arg starlark.Value, def float64) time.Duration {
	return time.Duration(float64(seconds(arg, def)) * r.scale)
}

// seconds reads a number of seconds from a Starlark int or float.
func seconds(arg starlark.Value, def float64) time.Duration {
	secs := def
	switch v := arg.(type) {
	case starlark.Int:
		if i, ok := v.Int64(); ok {
			secs = float64(i)
		}
	case starlark.Float:
		secs = float64(v)
	}
	return time.Duration(secs * float64(time.Second))
}

// tagsArg accepts a tag or a list of tags, like openQA's mustmatch.
func tagsArg(v starlark.Value) ([]string, error) {
	switch v := v.(type) {
	case starlark.String:
		return []string{string(v)}, nil
	case *starlark.List:
		var out []string
		for i := 0; i < v.Len(); i++ {
			s, ok := v.Index(i).(starlark.String)
			if !ok {
				return nil, fmt.Errorf("tags must be strings, got %s", v.Index(i).Type())
			}
			out = append(out, string(s))
		}
		return out, nil
	}
	return nil, fmt.Errorf("tags must be a string or a list of strings, got %s", v.Type())
}

// tagsText writes tags as a test wrote them: "tag" or ["a", "b"].
func tagsText(tags []string) string {
	if len(tags) == 1 {
		return strconv.Quote(tags[0])
	}
	quoted := make([]string, len(tags))
	for i, t := range tags {
		quoted[i] = strconv.Quote(t)
	}
	return "[" + strings.Join(quoted, ", ") + "]"
}

func (r *runner) assertScreen(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var mustmatch, timeout starlark.Value = nil, starlark.MakeInt(30)
	if err := starlark.UnpackArgs("assert_screen", args, kwargs, "mustmatch", &mustmatch, "timeout?", &timeout, "no_wait?", &r.noWait); err != nil {
		return nil, err
	}
	defer func() { r.noWait = false }()
	tags, err := tagsArg(mustmatch)
	if err != nil {
		return nil, fmt.Errorf("assert_screen: %w", err)
	}
	res, err := r.screenCheck("assert_screen", tags, r.timeout(timeout, 30))
	if err != nil {
		return nil, err
	}
	if !res.Matched {
		return nil, failf("%s", describeMiss("assert_screen", tags, res))
	}
	return starlark.String(res.Best.Needle), nil
}

func (r *runner) checkScreen(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var mustmatch, timeout starlark.Value = nil, starlark.MakeInt(0)
	if err := starlark.UnpackArgs("check_screen", args, kwargs, "mustmatch", &mustmatch, "timeout?", &timeout, "no_wait?", &r.noWait); err != nil {
		return nil, err
	}
	defer func() { r.noWait = false }()
	tags, err := tagsArg(mustmatch)
	if err != nil {
		return nil, fmt.Errorf("check_screen: %w", err)
	}
	res, err := r.screenCheck("check_screen", tags, r.timeout(timeout, 0))
	if err != nil {
		return nil, err
	}
	return starlark.Bool(res.Matched), nil
}

func describeMiss(fn string, tags []string, res schemas.MatchResolved) string {
	msg := fmt.Sprintf("%s: no candidate needle with tag(s) %s matched", fn, tagsText(tags))
	if res.Best != nil {
		worst := 1.0
		for _, a := range res.Best.Areas {
			worst = min(worst, a.Similarity)
		}
		msg += fmt.Sprintf(" (closest: %s at %.0f%%)", res.Best.Needle, worst*100)
	}
	return msg
}

// waitForScreen polls the screen until a needle with one of the tags
// matches or the timeout passes. Like os-autoinst it searches near each
// area first and the whole screen every five seconds and at the end.
func (r *runner) waitForScreen(fn string, tags []string, timeout time.Duration) (schemas.MatchResolved, error) {
	candidates := r.needles.withTags(tags)
	if len(candidates) == 0 {
		return schemas.MatchResolved{}, failf("%s: no needle in NEEDLES_DIR has tag(s) %s", fn, tagsText(tags))
	}
	refs, err := r.needles.publish(r.ctx, r.bus, candidates)
	if err != nil {
		return schemas.MatchResolved{}, incomplete(err)
	}
	deadline := time.Now().Add(timeout)
	var last []byte
	var lastFull time.Time
	var res schemas.MatchResolved
	for {
		screen, err := r.vm.Screendump(r.ctx)
		if err != nil {
			return res, incomplete(fmt.Errorf("%s: screendump: %w", fn, err))
		}
		now := time.Now()
		atEnd := !now.Before(deadline)
		ratio := schemas.AssertScreenRatio
		if atEnd || now.Sub(lastFull) >= 5*time.Second {
			ratio, lastFull = 1, now
		}
		r.lastScreen = screen
		if !bytes.Equal(screen, last) || ratio == 1 {
			last = screen
			mctx, cancel := context.WithTimeout(r.ctx, r.matchTimeout)
			res, err = r.matcher.match(mctx, screen, tags, refs, ratio)
			cancel()
			if err != nil {
				return res, incomplete(fmt.Errorf("%s: %w", fn, err))
			}
			if res.Error != "" {
				return res, incomplete(fmt.Errorf("%s: matcher: %s", fn, res.Error))
			}
			if res.Matched {
				r.recordMatch(fn, tags, screen, res, true)
				if i := slices.IndexFunc(candidates, func(n schemas.NeedleFile) bool { return n.Name == res.Best.Needle }); i >= 0 {
					r.workaroundMatched(candidates[i])
					r.matched = &lastMatch{needle: candidates[i], areas: res.Best.Areas}
				}
				return res, nil
			}
		}
		if atEnd {
			r.recordMatch(fn, tags, screen, res, false)
			return res, nil
		}
		interval := 250 * time.Millisecond
		if r.noWait {
			interval = 20 * time.Millisecond // os-autoinst's no_wait: look again at once
		}
		if err := r.pause(min(interval, time.Until(deadline))); err != nil {
			return res, err
		}
	}
}

// pause waits a little between screen polls, ending early when the job
// stops or the VM dies.
func (r *runner) pause(d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-r.ctx.Done():
		return incomplete(r.ctx.Err())
	case <-r.vm.Done():
		return incomplete(fmt.Errorf("QEMU exited: %v", r.vm.Err()))
	}
}

func (r *runner) recordMatch(fn string, tags []string, screen []byte, res schemas.MatchResolved, ok bool) {
	if r.perl {
		return
	}
	step := schemas.Step{Kind: "match", Text: fn, Tags: tags, Result: schemas.ResultFailed, Screenshot: r.saveScreen(screen)}
	if ok {
		step.Result = schemas.ResultPassed
	}
	if res.Best != nil {
		step.Needle, step.Areas = res.Best.Needle, res.Best.Areas
		step.Similarity = 1
		for _, a := range res.Best.Areas {
			step.Similarity = min(step.Similarity, a.Similarity)
		}
	}
	if !ok {
		step.Candidates = slices.Clone(res.Candidates[:min(len(res.Candidates), 3)])
	}
	r.needles.hashSteps(&step)
	r.module.Details = append(r.module.Details, step)
}

// saveScreen writes a screenshot into the job's results and returns its name.
func (r *runner) saveScreen(png []byte) string {
	r.shots++
	name := fmt.Sprintf("%s-%d.png", r.module.Name, r.shots)
	if r.perl {
		// The test side names its screenshots <module>-<n>.png itself.
		name = fmt.Sprintf("%s-jetqa-%d.png", r.module.Name, r.shots)
	}
	if err := os.WriteFile(filepath.Join(r.resultsDir, name), png, 0o644); err != nil {
		r.log.Warn("screenshot not saved", "err", err)
		return ""
	}
	if err := writeThumbnail(png, filepath.Join(r.resultsDir, schemas.ThumbsDir, name)); err != nil {
		r.log.Warn("no thumbnail", "screenshot", name, "err", err)
	}
	return name
}

// send_key(key, wait_screen_change=False): with wait_screen_change, it
// returns once the screen changed (up to 10 s), as os-autoinst's.
func (r *runner) sendKey(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var key string
	var waitChange bool
	if err := starlark.UnpackArgs("send_key", args, kwargs, "key", &key, "wait_screen_change?", &waitChange); err != nil {
		return nil, err
	}
	press := func() error {
		if err := r.pressKey(key); err != nil {
			return fmt.Errorf("send_key(%q): %w", key, err)
		}
		return nil
	}
	if !waitChange || r.onTerminal() {
		return starlark.None, press()
	}
	_, err := r.waitScreenChange(press, r.timeout(starlark.MakeInt(10), 10), 50)
	return starlark.None, err
}

// wait_serial(regexp, timeout=90, expect_not_found=False, no_regex=False):
// the text that matched, or None when nothing did within timeout. With
// expect_not_found, finding it is the failure: None when it appears.
func (r *runner) waitSerial(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var pattern string
	var timeout starlark.Value = starlark.MakeInt(90)
	var notFound, noRegex bool
	if err := starlark.UnpackArgs("wait_serial", args, kwargs, "regexp", &pattern, "timeout?", &timeout,
		"expect_not_found?", &notFound, "no_regex?", &noRegex); err != nil {
		return nil, err
	}
	expr := pattern
	if noRegex {
		expr = regexp.QuoteMeta(pattern)
	}
	re, err := regexp.Compile(expr)
	if err != nil {
		return nil, fmt.Errorf("wait_serial: bad regexp %q: %w", pattern, err)
	}
	wait := r.serialWait
	if r.onTerminal() {
		wait = r.terminalWait
	}
	out, ok, err := wait(re, r.timeout(timeout, 90))
	step := schemas.Step{Kind: "serial", Text: "wait_serial " + pattern, Result: schemas.ResultPassed}
	if err != nil {
		return nil, err
	}
	if notFound {
		// As os-autoinst's: not finding it is the success, and gives the
		// text read meanwhile; finding it gives None.
		step.Text = "wait_serial expecting not to find " + pattern
		if ok {
			step.Result = schemas.ResultFailed
			r.module.Details = append(r.module.Details, step)
			return starlark.None, nil
		}
		r.module.Details = append(r.module.Details, step)
		if r.onTerminal() {
			return starlark.String(r.vm.Virtio().Bytes(r.virtioOffset)), nil
		}
		return starlark.String(r.vm.Serial().Bytes(r.serialOffset)), nil
	}
	if !ok {
		step.Result = schemas.ResultFailed
		r.module.Details = append(r.module.Details, step)
		return starlark.None, nil
	}
	r.module.Details = append(r.module.Details, step)
	return starlark.String(out), nil
}

// serialWait waits for re on the serial output after the last match.
func (r *runner) serialWait(re qemu.Finder, timeout time.Duration) (string, bool, error) {
	return r.waitLog(r.vm.Serial(), &r.serialOffset, re, timeout)
}

// terminalWait waits for re on the serial terminal after its last match.
func (r *runner) terminalWait(re qemu.Finder, timeout time.Duration) (string, bool, error) {
	return r.waitLog(r.vm.Virtio(), &r.virtioOffset, re, timeout)
}

// waitLog waits for re in log after *offset, and moves *offset past the
// match.
func (r *runner) waitLog(log *qemu.SerialLog, offset *int64, re qemu.Finder, timeout time.Duration) (string, bool, error) {
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	defer cancel()
	out, end, err := log.WaitFor(ctx, re, *offset)
	if err != nil {
		if r.ctx.Err() != nil {
			return "", false, incomplete(r.ctx.Err())
		}
		return "", false, nil
	}
	*offset = end
	return out, true, nil
}

// runCommand types cmd on the VM's console followed by a marker echo to the
// serial port, as openQA's script_run does, and returns the exit code.
func (r *runner) runCommand(fn, cmd string, timeout time.Duration) (int, bool, error) {
	marker := "jq" + newID()[:6]
	re := regexp.MustCompile(marker + `-(\d+)-`)
	if err := r.typeRaw(cmd+"; echo "+marker+"-$?- > /dev/ttyS0\n", 0); err != nil {
		return 0, false, fmt.Errorf("%s: %w", fn, err)
	}
	out, ok, err := r.serialWait(re, timeout)
	if err != nil || !ok {
		return 0, ok, err
	}
	var code int
	fmt.Sscanf(re.FindStringSubmatch(out)[1], "%d", &code)
	return code, true, nil
}

// script_run(cmd, timeout=90): the exit status of cmd. A command that
// gives none within timeout fails the test, as os-autoinst's; timeout=0
// types it and returns None at once.
func (r *runner) scriptRun(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var cmd string
	var timeout starlark.Value = starlark.MakeInt(90)
	if err := starlark.UnpackArgs("script_run", args, kwargs, "cmd", &cmd, "timeout?", &timeout); err != nil {
		return nil, err
	}
	if seconds(timeout, 90) == 0 {
		if err := r.typeRaw(cmd+"\n", 0); err != nil {
			return nil, fmt.Errorf("script_run: %w", err)
		}
		r.module.Details = append(r.module.Details, schemas.Step{Kind: "serial", Text: fmt.Sprintf("script_run %q: not waited for (timeout=0)", cmd), Result: schemas.ResultPassed})
		return starlark.None, nil
	}
	code, ok, err := r.runCommand("script_run", cmd, r.timeout(timeout, 90))
	switch {
	case err != nil:
		return nil, err
	case !ok:
		r.module.Details = append(r.module.Details, schemas.Step{Kind: "serial", Text: fmt.Sprintf("script_run %q: no exit status within %s", cmd, r.timeout(timeout, 90)), Result: schemas.ResultFailed})
		return nil, failf("script_run %q: command timed out after %s", cmd, r.timeout(timeout, 90))
	}
	r.module.Details = append(r.module.Details, schemas.Step{Kind: "serial", Text: fmt.Sprintf("script_run %q: exit %d", cmd, code), Result: schemas.ResultPassed})
	return starlark.MakeInt(code), nil
}

func (r *runner) assertScriptRun(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var cmd, failMessage string
	var timeout starlark.Value = starlark.MakeInt(90)
	if err := starlark.UnpackArgs("assert_script_run", args, kwargs, "cmd", &cmd, "timeout?", &timeout, "fail_message?", &failMessage); err != nil {
		return nil, err
	}
	code, ok, err := r.runCommand("assert_script_run", cmd, r.timeout(timeout, 90))
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return nil, failf("assert_script_run %q: no exit status within %s %s", cmd, r.timeout(timeout, 90), failMessage)
	case code != 0:
		return nil, failf("assert_script_run %q: exit status %d %s", cmd, code, failMessage)
	}
	r.module.Details = append(r.module.Details, schemas.Step{Kind: "serial", Text: fmt.Sprintf("assert_script_run %q", cmd), Result: schemas.ResultPassed})
	return starlark.None, nil
}

func (r *runner) saveScreenshot(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	if err := starlark.UnpackArgs("save_screenshot", args, kwargs); err != nil {
		return nil, err
	}
	png, err := r.vm.Screendump(r.ctx)
	if err != nil {
		return nil, incomplete(fmt.Errorf("save_screenshot: %w", err))
	}
	r.module.Details = append(r.module.Details, schemas.Step{Kind: "screenshot", Screenshot: r.saveScreen(png)})
	return starlark.None, nil
}

// waitStillScreen waits until the screen has not changed for stilltime
// seconds; it returns False when that does not happen within timeout.
// os-autoinst's similarity_level: a screen whose PSNR against the one
// before is at least this, in dB, counts as the same.
func (r *runner) waitStillScreen(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var still, timeout, similarity starlark.Value = starlark.MakeInt(7), starlark.MakeInt(30), starlark.MakeInt(47)
	if err := starlark.UnpackArgs("wait_still_screen", args, kwargs, "stilltime?", &still, "timeout?", &timeout, "similarity_level?", &similarity); err != nil {
		return nil, err
	}
	// How long the screen must stay still is not scaled by TIMEOUT_SCALE;
	// only how long to wait for it is.
	still2, err := r.stillScreen(seconds(still, 7), r.timeout(timeout, 30), number(similarity, 47))
	return starlark.Bool(still2), err
}

// stillScreen waits until the screen has not changed for stillFor: each
// screen is within similarity dB PSNR of the one that started the wait.
func (r *runner) stillScreen(stillFor, timeout time.Duration, similarity float64) (bool, error) {
	deadline := time.Now().Add(timeout)
	var last []byte
	since := time.Now()
	for time.Now().Before(deadline) {
		screen, err := r.vm.Screendump(r.ctx)
		if err != nil {
			return false, incomplete(fmt.Errorf("wait_still_screen: %w", err))
		}
		same := last != nil
		if same && !bytes.Equal(screen, last) {
			psnr, err := screenPSNR(last, screen)
			if err != nil {
				return false, incomplete(err)
			}
			same = psnr >= similarity
		}
		if !same {
			last, since = screen, time.Now()
		} else if time.Since(since) >= stillFor {
			return true, nil
		}
		if err := r.pause(200 * time.Millisecond); err != nil {
			return false, err
		}
	}
	return false, nil
}

func (r *runner) recordInfo(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var title, output string
	if err := starlark.UnpackArgs("record_info", args, kwargs, "title", &title, "output?", &output); err != nil {
		return nil, err
	}
	r.module.Details = append(r.module.Details, schemas.Step{Kind: "info", Text: strings.TrimSpace(title + "\n" + output)})
	return starlark.None, nil
}

func (r *runner) recordSoftFailure(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var reason string
	if err := starlark.UnpackArgs("record_soft_failure", args, kwargs, "reason", &reason); err != nil {
		return nil, err
	}
	r.softFailure(reason)
	return starlark.None, nil
}

// softFailure marks the module softfailed (unless it failed) with a reason.
func (r *runner) softFailure(reason string) {
	r.module.Details = append(r.module.Details, schemas.Step{Kind: "info", Text: "soft failure: " + reason, Result: schemas.ResultSoftfailed})
	if r.module.Result == schemas.ResultPassed {
		r.module.Result = schemas.ResultSoftfailed
	}
}

// workaroundMatched records a soft failure, as os-autoinst does, when the
// needle found has the workaround property: it matches a screen known to
// be wrong, and the property's value (a bug reference, say) tells why.
func (r *runner) workaroundMatched(n schemas.NeedleFile) {
	for _, p := range n.Properties {
		if p.Name == "workaround" {
			reason := fmt.Sprintf("needle %s matched, which has the workaround property", n.Name)
			if p.Value != "" {
				reason += ": " + p.Value
			}
			r.softFailure(reason)
			return
		}
	}
}

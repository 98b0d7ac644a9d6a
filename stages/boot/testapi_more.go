package boot

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"image"
	"image/png"
	"math"
	"os"
	"path"
	"regexp"
	"strings"
	"time"

	"go.starlark.net/starlark"

	"jetqa/schemas"
	"jetqa/stages/boot/qemu"
)

// callbackFunc is a testapi function that may call back into Starlark
// (wait_screen_change's code block, validate_script_output's check).
type callbackFunc func(thread *starlark.Thread, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error)

// withThread is builtin for a function that needs the calling thread.
func (r *runner) withThread(name string, fn callbackFunc) *starlark.Builtin {
	var thread *starlark.Thread
	b := r.builtin(name, func(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		return fn(thread, args, kwargs)
	})
	return starlark.NewBuiltin(name, func(th *starlark.Thread, self *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		thread = th
		return b.CallInternal(th, args, kwargs)
	})
}

// screenPSNR is the peak signal-to-noise ratio of two screendumps in dB,
// as os-autoinst compares screens: 1e6 for identical ones, lower the more
// they differ; screens of different sizes are 0.
func screenPSNR(a, b []byte) (float64, error) {
	if bytes.Equal(a, b) {
		return 1e6, nil
	}
	ia, err := png.Decode(bytes.NewReader(a))
	if err != nil {
		return 0, fmt.Errorf("screendump: %w", err)
	}
	ib, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		return 0, fmt.Errorf("screendump: %w", err)
	}
	if ia.Bounds() != ib.Bounds() {
		return 0, nil
	}
	var sum float64
	bounds := ia.Bounds()
	for y := bounds.Min.Y; y < bounds.Max.Y; y++ {
		for x := bounds.Min.X; x < bounds.Max.X; x++ {
			sum += pixelDistance(ia, ib, x, y)
		}
	}
	mse := sum / float64(3*bounds.Dx()*bounds.Dy())
	if mse == 0 {
		return 1e6, nil
	}
	return 10 * math.Log10(255*255/mse), nil
}

func pixelDistance(a, b image.Image, x, y int) float64 {
	r1, g1, b1, _ := a.At(x, y).RGBA()
	r2, g2, b2, _ := b.At(x, y).RGBA()
	d := func(p, q uint32) float64 { v := float64(p>>8) - float64(q>>8); return v * v }
	return d(r1, r2) + d(g1, g2) + d(b1, b2)
}

// waitScreenChange takes the screen, runs do, and waits until the screen
// differs from it (a PSNR below similarity dB) or timeout passes.
func (r *runner) waitScreenChange(do func() error, timeout time.Duration, similarity float64) (bool, error) {
	ref, err := r.vm.Screendump(r.ctx)
	if err != nil {
		return false, incomplete(fmt.Errorf("wait_screen_change: %w", err))
	}
	if do != nil {
		if err := do(); err != nil {
			return false, err
		}
	}
	changed, screen, _, err := r.screenChanged(ref, timeout, similarity)
	if err == nil && !changed {
		r.module.Details = append(r.module.Details, schemas.Step{Kind: "screenshot", Text: fmt.Sprintf("wait_screen_change: no change within %s", timeout), Screenshot: r.saveScreen(screen)})
	}
	return changed, err
}

// screenChanged waits until the screen differs from ref (a PSNR below
// similarity dB) or timeout passes, and gives the last screen and its
// PSNR against ref.
func (r *runner) screenChanged(ref []byte, timeout time.Duration, similarity float64) (changed bool, screen []byte, psnr float64, err error) {
	deadline := time.Now().Add(timeout)
	for {
		if screen, err = r.vm.Screendump(r.ctx); err != nil {
			return false, nil, 0, incomplete(fmt.Errorf("wait_screen_change: %w", err))
		}
		if psnr, err = screenPSNR(ref, screen); err != nil {
			return false, nil, 0, incomplete(err)
		}
		if psnr < similarity {
			return true, screen, psnr, nil
		}
		if !time.Now().Before(deadline) {
			return false, screen, psnr, nil
		}
		if err := r.pause(min(100*time.Millisecond, time.Until(deadline))); err != nil {
			return false, nil, 0, err
		}
	}
}

// wait_screen_change(code=None, timeout=10, similarity_level=50): True
// once the screen changed after code ran.
func (r *runner) waitScreenChangeFn(thread *starlark.Thread, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var code starlark.Value = starlark.None
	var timeout, similarity starlark.Value = starlark.MakeInt(10), starlark.MakeInt(50)
	if err := starlark.UnpackArgs("wait_screen_change", args, kwargs, "code?", &code, "timeout?", &timeout, "similarity_level?", &similarity); err != nil {
		return nil, err
	}
	var do func() error
	if fn, ok := code.(starlark.Callable); ok {
		do = func() error { _, err := starlark.Call(thread, fn, nil, nil); return err }
	} else if code != starlark.None {
		return nil, fmt.Errorf("wait_screen_change: code must be a function, got %s", code.Type())
	}
	changed, err := r.waitScreenChange(do, r.timeout(timeout, 10), number(similarity, 50))
	return starlark.Bool(changed), err
}

func number(v starlark.Value, def float64) float64 {
	if f, ok := starlark.AsFloat(v); ok {
		return f
	}
	return def
}

// typingDelay is the pause between keys for type_string's max_interval,
// as os-autoinst slows typing below its default of 250.
func typingDelay(maxInterval int) time.Duration {
	if maxInterval <= 0 || maxInterval >= 250 {
		return 0
	}
	return time.Duration(float64(time.Second) / math.Sqrt(float64(maxInterval)))
}

// type_string(string, max_interval=250, wait_screen_change=0,
// wait_still_screen=0, timeout=30, similarity_level=47, secret=False).
// With wait_screen_change=N the string is typed N characters at a time,
// each waiting for the screen to change; a secret is never logged or
// recorded.
func (r *runner) typeString(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var s string
	maxInterval, waitChange := 250, 0
	var waitStill, timeout, similarity starlark.Value = starlark.MakeInt(0), starlark.MakeInt(30), starlark.MakeInt(47)
	var secret bool
	if err := starlark.UnpackArgs("type_string", args, kwargs, "string", &s, "max_interval?", &maxInterval,
		"wait_screen_change?", &waitChange, "wait_still_screen?", &waitStill, "timeout?", &timeout,
		"similarity_level?", &similarity, "secret?", &secret); err != nil {
		return nil, err
	}
	if maxInterval < 1 || maxInterval > 250 {
		return nil, fmt.Errorf("type_string: max_interval=%d: give 1 (slowest) to 250 (fastest)", maxInterval)
	}
	if err := r.typeText(s, maxInterval, waitChange, number(similarity, 47), r.timeout(timeout, 30)); err != nil {
		return nil, err
	}
	if !secret {
		r.log.Info("typed", "module", r.module.Name, "chars", len(s))
	}
	if number(waitStill, 0) > 0 {
		if _, err := r.stillScreen(seconds(waitStill, 0), r.timeout(timeout, 30), number(similarity, 47)); err != nil {
			return nil, err
		}
	}
	return starlark.None, nil
}

// typeText types s, in pieces of chunk characters that each must change
// the screen when chunk > 0. Errors never quote s.
func (r *runner) typeText(s string, maxInterval, chunk int, similarity float64, timeout time.Duration) error {
	delay := typingDelay(maxInterval)
	if chunk <= 0 || r.onTerminal() { // a terminal shows no screen to change
		chunk = len(s)
	}
	runes := []rune(s)
	for start := 0; start < len(runes); start += chunk {
		piece := string(runes[start:min(start+chunk, len(runes))])
		typePiece := func() error {
			if err := r.typeRaw(piece, delay); err != nil {
				return fmt.Errorf("type_string: %w", err)
			}
			return nil
		}
		if chunk >= len(runes) {
			if err := typePiece(); err != nil {
				return err
			}
			continue
		}
		if _, err := r.waitScreenChange(typePiece, timeout, similarity); err != nil {
			return err
		}
	}
	return nil
}

// enter_cmd(string, …): type_string with a newline.
func (r *runner) enterCmd(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	if len(args) > 0 {
		if s, ok := args[0].(starlark.String); ok {
			args = append(starlark.Tuple{s + "\n"}, args[1:]...)
		}
	}
	return r.typeString(args, kwargs)
}

// hold_key(key) and release_key(key).
func (r *runner) holdKey(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var key string
	if err := starlark.UnpackArgs("hold_key", args, kwargs, "key", &key); err != nil {
		return nil, err
	}
	return starlark.None, r.vm.HoldKey(r.ctx, key)
}

func (r *runner) releaseKey(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var key string
	if err := starlark.UnpackArgs("release_key", args, kwargs, "key", &key); err != nil {
		return nil, err
	}
	return starlark.None, r.vm.ReleaseKey(r.ctx, key)
}

// send_key_until_needlematch(tag, key, counter=20, timeout=1): press key
// until a needle with tag matches; fail after counter presses.
func (r *runner) sendKeyUntilNeedlematch(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var tag starlark.Value
	var key string
	counter := 20
	var timeout starlark.Value = starlark.MakeInt(1)
	if err := starlark.UnpackArgs("send_key_until_needlematch", args, kwargs, "tag", &tag, "key", &key, "counter?", &counter, "timeout?", &timeout); err != nil {
		return nil, err
	}
	tags, err := tagsArg(tag)
	if err != nil {
		return nil, fmt.Errorf("send_key_until_needlematch: %w", err)
	}
	wait := time.Duration(0)
	for {
		res, err := r.waitForScreen("send_key_until_needlematch", tags, wait)
		if err != nil || res.Matched {
			return starlark.None, err
		}
		if _, err := r.waitScreenChange(func() error { return r.pressKey(key) }, r.timeout(starlark.MakeInt(10), 10), 50); err != nil {
			return nil, err
		}
		if counter--; counter <= 0 {
			res, err := r.waitForScreen("send_key_until_needlematch", tags, r.timeout(starlark.MakeInt(1), 1))
			if err != nil {
				return nil, err
			}
			if !res.Matched {
				return nil, failf("%s", describeMiss("send_key_until_needlematch", tags, res))
			}
			return starlark.None, nil
		}
		wait = r.timeout(timeout, 1)
	}
}

// get_required_var(name): the setting, or the test fails naming it.
func (r *runner) getRequiredVar(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name string
	if err := starlark.UnpackArgs("get_required_var", args, kwargs, "name", &name); err != nil {
		return nil, err
	}
	v, ok := r.settings[name]
	if !ok {
		return nil, failf("get_required_var: the job has no setting %s", name)
	}
	return starlark.String(v), nil
}

// check_var(name, value): whether the setting has that value.
func (r *runner) checkVar(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name, value string
	if err := starlark.UnpackArgs("check_var", args, kwargs, "name", &name, "value", &value); err != nil {
		return nil, err
	}
	v, ok := r.settings[name]
	return starlark.Bool(ok && v == value), nil
}

// set_var(name, value): later get_var calls of the job see it.
func (r *runner) setVar(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name string
	var value starlark.Value
	if err := starlark.UnpackArgs("set_var", args, kwargs, "name", &name, "value", &value); err != nil {
		return nil, err
	}
	if value == starlark.None {
		delete(r.settings, name)
		return starlark.None, nil
	}
	if s, ok := value.(starlark.String); ok {
		r.settings[name] = string(s)
	} else {
		r.settings[name] = value.String()
	}
	return starlark.None, nil
}

// diag(message): a line in the job's log.
func (r *runner) diag(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var msg string
	if err := starlark.UnpackArgs("diag", args, kwargs, "message", &msg); err != nil {
		return nil, err
	}
	r.log.Info("diag", "module", r.module.Name, "msg", msg)
	return starlark.None, nil
}

// script_output(cmd, timeout=90, proceed_on_failure=False): what cmd
// printed (stdout and stderr), read through the serial port; a non-zero
// exit status fails the test unless proceed_on_failure.
func (r *runner) scriptOutput(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var cmd string
	var timeout starlark.Value = starlark.MakeInt(90)
	var proceed bool
	if err := starlark.UnpackArgs("script_output", args, kwargs, "cmd", &cmd, "timeout?", &timeout, "proceed_on_failure?", &proceed); err != nil {
		return nil, err
	}
	out, err := r.commandOutput("script_output", cmd, r.timeout(timeout, 90), proceed)
	if err != nil {
		return nil, err
	}
	return starlark.String(out), nil
}

// commandOutput is rawOutput recorded as a step, failing the test on a
// non-zero exit status unless proceed.
func (r *runner) commandOutput(fn, cmd string, timeout time.Duration, proceed bool) (string, error) {
	output, code, err := r.rawOutput(fn, cmd, timeout)
	if err != nil {
		return "", err
	}
	if code != "0" && !proceed {
		return "", failf("%s %q: exit status %s; output:\n%s", fn, cmd, code, output)
	}
	r.module.Details = append(r.module.Details, schemas.Step{Kind: "serial", Text: fmt.Sprintf("%s %q: exit %s\n%s", fn, cmd, code, output), Result: schemas.ResultPassed})
	return output, nil
}

// rawOutput runs cmd with its output sent to the serial port between two
// markers, as os-autoinst's distribution script_output does, and gives
// the output and exit status.
func (r *runner) rawOutput(fn, cmd string, timeout time.Duration) (output, code string, err error) {
	marker := "jq" + newID()[:6]
	// cmd runs in a subshell of its own, so an exit in it ends only that.
	typed := fmt.Sprintf("(echo %s-start; (%s); echo %s-$?-) > /dev/ttyS0 2>&1\n", marker, cmd, marker)
	if err := r.typeRaw(typed, 0); err != nil {
		return "", "", fmt.Errorf("%s: %w", fn, err)
	}
	re := regexp.MustCompile(`(?s)` + marker + `-start\r?\n(.*?)` + marker + `-(\d+)-`)
	out, ok, err := r.serialWait(re, timeout)
	if err != nil {
		return "", "", err
	}
	if !ok {
		return "", "", failf("%s %q: no output and exit status within %s", fn, cmd, timeout)
	}
	m := re.FindStringSubmatch(out)
	return strings.TrimRight(strings.ReplaceAll(m[1], "\r\n", "\n"), "\n"), m[2], nil
}

// upload_logs(file, failok=False, log_name=None, timeout=90): a file of
// the guest among the job's results, in ulogs/ as openQA's. It crosses
// the virtio-serial upload port (else the serial port) base64-encoded,
// so the guest needs no network; the name is log_name or the file's,
// prefixed with the module's, as openQA's ulogs.
func (r *runner) uploadLogs(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var file, logName string
	var failOK bool
	var timeout starlark.Value = starlark.MakeInt(90)
	if err := starlark.UnpackArgs("upload_logs", args, kwargs, "file", &file, "failok?", &failOK, "log_name?", &logName, "timeout?", &timeout); err != nil {
		return nil, err
	}
	if strings.ContainsAny(file, "'\n") {
		return nil, fmt.Errorf("upload_logs: file %q: a path may not hold a quote or a newline", file)
	}
	data, err := r.guestFile("upload_logs", file, r.timeout(timeout, 90))
	if err != nil {
		var tf *testFailure
		if failOK && errors.As(err, &tf) {
			r.module.Details = append(r.module.Details, schemas.Step{Kind: "info", Text: err.Error(), Result: schemas.ResultSoftfailed})
			return starlark.None, nil
		}
		return nil, err
	}
	name := cmp.Or(logName, path.Base(file))
	name = r.module.Name + "-" + strings.NewReplacer("/", "_", "\\", "_").Replace(name)
	out, err := ulogFile(r.resultsDir, name)
	if err != nil {
		return nil, incomplete(fmt.Errorf("upload_logs: %w", err))
	}
	if err := os.WriteFile(out, data, 0o644); err != nil {
		return nil, incomplete(fmt.Errorf("upload_logs: %w", err))
	}
	r.module.Details = append(r.module.Details, schemas.Step{Kind: "info", Text: fmt.Sprintf("upload_logs %s: %s, %d bytes", file, name, len(data)), Result: schemas.ResultPassed})
	return starlark.String(name), nil
}

// guestFile reads a file of the guest: on the virtio-serial upload port
// when the guest has it, else in base64 across the serial console (slow:
// some KB/s). file holds no quote or newline.
func (r *runner) guestFile(fn, file string, timeout time.Duration) ([]byte, error) {
	if r.vm.HasUploadPort() {
		id := "jq" + newID()[:8]
		// In a subshell: exit 125 says the guest has no such port.
		cmd := fmt.Sprintf(`(p=$(grep -lx %s /sys/class/virtio-ports/*/name 2>/dev/null) || exit 125; d=${p%%/name}; `+
			`{ echo "jetqa-upload %s"; base64 '%s' && echo "jetqa-upload-end %s"; } > /dev/${d##*/})`, qemu.UploadPortName, id, file, id)
		code, ok, err := r.runCommand(fn, cmd, timeout)
		switch {
		case err != nil:
			return nil, err
		case !ok:
			return nil, failf("%s %s: no exit status within %s", fn, file, timeout)
		case code == 0:
			ctx, cancel := context.WithTimeout(r.ctx, timeout)
			defer cancel()
			data, err := r.vm.WaitUpload(ctx, id)
			if err != nil {
				return nil, failf("%s %s: %v", fn, file, err)
			}
			return data, nil
		case code != 125:
			return nil, failf("%s %s: the guest could not read it (exit status %d)", fn, file, code)
		}
		r.log.Info("the guest has no upload port: the file crosses the serial console", "file", file)
	}
	encoded, code, err := r.rawOutput(fn, "base64 '"+file+"'", timeout)
	if err == nil && code != "0" {
		err = failf("%s %s: the guest could not read it (exit status %s)", fn, file, code)
	}
	if err != nil {
		return nil, err
	}
	data, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(encoded), ""))
	if err != nil {
		return nil, failf("%s %s: what crossed the serial port is not base64: %v", fn, file, err)
	}
	return data, nil
}

// validate_script_output(cmd, check, timeout=90, title=…,
// fail_message="output not validating"): check is a regular expression
// the output must contain a match of, or a function of the output that
// returns True.
func (r *runner) validateScriptOutput(thread *starlark.Thread, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var cmd string
	var check starlark.Value
	var timeout starlark.Value = starlark.MakeInt(90)
	title, failMessage := "validate_script_output", "output not validating"
	var proceed bool
	if err := starlark.UnpackArgs("validate_script_output", args, kwargs, "cmd", &cmd, "check", &check, "timeout?", &timeout,
		"title?", &title, "fail_message?", &failMessage, "proceed_on_failure?", &proceed); err != nil {
		return nil, err
	}
	out, err := r.commandOutput("validate_script_output", cmd, r.timeout(timeout, 90), proceed)
	if err != nil {
		return nil, err
	}
	var ok bool
	switch c := check.(type) {
	case starlark.String:
		re, err := regexp.Compile(string(c))
		if err != nil {
			return nil, fmt.Errorf("validate_script_output: bad regexp %q: %w", string(c), err)
		}
		ok = re.MatchString(out)
	case starlark.Callable:
		v, err := starlark.Call(thread, c, starlark.Tuple{starlark.String(out)}, nil)
		if err != nil {
			return nil, err
		}
		ok = bool(v.Truth())
	default:
		return nil, fmt.Errorf("validate_script_output: check must be a regular expression or a function, got %s", check.Type())
	}
	if !ok {
		return nil, failf("%s: %s: %q printed:\n%s", title, failMessage, cmd, out)
	}
	return starlark.None, nil
}

// power(action): "acpi", "reset" or "off".
func (r *runner) power(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var action string
	if err := starlark.UnpackArgs("power", args, kwargs, "action", &action); err != nil {
		return nil, err
	}
	return starlark.None, r.vm.Power(r.ctx, action)
}

// eject_cd(): open the CD-ROM drive.
func (r *runner) ejectCD(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	if err := starlark.UnpackArgs("eject_cd", args, kwargs); err != nil {
		return nil, err
	}
	return starlark.None, r.vm.EjectCD(r.ctx)
}

// check_shutdown(timeout=60): whether the machine powered off within
// timeout; assert_shutdown fails when it did not.
func (r *runner) checkShutdown(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var timeout starlark.Value = starlark.MakeInt(60)
	if err := starlark.UnpackArgs("check_shutdown", args, kwargs, "timeout?", &timeout); err != nil {
		return nil, err
	}
	off, err := r.waitShutdown(r.timeout(timeout, 60))
	return starlark.Bool(off), err
}

func (r *runner) assertShutdown(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var timeout starlark.Value = starlark.MakeInt(60)
	if err := starlark.UnpackArgs("assert_shutdown", args, kwargs, "timeout?", &timeout); err != nil {
		return nil, err
	}
	off, err := r.waitShutdown(r.timeout(timeout, 60))
	if err == nil && !off {
		return nil, failf("assert_shutdown: the machine did not power off within %s", r.timeout(timeout, 60))
	}
	return starlark.None, err
}

func (r *runner) waitShutdown(timeout time.Duration) (bool, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-r.vm.Done():
		r.poweredOff = true
		return true, nil
	case <-t.C:
		return false, nil
	case <-r.ctx.Done():
		return false, incomplete(r.ctx.Err())
	}
}

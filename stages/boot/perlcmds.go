package boot

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"jetqa/schemas"
	"jetqa/stages/boot/qemu"
)

// perlRun is one job's run of the Perl test side: the worker's half of
// isotovideo's command loop.
type perlRun struct {
	r     *runner
	p     *perlSide
	begin time.Time

	// module is the running module's name; moduleStart when it started,
	// moduleEnd when the test side said it ended (set_current_test with
	// no name), before it wrote its result file.
	module      string
	moduleStart time.Time
	moduleEnd   time.Time
	finished    map[string]bool
	results     []schemas.ModuleResult
	order       []perlTestOrder

	activated map[string]bool // consoles selected once, as os-autoinst's
	reference []byte          // set_reference_screenshot's screen
	lastMiss  string          // why the module's last assert_screen failed
	done      *perlTestsDone
}

type perlTestOrder struct {
	Name   string              `json:"name"`
	Script string              `json:"script"`
	Flags  map[string]perlBool `json:"flags"`
}

type perlTestsDone struct {
	Died      perlBool `json:"died"`
	Completed perlBool `json:"completed"`
}

// perlHandler answers one command; an error ends the job incomplete.
type perlHandler func(pr *perlRun, msg perlMessage) (any, error)

// perlCommands are isotovideo's commands and the backend's (backend_*),
// with os-autoinst's names and arguments.
var perlCommands = map[string]perlHandler{
	"set_current_test":                                (*perlRun).setCurrentTest,
	"tests_done":                                      (*perlRun).testsDone,
	"read_serial":                                     (*perlRun).readSerial,
	"check_screen":                                    (*perlRun).checkScreen,
	"is_configured_to_pause_on_timeout":               (*perlRun).pausesOnTimeout,
	"report_timeout":                                  (*perlRun).reportTimeout,
	"pause_test_execution":                            (*perlRun).pauseTestExecution,
	"set_assert_screen_timeout":                       func(*perlRun, perlMessage) (any, error) { return 1, nil },
	"backend_send_key":                                (*perlRun).sendKey,
	"backend_hold_key":                                (*perlRun).holdKey,
	"backend_release_key":                             (*perlRun).releaseKey,
	"backend_type_string":                             (*perlRun).typeString,
	"backend_wait_serial":                             (*perlRun).waitSerial,
	"backend_is_serial_terminal":                      (*perlRun).isSerialTerminal,
	"backend_select_console":                          (*perlRun).selectConsole,
	"backend_reset_consoles":                          (*perlRun).resetConsoles,
	"backend_reset_console":                           (*perlRun).resetConsole,
	"backend_proxy_console_call":                      (*perlRun).proxyConsoleCall,
	"backend_last_screenshot_data":                    (*perlRun).lastScreenshotData,
	"backend_set_reference_screenshot":                (*perlRun).setReferenceScreenshot,
	"backend_wait_screen_change":                      (*perlRun).waitScreenChange,
	"backend_wait_still_screen":                       (*perlRun).waitStillScreen,
	"backend_mouse_set":                               (*perlRun).mouseSet,
	"backend_mouse_button":                            (*perlRun).mouseButton,
	"backend_mouse_hide":                              (*perlRun).mouseHide,
	"backend_get_last_mouse_set":                      (*perlRun).lastMouseSet,
	"backend_power":                                   (*perlRun).power,
	"backend_is_shutdown":                             (*perlRun).isShutdown,
	"backend_eject_cd":                                (*perlRun).ejectCD,
	"backend_freeze_vm":                               func(pr *perlRun, _ perlMessage) (any, error) { return nil, pr.r.vm.Freeze(pr.r.ctx) },
	"backend_cont_vm":                                 func(pr *perlRun, _ perlMessage) (any, error) { return nil, pr.r.vm.Continue(pr.r.ctx) },
	"backend_switch_network":                          (*perlRun).switchNetwork,
	"backend_save_memory_dump":                        (*perlRun).saveMemoryDump,
	"backend_save_storage_drives":                     (*perlRun).saveStorageDrives,
	"backend_can_handle":                              (*perlRun).canHandle,
	"backend_save_snapshot":                           (*perlRun).saveSnapshot,
	"backend_load_snapshot":                           (*perlRun).loadSnapshot,
	"backend_reload_needles":                          (*perlRun).reloadNeedles,
	"backend_get_wait_still_screen_on_here_doc_input": func(*perlRun, perlMessage) (any, error) { return 0, nil },
	// Serial grabbing and audio belong to backends jetqa does not have;
	// they change nothing a test reads.
	"backend_start_serial_grab": func(*perlRun, perlMessage) (any, error) { return nil, nil },
	"backend_stop_serial_grab":  func(*perlRun, perlMessage) (any, error) { return nil, nil },
	"backend_clear_serial_buffer": func(pr *perlRun, _ perlMessage) (any, error) {
		pr.r.serialOffset = pr.r.vm.Serial().Len()
		return nil, nil
	},
}

// runPerl answers the test side until it is done, and gives the job's
// result from its modules' results, by openQA's rules.
func (r *runner) runPerl(p *perlSide) (result, reason string, modules []schemas.ModuleResult) {
	pr := &perlRun{r: r, p: p, begin: time.Now(), finished: map[string]bool{}, activated: map[string]bool{}}
	r.perl = true
	r.needles.keepOnly(p.schedule.Needles)
	err := p.reply(p.token, 1) // the schedule's answer: "GO"
	for err == nil && pr.done == nil {
		var msg perlMessage
		if msg, err = p.read(r.ctx); err != nil {
			break
		}
		if msg.Cmd != "set_current_test" && msg.Cmd != "tests_done" && r.dev.pauseNow() {
			if _, err = r.hold(schemas.PausedAtCommand, "before "+msg.Cmd); err != nil {
				break
			}
		}
		handle, ok := perlCommands[msg.Cmd]
		if !ok {
			err = fmt.Errorf("the test side asked for %q, which jetqa does not support: see docs/openqa-tests.md", msg.Cmd)
			break
		}
		var ret any
		if ret, err = handle(pr, msg); err != nil {
			break
		}
		switch msg.Cmd {
		case "read_serial":
			err = p.send(ret.(map[string]any), msg.Token)
		case "tests_done":
			// Interface 59 waits for this answer; 34 may be gone already.
			_ = p.reply(msg.Token, ret)
		default:
			err = p.reply(msg.Token, ret)
		}
	}
	if err != nil && r.ctx.Err() != nil {
		err = fmt.Errorf("stopped: %w", context.Cause(r.ctx))
	}
	if pr.module != "" {
		pr.finishModule(err)
	}
	pr.finishRest()
	result, reason = moduleVerdict(pr.results)
	switch {
	case err != nil:
		result, reason = schemas.ResultIncomplete, err.Error()
	case pr.done != nil && bool(pr.done.Died):
		result, reason = schemas.ResultIncomplete, "the test side died outside a module: "+p.lastWords()
	}
	return result, reason, pr.results
}

func (pr *perlRun) args(msg perlMessage, v any) error {
	if err := json.Unmarshal(msg.raw, v); err != nil {
		return fmt.Errorf("%s: %w", msg.Cmd, err)
	}
	return nil
}

// set_current_test {name, full_name}: a module starts; with no name, the
// running one ended (its result file follows).
func (pr *perlRun) setCurrentTest(msg perlMessage) (any, error) {
	var a struct {
		Name     string `json:"name"`
		FullName string `json:"full_name"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	if a.Name == "" {
		pr.moduleEnd = time.Now()
		return 1, nil
	}
	if a.Name == pr.module {
		// The same module again: its post_fail_hook runs.
		r := pr.r
		r.log.Info("post_fail_hook", "module", a.Name)
		return 1, nil
	}
	if pr.module != "" {
		pr.finishModule(nil)
	}
	r := pr.r
	pr.module, pr.moduleStart, pr.moduleEnd, pr.lastMiss = a.Name, time.Now(), time.Time{}, ""
	r.module = &schemas.ModuleResult{Name: a.Name, Result: schemas.ResultPassed}
	r.shots = 0
	r.serialOffset = r.vm.Serial().Len()
	if _, err := r.bus.Append(r.ctx, r.job, schemas.ModuleStarted{Module: a.Name}); err != nil {
		return nil, err
	}
	r.log.Info("module started", "module", a.Name, "script", a.FullName)
	r.dev.current.Store(&a.Name)
	if r.dev.pauseAtModule(a.Name) {
		if _, err := r.hold(schemas.PausedAtModule, "at the start of "+a.Name); err != nil {
			return nil, err
		}
	}
	return 1, nil
}

// tests_done {died, completed}: the test side is done; interface 59 waits
// for this answer, 34 does not.
func (pr *perlRun) testsDone(msg perlMessage) (any, error) {
	var done perlTestsDone
	if err := pr.args(msg, &done); err != nil {
		return nil, err
	}
	pr.done = &done
	return 1, nil
}

// finishModule records the running module's result, read from the result
// file the test side wrote; cause, when set, is why it never finished.
func (pr *perlRun) finishModule(cause error) {
	r := pr.r
	name := pr.module
	pr.module = ""
	pr.finished[name] = true
	mr, err := pr.readResult(name)
	switch {
	case cause != nil:
		mr.Result, mr.Reason = schemas.ResultIncomplete, cause.Error()
	case err != nil:
		mr.Result, mr.Reason = schemas.ResultIncomplete, err.Error()
	}
	end := pr.moduleEnd
	if end.IsZero() {
		end = time.Now()
	}
	mr.Duration = end.Sub(pr.moduleStart).Round(time.Millisecond)
	r.module = &mr
	pr.results = append(pr.results, mr)
	r.log.Info("module finished", "module", name, "result", mr.Result, "reason", mr.Reason)
	if _, err := r.bus.Append(context.WithoutCancel(r.ctx), r.job, schemas.ModuleFinished{ModuleResult: mr}); err != nil {
		r.log.Error("module result not recorded", "module", name, "err", err)
	}
}

// finishRest records the modules that never started: skipped, or, when
// the test side wrote a result for them (SKIPTO), that result.
func (pr *perlRun) finishRest() {
	if pr.order == nil {
		pr.readOrder()
	}
	names := make([]string, 0, len(pr.order))
	for _, t := range pr.order {
		names = append(names, t.Name)
	}
	if len(names) == 0 {
		for _, full := range pr.p.schedule.Tests {
			names = append(names, full[strings.LastIndex(full, "/")+1:])
		}
	}
	for _, name := range names {
		if pr.finished[name] {
			continue
		}
		pr.finished[name] = true
		mr, err := pr.readResult(name)
		if err != nil {
			mr = schemas.ModuleResult{Name: name, Result: schemas.ResultSkipped, Flags: pr.flags(name)}
		}
		pr.results = append(pr.results, mr)
	}
}

func (pr *perlRun) readOrder() {
	data, err := os.ReadFile(pr.p.resultsFile("test_order.json"))
	if err != nil {
		return
	}
	if err := json.Unmarshal(data, &pr.order); err != nil {
		pr.r.log.Warn("test_order.json of the test side not read", "err", err)
	}
}

// flags are a module's test_flags() that are set, from test_order.json.
func (pr *perlRun) flags(name string) []string {
	if pr.order == nil {
		pr.readOrder()
	}
	for _, t := range pr.order {
		if t.Name == name {
			var set []string
			for _, f := range slices.Sorted(maps.Keys(t.Flags)) {
				if t.Flags[f] {
					set = append(set, f)
				}
			}
			return set
		}
	}
	return nil
}

// mustmatch is check_screen's mustmatch: a tag, tags separated by
// spaces, or a list of them.
func mustmatchTags(raw json.RawMessage) ([]string, error) {
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return strings.Fields(one), nil
	}
	var many []json.RawMessage
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, fmt.Errorf("mustmatch must be a tag or a list of tags: %.100s", raw)
	}
	var tags []string
	for _, m := range many {
		if err := json.Unmarshal(m, &one); err == nil {
			tags = append(tags, strings.Fields(one)...)
			continue
		}
		// A needle object: os-autoinst matches that needle.
		var n struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(m, &n); err != nil || n.Name == "" {
			return nil, fmt.Errorf("mustmatch holds what is neither a tag nor a needle: %.100s", m)
		}
		tags = append(tags, needleNameTag+n.Name)
	}
	return tags, nil
}

// needleNameTag marks a tag that names one needle, as a needle object in
// mustmatch does.
const needleNameTag = "\x00needle:"

// check_screen {mustmatch, check, timeout, no_wait}: assert_screen and
// check_screen. The timeout is scaled by the test side already.
func (pr *perlRun) checkScreen(msg perlMessage) (any, error) {
	var a struct {
		Mustmatch json.RawMessage `json:"mustmatch"`
		Check     perlBool        `json:"check"`
		Timeout   perlNumber      `json:"timeout"`
		NoWait    perlBool        `json:"no_wait"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	tags, err := mustmatchTags(a.Mustmatch)
	if err != nil {
		return nil, fmt.Errorf("check_screen: %w", err)
	}
	r := pr.r
	fn := "assert_screen"
	if a.Check {
		fn = "check_screen"
	}
	r.noWait = bool(a.NoWait)
	defer func() { r.noWait = false }()
	var res schemas.MatchResolved
	if len(r.needles.withTags(tags)) == 0 {
		// As os-autoinst: no needle has the tags, so nothing can match,
		// and the check fails at its timeout (a test may use it to wait).
		r.log.Info("no needle has the tags", "module", pr.module, "tags", tags, "timeout", a.Timeout.duration())
		if err := r.pause(a.Timeout.duration()); err != nil {
			return nil, err
		}
		screen, err := r.vm.Screendump(r.ctx)
		if err != nil {
			return nil, err
		}
		r.lastScreen = screen
	} else if res, err = r.screenCheck(fn, tags, a.Timeout.duration()); err != nil {
		return nil, err
	}
	img, err := ppmBase64(r.lastScreen)
	if err != nil {
		return nil, err
	}
	frame := pr.frame()
	var candidates []any
	for _, c := range res.Candidates {
		if res.Matched && c.Needle == res.Best.Needle {
			continue
		}
		if m, err := pr.needleMatch(c); err == nil {
			candidates = append(candidates, m)
		}
	}
	if res.Matched {
		found, err := pr.needleMatch(*res.Best)
		if err != nil {
			return nil, err
		}
		return map[string]any{"found": found, "candidates": candidates, "image": img, "frame": frame, "tags": tags}, nil
	}
	pr.lastMiss = describeMiss(fn, tags, res)
	return map[string]any{"timeout": 1, "tags": tags, "image": img, "frame": frame,
		"failed_screens": []any{map[string]any{"image": img, "candidates": candidates, "frame": frame}}}, nil
}

// frame is the video frame number os-autoinst gives a screen, at its 24
// frames a second, for the frametime of results.
func (pr *perlRun) frame() int { return int(time.Since(pr.begin).Seconds() * 24) }

// needleMatch is a needle's result as os-autoinst's backend gives it:
// the needle (its JSON, name and file) and its areas where they were
// found, with similarity from 0 to 1 and the needle's click points.
func (pr *perlRun) needleMatch(c schemas.CandidateMatch) (map[string]any, error) {
	n, ok := pr.r.needles.byName(c.Needle)
	if !ok {
		return nil, fmt.Errorf("needle %s is not in the needle directory", c.Needle)
	}
	data, err := os.ReadFile(n.JSONPath)
	if err != nil {
		return nil, err
	}
	var needle map[string]any
	if err := json.Unmarshal(data, &needle); err != nil {
		return nil, fmt.Errorf("needle %s: %w", n.Name, err)
	}
	needle["name"], needle["file"] = n.Name, n.File
	var raw struct {
		Area []struct {
			Type       string          `json:"type"`
			ClickPoint json.RawMessage `json:"click_point"`
		} `json:"area"`
	}
	_ = json.Unmarshal(data, &raw)
	var clicks []json.RawMessage
	for _, a := range raw.Area {
		if a.Type == schemas.AreaTypeMatch {
			clicks = append(clicks, a.ClickPoint)
		}
	}
	areas := make([]map[string]any, 0, len(c.Areas))
	for i, a := range c.Areas {
		result := "fail"
		if a.OK {
			result = "ok"
		}
		area := map[string]any{"x": a.X, "y": a.Y, "w": a.Width, "h": a.Height, "similarity": a.Similarity, "result": result}
		if i < len(clicks) && len(clicks[i]) > 0 && string(clicks[i]) != "null" {
			area["click_point"] = clicks[i]
		}
		areas = append(areas, area)
	}
	return map[string]any{"needle": needle, "area": areas, "error": c.Error, "ok": c.OK}, nil
}

// ppmBase64 is a PNG screen as os-autoinst passes images: a binary PPM,
// in base64.
func ppmBase64(pngData []byte) (string, error) {
	img, err := png.Decode(bytes.NewReader(pngData))
	if err != nil {
		return "", fmt.Errorf("screen: %w", err)
	}
	b := img.Bounds()
	header := fmt.Sprintf("P6\n%d %d\n255\n", b.Dx(), b.Dy())
	out := make([]byte, 0, len(header)+3*b.Dx()*b.Dy())
	out = append(out, header...)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			out = append(out, byte(cr>>8), byte(cg>>8), byte(cb>>8))
		}
	}
	return base64.StdEncoding.EncodeToString(out), nil
}

// backend_send_key {key, wait_screen_change}.
func (pr *perlRun) sendKey(msg perlMessage) (any, error) {
	var a struct {
		Key              string     `json:"key"`
		WaitScreenChange perlNumber `json:"wait_screen_change"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	r := pr.r
	press := func() error { return r.pressKey(a.Key) }
	if a.WaitScreenChange <= 0 || r.onTerminal() {
		return nil, press()
	}
	_, err := r.waitScreenChange(press, a.WaitScreenChange.duration(), 50)
	return nil, err
}

func (pr *perlRun) holdKey(msg perlMessage) (any, error) {
	var a struct {
		Key string `json:"key"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	return nil, pr.r.vm.HoldKey(pr.r.ctx, a.Key)
}

func (pr *perlRun) releaseKey(msg perlMessage) (any, error) {
	var a struct {
		Key string `json:"key"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	return nil, pr.r.vm.ReleaseKey(pr.r.ctx, a.Key)
}

// backend_type_string {text, max_interval, wait_screen_changes,
// wait_still_screen, timeout, similarity_level}.
func (pr *perlRun) typeString(msg perlMessage) (any, error) {
	var a struct {
		Text              string     `json:"text"`
		MaxInterval       perlNumber `json:"max_interval"`
		WaitScreenChanges perlNumber `json:"wait_screen_changes"`
		WaitStillScreen   perlNumber `json:"wait_still_screen"`
		Timeout           perlNumber `json:"timeout"`
		Similarity        perlNumber `json:"similarity_level"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	maxInterval := int(a.MaxInterval)
	if maxInterval <= 0 || maxInterval > 250 {
		maxInterval = 250
	}
	timeout := a.Timeout.duration()
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	similarity := float64(a.Similarity)
	if similarity <= 0 {
		similarity = 47
	}
	r := pr.r
	if err := r.typeText(a.Text, maxInterval, int(a.WaitScreenChanges), similarity, timeout); err != nil {
		return nil, err
	}
	if a.WaitStillScreen > 0 {
		if _, err := r.stillScreen(a.WaitStillScreen.duration(), timeout, similarity); err != nil {
			return nil, err
		}
	}
	return nil, nil
}

// backend_wait_serial {regexp, timeout, no_regex, …}: {matched, string},
// the string being what was read up to the end of the match, as
// os-autoinst's. Expecting not to find it is the test side's business.
func (pr *perlRun) waitSerial(msg perlMessage) (any, error) {
	var a struct {
		Regexp  json.RawMessage `json:"regexp"`
		Timeout perlNumber      `json:"timeout"`
		NoRegex perlBool        `json:"no_regex"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	var sources []string
	var one string
	if err := json.Unmarshal(a.Regexp, &one); err == nil {
		sources = []string{one}
	} else if err := json.Unmarshal(a.Regexp, &sources); err != nil {
		return nil, fmt.Errorf("wait_serial: regexp must be a pattern or a list of them: %.100s", a.Regexp)
	}
	var patterns anyPattern
	for _, s := range sources {
		p, err := compilePerl(s, bool(a.NoRegex))
		if err != nil {
			return map[string]any{"matched": 0, "string": "wait_serial: " + err.Error()}, nil
		}
		patterns = append(patterns, p)
	}
	r := pr.r
	log, offset := r.vm.Serial(), &r.serialOffset
	if r.onTerminal() {
		log, offset = r.vm.Virtio(), &r.virtioOffset
	}
	from := *offset
	_, matched, err := r.waitLog(log, offset, patterns, a.Timeout.duration())
	if err != nil {
		return nil, err
	}
	read := log.Bytes(from)
	if matched {
		read = read[:*offset-from]
	}
	return map[string]any{"matched": matched, "string": string(read)}, nil
}

// read_serial {position}: the serial output from position, and where it
// ends; answered without "ret", as isotovideo does.
func (pr *perlRun) readSerial(msg perlMessage) (any, error) {
	var a struct {
		Position perlNumber `json:"position"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	log := pr.r.vm.Serial()
	from := int64(a.Position)
	data := log.Bytes(from)
	return map[string]any{"serial": string(data), "position": from + int64(len(data))}, nil
}

func (pr *perlRun) isSerialTerminal(perlMessage) (any, error) {
	return map[string]any{"yesorno": pr.r.onTerminal()}, nil
}

// consoleOf maps a console object of os-autoinst onto jetqa's consoles.
func consoleOf(name string, c perlConsole) (console, error) {
	class := strings.TrimPrefix(c.Class, "consoles::")
	switch class {
	case "ttyConsole":
		tty := 0
		switch v := c.Args["tty"].(type) {
		case float64:
			tty = int(v)
		case string:
			fmt.Sscan(v, &tty)
		}
		return console{name: name, kind: consoleTTY, tty: tty}, nil
	case "vnc_base":
		return console{name: name, kind: consoleScreen}, nil
	case "virtio_terminal":
		return console{name: name, kind: consoleVirtio}, nil
	}
	why := "jetqa has no such console"
	for kind, w := range notSupportedConsoles {
		if strings.EqualFold(strings.ReplaceAll(kind, "-", ""), strings.ReplaceAll(strings.ToLower(class), "_", "")) {
			why = w
		}
	}
	switch {
	case strings.HasPrefix(class, "ssh"):
		why = notSupportedConsoles["ssh-xterm"]
	case strings.HasPrefix(class, "ipmi"):
		why = notSupportedConsoles["ipmi-sol"]
	case class == "s3270":
		why = notSupportedConsoles["s3270"]
	}
	return console{}, fmt.Errorf("console %q (%s) is not supported: %s", name, c.Class, why)
}

// backend_select_console {testapi_console}: {activated} the first time a
// console is selected, so that the test side runs the distribution's
// activate_console; {error} for a console jetqa does not have.
func (pr *perlRun) selectConsole(msg perlMessage) (any, error) {
	var a struct {
		Console string `json:"testapi_console"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	r := pr.r
	pc, ok := pr.p.schedule.Consoles[a.Console]
	if !ok {
		return map[string]any{"error": fmt.Sprintf("select_console(%q): the distribution added no such console (added: %s)",
			a.Console, strings.Join(slices.Sorted(maps.Keys(pr.p.schedule.Consoles)), ", "))}, nil
	}
	c, err := consoleOf(a.Console, pc)
	if err != nil {
		return map[string]any{"error": "select_console: " + err.Error()}, nil
	}
	r.consoles[a.Console] = c
	if err := r.switchConsole(c); err != nil {
		return nil, err
	}
	activated := 0
	if !pr.activated[a.Console] {
		pr.activated[a.Console], activated = true, 1
	}
	return map[string]any{"activated": activated}, nil
}

func (pr *perlRun) resetConsoles(perlMessage) (any, error) {
	clear(pr.activated)
	return nil, nil
}

func (pr *perlRun) resetConsole(msg perlMessage) (any, error) {
	var a struct {
		Console string `json:"testapi_console"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	delete(pr.activated, a.Console)
	return nil, nil
}

// backend_proxy_console_call {console, function, args}: console()->…,
// for the console methods that mean something to jetqa's consoles.
func (pr *perlRun) proxyConsoleCall(msg perlMessage) (any, error) {
	var a struct {
		Console  string `json:"console"`
		Function string `json:"function"`
		Args     []any  `json:"args"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	pc, ok := pr.p.schedule.Consoles[a.Console]
	if !ok {
		return map[string]any{"exception": fmt.Sprintf("console %q does not exist", a.Console)}, nil
	}
	switch a.Function {
	case "set_tty":
		if len(a.Args) != 1 {
			return map[string]any{"exception": "set_tty takes the tty"}, nil
		}
		if pc.Args == nil {
			pc.Args = map[string]any{}
		}
		pc.Args["tty"] = a.Args[0]
		pr.p.schedule.Consoles[a.Console] = pc
		return map[string]any{"result": []any{}}, nil
	case "disable_vnc_stalls", "enable_vnc_stalls", "reset", "set_args", "is_serial_terminal":
		// jetqa has no VNC connection that could stall; reset and
		// set_args change nothing the worker keeps.
		return map[string]any{"result": []any{}}, nil
	}
	return map[string]any{"exception": fmt.Sprintf("console %q: %s is not supported by jetqa", a.Console, a.Function)}, nil
}

// backend_last_screenshot_data: the screen now, for save_screenshot and
// the screenshots of results.
func (pr *perlRun) lastScreenshotData(perlMessage) (any, error) {
	screen, err := pr.r.vm.Screendump(pr.r.ctx)
	if err != nil {
		return nil, err
	}
	img, err := ppmBase64(screen)
	if err != nil {
		return nil, err
	}
	return map[string]any{"image": img, "frame": pr.frame()}, nil
}

func (pr *perlRun) setReferenceScreenshot(perlMessage) (any, error) {
	screen, err := pr.r.vm.Screendump(pr.r.ctx)
	if err != nil {
		return nil, err
	}
	pr.reference = screen
	return nil, nil
}

// backend_wait_screen_change {timeout, similarity_level}: until the
// screen differs from the reference: {sim, elapsed, timed_out}.
func (pr *perlRun) waitScreenChange(msg perlMessage) (any, error) {
	var a struct {
		Timeout    perlNumber `json:"timeout"`
		Similarity perlNumber `json:"similarity_level"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	r := pr.r
	if pr.reference == nil {
		if _, err := pr.setReferenceScreenshot(msg); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	changed, _, sim, err := r.screenChanged(pr.reference, a.Timeout.duration(), float64(a.Similarity))
	if err != nil {
		return nil, err
	}
	return map[string]any{"sim": min(sim, 10000), "elapsed": time.Since(start).Seconds(), "timed_out": !changed}, nil
}

// backend_wait_still_screen {stilltime, timeout, similarity_level}.
func (pr *perlRun) waitStillScreen(msg perlMessage) (any, error) {
	var a struct {
		Still      perlNumber `json:"stilltime"`
		Timeout    perlNumber `json:"timeout"`
		Similarity perlNumber `json:"similarity_level"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	start := time.Now()
	still, err := pr.r.stillScreen(a.Still.duration(), a.Timeout.duration(), float64(a.Similarity))
	if err != nil {
		return nil, err
	}
	return map[string]any{"sim": float64(a.Similarity), "elapsed": time.Since(start).Seconds(), "timed_out": !still}, nil
}

func (pr *perlRun) mouseSet(msg perlMessage) (any, error) {
	var a struct {
		X perlNumber `json:"x"`
		Y perlNumber `json:"y"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	r := pr.r
	if err := r.vm.MouseSet(r.ctx, int(a.X), int(a.Y)); err != nil {
		return nil, err
	}
	r.mouseAt = &[2]int{int(a.X), int(a.Y)}
	return nil, nil
}

func (pr *perlRun) mouseButton(msg perlMessage) (any, error) {
	var a struct {
		Button string     `json:"button"`
		State  perlNumber `json:"bstate"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	return nil, pr.r.vm.MouseButton(pr.r.ctx, a.Button, a.State != 0)
}

func (pr *perlRun) mouseHide(msg perlMessage) (any, error) {
	var a struct {
		Offset perlNumber `json:"border_offset"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	pr.r.mouseAt = nil
	return nil, pr.r.vm.MouseHide(pr.r.ctx, int(a.Offset))
}

// backend_get_last_mouse_set: {x, y}, where a click puts the pointer back.
func (pr *perlRun) lastMouseSet(perlMessage) (any, error) {
	if at := pr.r.mouseAt; at != nil {
		return map[string]any{"x": at[0], "y": at[1]}, nil
	}
	return map[string]any{"x": -1, "y": -1}, nil
}

func (pr *perlRun) power(msg perlMessage) (any, error) {
	var a struct {
		Action string `json:"action"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	if a.Action == "on" {
		// os-autoinst's QEMU backend has no "on": its QMP command fails,
		// quietly, and the running machine stays as it is. Distributions
		// call it at boot (KDE Linux's bootup: "this does nothing").
		pr.r.log.Info("power on: the machine is on")
		return nil, nil
	}
	return nil, pr.r.vm.Power(pr.r.ctx, a.Action)
}

// backend_is_shutdown: whether the machine powered off.
func (pr *perlRun) isShutdown(perlMessage) (any, error) {
	select {
	case <-pr.r.vm.Done():
		pr.r.poweredOff = true
		return 1, nil
	default:
		return 0, nil
	}
}

func (pr *perlRun) ejectCD(perlMessage) (any, error) {
	return nil, pr.r.vm.EjectCD(pr.r.ctx)
}

// backend_can_handle {function}: snapshots, unless the job disables them.
func (pr *perlRun) canHandle(msg perlMessage) (any, error) {
	var a struct {
		Function string `json:"function"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	if a.Function == "snapshots" && pr.r.snapshots {
		return map[string]any{"ret": 1}, nil
	}
	return nil, nil
}

// backend_save_snapshot {name}: a milestone. A VM that cannot be saved
// runs on without snapshots, as in Starlark jobs.
func (pr *perlRun) saveSnapshot(msg perlMessage) (any, error) {
	var a struct {
		Name string `json:"name"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	r := pr.r
	start := time.Now()
	if err := r.vm.SaveSnapshot(r.ctx, a.Name); err != nil {
		r.snapshots = false
		r.log.Warn("VM not saved: rollbacks will do nothing", "snapshot", a.Name, "err", err)
		return nil, nil
	}
	r.milestoneConsole = r.console
	r.log.Info("VM saved as a snapshot", "snapshot", a.Name, "took", time.Since(start).Round(time.Millisecond))
	return nil, nil
}

// backend_load_snapshot {name}: the rollback after a failed module.
func (pr *perlRun) loadSnapshot(msg perlMessage) (any, error) {
	var a struct {
		Name string `json:"name"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	r := pr.r
	if !r.snapshots {
		r.log.Warn("no snapshot to roll back to", "snapshot", a.Name)
		return nil, nil
	}
	if err := r.vm.LoadSnapshot(r.ctx, a.Name); err != nil {
		return nil, fmt.Errorf("rolling back to the snapshot %s: %w", a.Name, err)
	}
	r.console = r.milestoneConsole
	r.log.Info("VM rolled back", "snapshot", a.Name)
	return nil, nil
}

// backend_reload_needles {needles}: the driver ran needle::init again and
// says which needles are registered now.
func (pr *perlRun) reloadNeedles(msg perlMessage) (any, error) {
	var a struct {
		Needles []string `json:"needles"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	if a.Needles == nil {
		return nil, errors.New("backend_reload_needles without the needles: is the test side jetqa's driver?")
	}
	// As needle::init, the directory is read again, with os-autoinst's
	// leniency, as at the start of the job; what a developer added stays.
	load := func(d string) (*needleSet, error) { return loadNeedlesAsOSAutoinst(d, pr.r.log) }
	dir, err := pr.r.needles.reloaded(load, a.Needles)
	if err != nil {
		return nil, err
	}
	pr.r.needles = dir
	return nil, nil
}

// timeoutArgs are those of is_configured_to_pause_on_timeout and
// report_timeout: which screen check failed, and os-autoinst's words.
type timeoutArgs struct {
	Check perlBool `json:"check"`
	Msg   string   `json:"msg"`
}

func (a timeoutArgs) fn() string {
	if a.Check {
		return "check_screen"
	}
	return "assert_screen"
}

// pausesOnTimeout says whether a failed screen check pauses: as the
// developer set it (jetqa dev pause --on-mismatch).
func (pr *perlRun) pausesOnTimeout(msg perlMessage) (any, error) {
	var a timeoutArgs
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	if pr.r.dev.pauseOnMismatch(a.fn()) {
		return 1, nil
	}
	return 0, nil
}

// reportTimeout pauses on a failed screen check when the developer asked
// for it. A retry (with the developer's needles) answers 1, and
// os-autoinst checks the screen again; a resume answers 0, and the check
// fails.
func (pr *perlRun) reportTimeout(msg perlMessage) (any, error) {
	var a timeoutArgs
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	if !pr.r.dev.pauseOnMismatch(a.fn()) {
		return 0, nil
	}
	how, err := pr.r.hold(schemas.PausedOnMismatch, a.Msg)
	if err != nil {
		return nil, err
	}
	if how == schemas.DevRetry {
		return 1, nil
	}
	return 0, nil
}

// pauseTestExecution is what os-autoinst asks when a module failed: it
// pauses, as isotovideo, when the job has PAUSE_ON_FAILURE=1, until the
// developer resumes; the module then fails as it would have.
func (pr *perlRun) pauseTestExecution(msg perlMessage) (any, error) {
	var a struct {
		DueToFailure perlBool `json:"due_to_failure"`
		Reason       string   `json:"reason"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	if a.DueToFailure && pr.r.settings["PAUSE_ON_FAILURE"] == "1" {
		if _, err := pr.r.hold(schemas.PausedOnFailure, cmp.Or(a.Reason, "the module failed")); err != nil {
			return nil, err
		}
	}
	return map[string]any{}, nil
}

// backend_switch_network {network_enabled, network_link_name}: the
// network card's cable in (default) or out.
func (pr *perlRun) switchNetwork(msg perlMessage) (any, error) {
	var a struct {
		Enabled *perlBool `json:"network_enabled"`
		Name    string    `json:"network_link_name"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	return nil, pr.r.vm.SetLink(pr.r.ctx, cmp.Or(a.Name, qemu.NetworkName), a.Enabled == nil || bool(*a.Enabled))
}

// backend_save_memory_dump {filename}: the guest's memory, as an ELF
// core, among the job's ulogs as <filename>-vm-memory-dump.
func (pr *perlRun) saveMemoryDump(msg perlMessage) (any, error) {
	var a struct {
		Filename string `json:"filename"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	file, err := ulogFile(pr.r.resultsDir, a.Filename+"-vm-memory-dump")
	if err != nil {
		return nil, err
	}
	return nil, pr.r.vm.DumpMemory(pr.r.ctx, file)
}

// backend_save_storage_drives {disk, filename}: disk n as a qcow2 among
// the job's ulogs, <filename>-<n>-vm_disk_file.qcow2, as os-autoinst's.
func (pr *perlRun) saveStorageDrives(msg perlMessage) (any, error) {
	var a struct {
		Disk     perlNumber `json:"disk"`
		Filename string     `json:"filename"`
	}
	if err := pr.args(msg, &a); err != nil {
		return nil, err
	}
	file, err := ulogFile(pr.r.resultsDir, fmt.Sprintf("%s-%d-vm_disk_file.qcow2", a.Filename, int(a.Disk)))
	if err != nil {
		return nil, err
	}
	return nil, pr.r.vm.CopyDisk(pr.r.ctx, int(a.Disk), file)
}

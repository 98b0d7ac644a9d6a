// Package browser drives a real headless Chromium for the tests of the web
// UI that stages/api serves: a test starts one, runs chromedp actions in it,
// keeps screenshots as artifacts, and fails on the JavaScript errors, uncaught
// exceptions and failed loads that any of its tabs logged.
package browser

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/cdproto/target"
	"github.com/chromedp/chromedp"

	"jetqa/internal/artifacts"
)

const (
	// actionTimeout bounds one Run or Get: a page that never shows what a
	// test waits for fails the test instead of hanging it.
	actionTimeout = time.Minute
	// startTimeout bounds the start of the browser, and watchTimeout the
	// attachment to a tab that a page opened.
	startTimeout = time.Minute
	watchTimeout = 30 * time.Second
	// quickTimeout bounds what a failure report asks the browser (the URL,
	// a screenshot) after the action itself failed.
	quickTimeout = 10 * time.Second
)

// Browser is a headless Chromium that lives as long as the test that
// started it. Actions run in its first tab; it records the errors of every
// tab, the first one and those its pages open.
type Browser struct {
	ctx context.Context // the first tab

	mu       sync.Mutex
	errs     []string
	changed  chan struct{}               // closed and replaced when errs grows
	watching map[target.ID]chan struct{} // closed once the tab's errors are recorded
	tabs     []context.CancelFunc
	closed   bool
}

// Start starts Chromium for the test: $JETQA_CHROMIUM, else `chromium` on
// the PATH, which `deploy/install-deps.sh test` installs. It runs headless
// in a 1280x900 window with a profile in a temporary directory, and stops
// when the test ends.
func Start(t testing.TB) *Browser {
	t.Helper()
	exe, err := chromiumPath()
	if err != nil {
		t.Fatalf("%v: the web UI's tests need Chromium; `bash deploy/install-deps.sh test` installs it", err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
		chromedp.NoFirstRun,
		// Test machines have no GPU; software rendering is what they get
		// anyway, without a GPU process failing first.
		chromedp.Flag("disable-gpu", true),
	)
	if os.Geteuid() == 0 {
		// Chromium's sandbox refuses to run as root, which CI is.
		opts = append(opts, chromedp.NoSandbox)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &Browser{changed: make(chan struct{}), watching: map[target.ID]chan struct{}{}}
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithListener(b.record))
	b.ctx = ctx
	t.Cleanup(func() {
		b.mu.Lock()
		b.closed = true
		tabs := b.tabs
		b.mu.Unlock()
		for _, cancel := range tabs {
			cancel()
		}
		cancel()
		cancelAlloc()
	})

	// The first action's context is the browser's lifetime, so it cannot
	// carry the deadline itself.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("starting %s: %v", exe, err)
		}
	case <-time.After(startTimeout):
		t.Fatalf("%s did not start in %v", exe, startTimeout)
	}

	first := chromedp.FromContext(ctx).Target.TargetID
	err = chromedp.ListenBrowser(ctx, func(ev any) {
		if ev, ok := ev.(*target.EventTargetCreated); ok {
			info := ev.TargetInfo
			if info.Type == "page" && info.Subtype == "" && info.TargetID != first {
				b.watch(info.TargetID)
			}
		}
	})
	if err != nil {
		t.Fatalf("listening for new tabs: %v", err)
	}
	return b
}

// chromiumPath finds the browser to run.
func chromiumPath() (string, error) {
	name := "chromium"
	if env := os.Getenv("JETQA_CHROMIUM"); env != "" {
		name = env
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("no browser %q (JETQA_CHROMIUM names another): %w", name, err)
	}
	return path, nil
}

// watch records the errors of a tab that a page opened. It runs on the
// goroutine that reads the browser's messages, so it attaches elsewhere.
// Attaching enables the Runtime and Log domains, which replay what the tab
// logged before, so an error thrown before the attachment is not lost.
func (b *Browser) watch(id target.ID) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || b.watching[id] != nil {
		return
	}
	done := make(chan struct{})
	b.watching[id] = done
	tab, cancel := chromedp.NewContext(b.ctx, chromedp.WithTargetID(id), chromedp.WithListener(b.record))
	b.tabs = append(b.tabs, cancel)
	go func() {
		defer close(done)
		// A tab that closed itself before the attachment has nothing
		// more to tell: its error is not the test's.
		_ = chromedp.Do(tab)
	}()
}

// record keeps the events that are errors: console.error and failed
// console.assert calls, uncaught exceptions and promise rejections, and the
// browser's log entries of level error, such as a resource that failed to
// load. It runs on a tab's reading goroutine and must not block.
func (b *Browser) record(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError && ev.Type != runtime.ConsoleAPICalledTypeAssert {
			return
		}
		msg = "console." + string(ev.Type) + ": " + argsText(ev.Args) + stackPlace(ev.StackTrace)
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg = "exception: " + d.Text
		if d.Exception != nil {
			// The description is the error and its stack; the first line
			// says which.
			first, _, _ := strings.Cut(valueText(d.Exception), "\n")
			msg += " " + first
		}
		if d.URL != "" {
			msg += fmt.Sprintf(" (%s:%d)", d.URL, d.LineNumber+1)
		} else {
			msg += stackPlace(d.StackTrace)
		}
	case *log.EventEntryAdded:
		e := ev.Entry
		if e.Level != log.EntryLevelError || isFavicon(e.URL) {
			return
		}
		msg = fmt.Sprintf("%s error: %s", e.Source, e.Text)
		if e.URL != "" {
			msg += " (" + e.URL + ")"
		}
	default:
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.errs = append(b.errs, msg)
	close(b.changed)
	b.changed = make(chan struct{})
}

// isFavicon reports whether a URL is the icon that the browser asks a site
// for on its own. Whether that request failed before a test looks depends
// on timing, and a page that names its icon gets no such request.
func isFavicon(rawURL string) bool {
	u, err := url.Parse(rawURL)
	return err == nil && u.Path == "/favicon.ico"
}

// argsText renders a console call's arguments roughly as the DevTools
// console does: strings as they are, other values by their description.
func argsText(args []*runtime.RemoteObject) string {
	parts := make([]string, len(args))
	for i, a := range args {
		parts[i] = valueText(a)
	}
	return strings.Join(parts, " ")
}

func valueText(o *runtime.RemoteObject) string {
	var s string
	switch {
	case o.Type == runtime.RemoteObjectTypeString && json.Unmarshal(o.Value, &s) == nil:
		return s
	case o.Description != "":
		return o.Description
	case o.UnserializableValue != "":
		return string(o.UnserializableValue)
	case len(o.Value) > 0:
		return string(o.Value)
	}
	return string(o.Type)
}

// stackPlace names the script line at the top of the stack, if any.
func stackPlace(st *runtime.StackTrace) string {
	if st == nil || len(st.CallFrames) == 0 {
		return ""
	}
	f := st.CallFrames[0]
	return fmt.Sprintf(" (%s:%d)", f.URL, f.LineNumber+1)
}

// Errors returns the errors that the browser's tabs logged so far, one line
// each, after the tabs that pages opened are attached to.
func (b *Browser) Errors() []string {
	b.mu.Lock()
	var pending []chan struct{}
	for _, done := range b.watching {
		pending = append(pending, done)
	}
	b.mu.Unlock()
	deadline := time.After(watchTimeout)
	for _, done := range pending {
		select {
		case <-done:
		case <-deadline:
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.errs)
}

// CheckNoErrors marks the test failed, listing them, if any tab logged an
// error so far.
func (b *Browser) CheckNoErrors(t testing.TB) {
	t.Helper()
	if errs := b.Errors(); len(errs) > 0 {
		t.Errorf("the browser logged %d errors:\n\t%s", len(errs), strings.Join(errs, "\n\t"))
	}
}

// Run runs the actions in the browser's first tab, in order, within a
// minute. If one fails, the test fails with the page's URL and a screenshot.
func (b *Browser) Run(t testing.TB, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	run(t, b, chromedp.Steps(actions...))
}

// Get runs an action that returns a value, such as chromedp.Text, as Run
// does, and returns the value.
func Get[T any](t testing.TB, b *Browser, action chromedp.Action[T]) T {
	t.Helper()
	return run(t, b, action)
}

func run[T any](t testing.TB, b *Browser, action chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, actionTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, action)
	if err != nil {
		msg := fmt.Sprintf("browser at %s: %v", b.location(), err)
		if path, err := b.screenshot(t, "failure"); err == nil {
			msg += "\nscreenshot: " + path
		}
		t.Fatal(msg)
	}
	return v
}

// location is the URL of the first tab, for a failure's message.
func (b *Browser) location() string {
	ctx, cancel := context.WithTimeout(b.ctx, quickTimeout)
	defer cancel()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return fmt.Sprintf("an unknown URL (%v)", err)
	}
	return loc
}

// Screenshot saves the whole page of the first tab, beyond the window, as
// name.png in the test's artifacts directory (artifacts.Dir), and returns
// its path.
func (b *Browser) Screenshot(t testing.TB, name string) string {
	t.Helper()
	path, err := b.screenshot(t, name)
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	t.Logf("screenshot: %s", path)
	return path
}

func (b *Browser) screenshot(t testing.TB, name string) (string, error) {
	ctx, cancel := context.WithTimeout(b.ctx, quickTimeout)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		return "", err
	}
	dir, err := artifacts.Dir(t)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, artifacts.FileName(strings.TrimSuffix(name, ".png"))+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return "", err
	}
	return path, nil
}

// WaitText waits until the text that a person sees in the first element
// that the CSS selector matches contains substring. It keeps waiting across
// a navigation, so it can follow a click on a link.
func WaitText(selector, substring string) chromedp.Action[chromedp.Void] {
	const contains = `(sel, sub) => {
		const e = document.querySelector(sel);
		return e !== null && e.innerText.includes(sub);
	}`
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		for {
			_, err := chromedp.PollFunction[chromedp.Void](contains,
				chromedp.WithPollingArgs(selector, substring),
				chromedp.WithPollingTimeout(0), // the caller's deadline
			)(ctx, t)
			if err == nil || ctx.Err() == nil && !navigated(err) {
				return chromedp.Void{}, err
			}
			if ctx.Err() != nil {
				return chromedp.Void{}, fmt.Errorf("%q never showed in %s, which shows %s: %w",
					substring, selector, shownText(t, selector), err)
			}
		}
	}
}

// Click clicks the first element that the CSS selector matches, as a
// person does. A live page may swap the element for a new one between
// finding it and clicking it, which a person never notices; Click then
// finds it again, until the caller's deadline.
func Click(selector string) chromedp.Action[chromedp.Void] {
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		for {
			_, err := chromedp.Click(selector)(ctx, t)
			if err == nil || !replaced(err) || ctx.Err() != nil {
				return chromedp.Void{}, err
			}
		}
	}
}

// replaced reports whether an action failed because its element left the
// page after it was found.
func replaced(err error) bool {
	for _, s := range []string{"Could not find node with given id", "No node with given id found", "Node is detached from document", "Node does not have a layout object"} {
		if strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}

// navigated reports whether a script failed because its page went away.
func navigated(err error) bool {
	for _, s := range []string{"Execution context was destroyed", "Inspected target navigated or closed", "Cannot find context with specified id"} {
		if strings.Contains(err.Error(), s) {
			return true
		}
	}
	return false
}

// shownText is the text of the element, for a failure's message.
func shownText(t *chromedp.Target, selector string) string {
	ctx, cancel := context.WithTimeout(context.Background(), quickTimeout)
	defer cancel()
	sel, _ := json.Marshal(selector) // a JavaScript string
	text, err := chromedp.Evaluate[*string](`document.querySelector(`+string(sel)+`)?.innerText ?? null`)(ctx, t)
	switch {
	case err != nil:
		return fmt.Sprintf("nothing known (%v)", err)
	case text == nil:
		return "no such element"
	}
	return fmt.Sprintf("%q", *text)
}

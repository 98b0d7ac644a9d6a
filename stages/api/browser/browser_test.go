package browser

import (
	"context"
	"fmt"
	"image/color"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// pages is the site the tests browse.
var pages = map[string]string{
	"/clean": `<!doctype html><title>clean</title>
		<p id="status">loading</p>
		<a id="next" href="/second">next</a>
		<script>document.getElementById("status").textContent = "ready";</script>`,
	"/second": `<!doctype html><title>second</title>
		<p id="status">second page</p>`,
	"/throws": `<!doctype html><title>throws</title>
		<script>throw new Error("boom from a script");</script>`,
	"/console-error": `<!doctype html><title>console</title>
		<script>console.error("boom on the console", 42);</script>`,
	"/rejects": `<!doctype html><title>rejects</title>
		<script>Promise.reject(new Error("boom in a promise"));</script>`,
	"/missing-image": `<!doctype html><title>missing</title>
		<img src="/no-such-image.png">`,
	"/opens-a-tab": `<!doctype html><title>opener</title>
		<script>window.open("/throws-in-a-tab");</script>`,
	"/throws-in-a-tab": `<!doctype html><title>tab</title>
		<script>throw new Error("boom in the other tab");</script>`,
	// The button is a new element every millisecond, as a live list's row
	// is when its job's events arrive.
	"/churning": `<!doctype html><title>churning</title>
		<p id="status">not clicked</p><div id="box"></div>
		<script>
		const box = document.getElementById("box");
		function swap() {
			const b = document.createElement("button");
			b.id = "go"; b.textContent = "go";
			b.onclick = () => { document.getElementById("status").textContent = "clicked"; };
			box.replaceChildren(b);
		}
		swap(); setInterval(swap, 1);
		</script>`,
	// Two colours, so that the screenshot shows what is past the window.
	"/tall": `<!doctype html><title>tall</title>
		<style>body { margin: 0 } div { height: 1500px }</style>
		<div style="background: #f00"></div><div style="background: #00f"></div>`,
}

func site(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		page, ok := pages[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, page)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestCleanPageHasNoErrors(t *testing.T) {
	url := site(t)
	b := Start(t)
	b.Run(t, chromedp.Navigate(url+"/clean"), WaitText("#status", "ready"))
	// WaitText follows the link to the next page.
	b.Run(t, chromedp.Click(chromedp.CSS("#next")), WaitText("#status", "second page"))
	if title := Get(t, b, chromedp.Title()); title != "second" {
		t.Errorf("title %q, want second", title)
	}
	b.CheckNoErrors(t)
}

// A click lands although the element is replaced again and again while
// the browser is told to click it.
func TestClickFollowsAReplacedElement(t *testing.T) {
	url := site(t)
	b := Start(t)
	b.Run(t, chromedp.Navigate(url+"/churning"), chromedp.WaitVisible("#go"))
	for range 20 {
		b.Run(t, Click("#go"))
	}
	b.Run(t, WaitText("#status", "clicked"))
	b.CheckNoErrors(t)
}

func TestErrorsAreCaught(t *testing.T) {
	url := site(t)
	b := Start(t)
	for _, tc := range []struct{ page, want string }{
		{"/throws", "exception: Uncaught Error: boom from a script"},
		{"/console-error", "console.error: boom on the console 42"},
		{"/rejects", "exception: Uncaught (in promise) Error: boom in a promise"},
		{"/missing-image", "status of 404"},
		{"/opens-a-tab", "exception: Uncaught Error: boom in the other tab"},
	} {
		t.Run(strings.TrimPrefix(tc.page, "/"), func(t *testing.T) {
			seen := len(b.Errors())
			b.Run(t, chromedp.Navigate(url+tc.page))
			got := waitForError(t, b, seen, tc.want)
			if !strings.Contains(got, url) {
				t.Errorf("%q does not say where: no %s", got, url)
			}

			// CheckNoErrors fails the test, naming the error.
			r := &recorder{TB: t}
			b.CheckNoErrors(r)
			if !r.failed || !strings.Contains(r.msg, tc.want) {
				t.Errorf("CheckNoErrors failed %v with %q, want it to fail naming %q", r.failed, r.msg, tc.want)
			}
		})
	}
}

// waitForError waits until the browser logs an error that contains want,
// after the first seen ones, and returns it.
func waitForError(t *testing.T, b *Browser, seen int, want string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		b.mu.Lock()
		errs, changed := b.errs[seen:], b.changed
		b.mu.Unlock()
		for _, e := range errs {
			if strings.Contains(e, want) {
				return e
			}
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatalf("no error with %q; the browser logged %q", want, errs)
		}
	}
}

func TestScreenshotIsThePage(t *testing.T) {
	artifacts := t.TempDir()
	t.Setenv("JETQA_ARTIFACTS", artifacts)
	url := site(t)
	b := Start(t)
	b.Run(t, chromedp.Navigate(url+"/tall"))
	width := Get(t, b, chromedp.Evaluate[int]("document.documentElement.scrollWidth"))
	height := Get(t, b, chromedp.Evaluate[int]("document.documentElement.scrollHeight"))
	if width != 1280 || height != 3000 {
		t.Errorf("the page is %dx%d, want 1280x3000", width, height)
	}

	path := b.Screenshot(t, "tall page")
	if want := filepath.Join(artifacts, "TestScreenshotIsThePage", "tall_page.png"); path != want {
		t.Errorf("saved as %s, want %s", path, want)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	if got := img.Bounds().Size(); got.X != width || got.Y != height {
		t.Errorf("the screenshot is %v, want the page's %dx%d", got, width, height)
	}
	for _, p := range []struct {
		y    int
		want color.RGBA
	}{{10, color.RGBA{0xff, 0, 0, 0xff}}, {height - 10, color.RGBA{0, 0, 0xff, 0xff}}} {
		if got := color.RGBAModel.Convert(img.At(10, p.y)); got != p.want {
			t.Errorf("pixel at y=%d is %v, want %v", p.y, got, p.want)
		}
	}
	b.CheckNoErrors(t)
}

func TestStartNamesTheInstallStep(t *testing.T) {
	t.Setenv("JETQA_CHROMIUM", filepath.Join(t.TempDir(), "no-chromium"))
	r := &recorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Start(r)
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("Start neither failed nor returned")
	}
	if !r.failed || !strings.Contains(r.msg, "deploy/install-deps.sh test") {
		t.Errorf("Start failed %v with %q, want it to name the install step", r.failed, r.msg)
	}
}

// recorder is a test that keeps its failure, to check how a helper fails.
type recorder struct {
	testing.TB
	failed bool
	msg    string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.failed = true
	r.msg += fmt.Sprintf(format, args...)
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

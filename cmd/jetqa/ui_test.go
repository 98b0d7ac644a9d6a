package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"jetqa/schemas"
	"jetqa/stages/api/browser"
)

// TestWebUIInARealBrowser drives Debian's chromium, headless, through the
// web UI of `jetqa up` while real testos jobs run: a job appears in the
// list as it is posted, the live view follows the VM's screen, the failed
// job's page shows the screenshots with needle areas and the closest
// candidate with its diff, the workers page lists the worker, and cancel
// works signed in and is refused when not. No page logs a JavaScript
// error. Screenshots of the pages are kept as artifacts.
func TestWebUIInARealBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("two VM jobs and a browser")
	}
	testos := testosDir(t)
	s := startSystem(t)
	b := browser.Start(t)

	// The job list follows the jobs live: a job posted after the page
	// loaded shows up without a reload.
	b.Run(t, chromedp.Navigate(s.api+"/tests"), chromedp.WaitVisible("#jobs[data-live]"))
	failing := s.post(t, demoSettings(testos, "FAIL_ON_PURPOSE=1"))
	row := fmt.Sprintf("#job-%d", failing)
	b.Run(t, chromedp.WaitVisible(row), browser.WaitText(row, "demo"))
	b.Screenshot(t, "jobs-live")

	// The live view shows the VM's screen, and the screen changes as the
	// test types into the shell.
	b.Run(t, browser.Click(row+" a"), chromedp.WaitVisible("#live-screen[src^='data:image/png']"))
	first := browser.Get(t, b, chromedp.Evaluate[string](`document.getElementById("live-screen").src`))
	browser.Get(t, b, chromedp.Poll[bool](fmt.Sprintf(`document.getElementById("live-screen").src !== %q`, first)))
	b.Screenshot(t, "live-view")

	// Once the job ends the page shows its results: the matched screens
	// with their needles' areas, and for the failed assert the closest
	// candidate, its image and where the screen differs from it.
	b.Run(t, browser.WaitText("#job-result", schemas.ResultFailed))
	b.Run(t,
		chromedp.WaitVisible("#module-boot figure.shot .area.ok.placed"),
		chromedp.WaitVisible("#module-fail .candidate figure.needle img"),
		browser.WaitText("#module-fail .candidate", "graphical-desktop"),
		browser.WaitText("#timeline", "job.finished.v1"),
	)
	browser.Get(t, b, chromedp.Poll[bool](`[...document.querySelectorAll("#module-fail .candidate img")].every(i => i.complete && i.naturalWidth > 0)`))
	b.Screenshot(t, "job-failed")

	b.Run(t, chromedp.Navigate(s.api+"/admin/workers"), browser.WaitText("#workers", "e2e"), browser.WaitText("#workers", "qemu_x86_64"))
	b.Screenshot(t, "workers")
	b.Run(t, chromedp.Navigate(s.api+"/tests/overview"), chromedp.WaitVisible(fmt.Sprintf("#cell-%d", failing)))
	b.Screenshot(t, "overview")

	// Not signed in, the running job's page offers no cancel, and a cancel
	// sent anyway is refused.
	running := s.post(t, demoSettings(testos))
	owner := jobOwner(t, s, running)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.bus.SetUser(ctx, owner, "a password for the test", false); err != nil {
		t.Fatal(err)
	}
	page := fmt.Sprintf("%s/tests/%d", s.api, running)
	b.Run(t, chromedp.Navigate(page), chromedp.WaitVisible("#live-screen[src^='data:image/png']"), chromedp.WaitNotPresent("#cancel"))
	// A visitor's form, with its CSRF token but not signed in.
	jar, _ := cookiejar.New(nil)
	visitor := &http.Client{Jar: jar}
	token := csrfToken(t, visitor, s.api+"/login")
	resp, err := visitor.PostForm(fmt.Sprintf("%s/tests/%d/cancel", s.api, running), url.Values{"csrf": {token}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("a cancel without signing in: %s, want 403", resp.Status)
	}
	b.Run(t, chromedp.Navigate(page), browser.WaitText("#job-result", "running"))

	// Signed in as the job's owner: developer mode pauses the test, and
	// cancel ends the job.
	b.Run(t,
		browser.Click("#sign-in"),
		chromedp.WaitVisible("#user"),
		chromedp.SendKeys("#user", owner),
		chromedp.SendKeys("#password", "a password for the test"),
		browser.Click("#sign-in-button"),
		browser.WaitText("#signed-in", owner),
	)
	b.Run(t, chromedp.Navigate(page), chromedp.WaitVisible("#dev-pause"), browser.Click("#dev-pause"),
		browser.WaitText("#live-paused", "paused"))
	b.Screenshot(t, "paused")
	b.Run(t, browser.Click("#cancel"), browser.WaitText("#job-result", schemas.ResultUserCancelled))
	b.Screenshot(t, "cancelled")
	if fin := s.finish(t, running, time.Minute); fin.Result != schemas.ResultUserCancelled {
		t.Errorf("job %d: %s, want user_cancelled", running, fin.Result)
	}
	b.CheckNoErrors(t)
}

// csrfToken is the CSRF token of the forms of the page at u.
func csrfToken(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	page, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`).FindSubmatch(page)
	if m == nil {
		t.Fatalf("%s has no form with a CSRF token", u)
	}
	return string(m[1])
}

// jobOwner is the user who created the job, as the API shows it.
func jobOwner(t *testing.T, s *system, id int64) string {
	t.Helper()
	resp, err := http.Get(fmt.Sprintf("%s/api/v1/jobs/%d", s.api, id))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Job struct{ Owner string } }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Job.Owner == "" {
		t.Fatalf("job %d: no owner (%v)", id, err)
	}
	return out.Job.Owner
}

package api

import (
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"jetqa/schemas"
)

// browserless is a client that keeps cookies, as a browser does.
type browserless struct {
	t    *testing.T
	base string
	c    *http.Client
}

func (f *fixture) browser() *browserless {
	jar, _ := cookiejar.New(nil)
	return &browserless{t: f.t, base: f.base, c: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

func (b *browserless) get(path string) (int, string) {
	b.t.Helper()
	resp, err := b.c.Get(b.base + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func (b *browserless) post(path string, form url.Values) (int, string) {
	b.t.Helper()
	resp, err := b.c.PostForm(b.base+path, form)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

var csrfInPage = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

// csrf is the token of the forms of the page at path.
func (b *browserless) csrf(path string) string {
	b.t.Helper()
	_, page := b.get(path)
	m := csrfInPage.FindStringSubmatch(page)
	if m == nil {
		b.t.Fatalf("%s has no form with a CSRF token", path)
	}
	return m[1]
}

func TestUIPagesAndForms(t *testing.T) {
	f := start(t)
	var created struct{ ID int64 }
	if code := f.do("POST", "/api/v1/jobs?DISTRI=testos&VERSION=1&FLAVOR=demo&BUILD=7&ARCH=x86_64&TEST=boot", "", nil, &created); code != 200 {
		t.Fatalf("post job: %d", code)
	}
	id := created.ID
	b := f.browser()
	for _, c := range []struct {
		path string
		want []string
	}{
		{"/tests", []string{`id="job-` + itoa(id) + `"`, "boot", "scheduled"}},
		{"/tests?state=done", []string{"No job matches."}},
		{"/tests/overview", []string{"testos 1 demo · Build 7", `id="cell-` + itoa(id) + `"`, "x86_64"}},
		{"/tests/" + itoa(id), []string{"Job " + itoa(id), "DISTRI", "testos", "No module has run yet."}},
		{"/admin/workers", []string{"No worker has registered."}},
		{"/login", []string{`name="password"`}},
	} {
		code, page := b.get(c.path)
		if code != 200 {
			t.Errorf("GET %s: %d\n%s", c.path, code, page)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(page, w) {
				t.Errorf("GET %s: no %q in the page", c.path, w)
			}
		}
	}
	if code, _ := b.get("/tests/999"); code != 404 {
		t.Errorf("GET /tests/999: %d, want 404", code)
	}
	if code, _ := b.get("/api_keys"); code != http.StatusSeeOther {
		t.Errorf("GET /api_keys not signed in: %d, want a redirect to the sign-in", code)
	}

	// Not signed in: a cancel is refused and changes nothing.
	token := b.csrf("/login")
	if code, page := b.post("/tests/"+itoa(id)+"/cancel", url.Values{"csrf": {token}}); code != 403 || !strings.Contains(page, "sign in first") {
		t.Errorf("cancel not signed in: %d %s", code, page)
	}
	// A form without the token, or with another browser's, changes nothing.
	if err := f.bus.SetUser(context.Background(), "alice", "correct horse", false); err != nil {
		t.Fatal(err)
	}
	if code, _ := b.post("/login", url.Values{"user": {"alice"}, "password": {"correct horse"}}); code != 403 {
		t.Errorf("sign-in without a CSRF token: %d, want 403", code)
	}
	other := f.browser()
	if code, _ := other.post("/login", url.Values{"csrf": {token}, "user": {"alice"}, "password": {"correct horse"}}); code != 403 {
		t.Errorf("sign-in with another browser's token: %d, want 403", code)
	}
	if code, page := b.post("/login", url.Values{"csrf": {token}, "user": {"alice"}, "password": {"wrong password"}}); code != 403 || !strings.Contains(page, "wrong password") {
		t.Errorf("sign-in with a wrong password: %d", code)
	}
	if _, page := b.get("/tests/" + itoa(id)); strings.Contains(page, `id="cancel"`) {
		t.Error("the job page offers cancel to a visitor who is not signed in")
	}
	if v, code := f.job(id); code != 200 || v.State != schemas.StateScheduled {
		t.Fatalf("after the refusals the job is %s (%d), want scheduled", v.State, code)
	}

	// Signed in: cancel works.
	if code, _ := b.post("/login", url.Values{"csrf": {token}, "user": {"alice"}, "password": {"correct horse"}, "next": {"/tests/" + itoa(id)}}); code != http.StatusSeeOther {
		t.Fatalf("sign-in: %d", code)
	}
	_, page := b.get("/tests/" + itoa(id))
	if !strings.Contains(page, `id="signed-in"`) || !strings.Contains(page, `id="cancel"`) {
		t.Fatal("signed in, the job page shows no user or no cancel button")
	}
	if code, page := b.post("/tests/"+itoa(id)+"/cancel", url.Values{"csrf": {b.csrf("/tests/" + itoa(id))}}); code != http.StatusSeeOther {
		t.Fatalf("cancel signed in: %d %s", code, page)
	}
	if v, _ := f.job(id); v.Result != schemas.ResultUserCancelled {
		t.Errorf("after cancel the job's result is %q", v.Result)
	}

	// The API key page makes a key that signs API requests.
	code, page := b.post("/api_keys", url.Values{"csrf": {b.csrf("/api_keys")}, "days": {"3"}})
	key := regexp.MustCompile(`key    ([0-9A-F]{16})\s+secret ([0-9A-F]{16})`).FindStringSubmatch(page)
	if code != 200 || key == nil {
		t.Fatalf("create a key: %d, no key and secret in the page", code)
	}
	f.key = schemas.APIKeyCreated{Key: key[1], Secret: key[2]}
	if code := f.do("POST", "/api/v1/jobs?TEST=signed-by-ui-key&DISTRI=testos", "", nil, &created); code != 200 {
		t.Errorf("a job posted with the key made in the UI: %d", code)
	}
	// A key for her own jobs only cancels none of another's; she may not
	// make an admin's key.
	code, page = b.post("/api_keys", url.Values{"csrf": {b.csrf("/api_keys")}, "scope": {"own"}})
	key = regexp.MustCompile(`key    ([0-9A-F]{16})\s+secret ([0-9A-F]{16})`).FindStringSubmatch(page)
	if code != 200 || key == nil || !strings.Contains(page, "<td>own</td>") {
		t.Fatalf("create a key of scope own: %d, key %v", code, key)
	}
	f.key = schemas.APIKeyCreated{Key: key[1], Secret: key[2]}
	others, err := f.bus.NextJobID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.bus.Append(context.Background(), others, schemas.JobCreated{Settings: map[string]string{"TEST": "bobs"}, Owner: "bob"}); err != nil {
		t.Fatal(err)
	}
	if code := f.do("POST", "/api/v1/jobs/"+itoa(others)+"/cancel", "", nil, nil); code != http.StatusForbidden {
		t.Errorf("bob's job cancelled with alice's key of scope own: %d, want 403", code)
	}
	if code, page := b.post("/api_keys", url.Values{"csrf": {b.csrf("/api_keys")}, "scope": {"admin"}}); code != http.StatusForbidden || !strings.Contains(page, "only an admin") {
		t.Errorf("an admin's key made by a user who is none: %d", code)
	}
}

package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// The vector of openQA's python client's own test (test_add_auth_headers):
// secret bbbbbbbbbbbbbbbb, the URL "/api/v1/jobs " with build=foo~ and
// latest=true, frozen at 2020-02-27. The client signs "%20" as "+" and "~"
// as "%7E", which is what the canonical query makes of "~".
func TestOpenQASignatureOfTheirClientsTest(t *testing.T) {
	got := OpenQASignature("bbbbbbbbbbbbbbbb", "/api/v1/jobs+", "build=foo~&latest=true", "1582761600.0")
	if want := "ba843dec1b4a2dfb1d20707fa72b45e736373b33"; got != want {
		t.Fatalf("hash %s, want %s", got, want)
	}
}

func TestCanonicalQuery(t *testing.T) {
	for raw, want := range map[string]string{
		"":                        "",
		"a=1&b=2":                 "a=1&b=2",
		"b=2&a=1":                 "b=2&a=1",
		"build=foo~":              "build=foo%7E",
		"build=foo%7E":            "build=foo%7E",
		"test=a%20b":              "test=a+b",
		"test=a+b":                "test=a+b",
		"x=%2a%2D%2E%5F":          "x=*-._",
		"DISTRI=opensuse&ISO=a/b": "DISTRI=opensuse&ISO=a%2Fb",
		"flag":                    "flag=",
		"a=%zz":                   "a=%25zz",
		"a=1&&b=2":                "a=1&b=2",
		"k%C3%A9=v":               "k%C3%A9=v",
	} {
		if got := CanonicalQuery(raw); got != want {
			t.Errorf("CanonicalQuery(%q) = %q, want %q", raw, got, want)
		}
	}
}

// keysFor starts a server with one valid, one revoked and one expired key.
func keysFor(t *testing.T) (*Keys, streams.APIKey, *streams.Bus) {
	t.Helper()
	bus := natstest.Start(t).Bus("api")
	ctx := context.Background()
	k := NewKeys(bus.UseNonce)
	made, err := bus.CreateAPIKey(ctx, "alice", time.Time{}, schemas.ScopeOperator)
	if err != nil {
		t.Fatal(err)
	}
	revoked, err := bus.CreateAPIKey(ctx, "bob", time.Time{}, schemas.ScopeOperator)
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.RevokeAPIKey(ctx, revoked.Key); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.CreateAPIKey(ctx, "carol", time.Now().Add(-time.Hour), schemas.ScopeOperator); err != nil {
		t.Fatal(err)
	}
	keys, err := bus.APIKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 3 || !keys[revoked.Key].Revoked {
		t.Fatalf("keys read back: %+v", keys)
	}
	for _, key := range keys {
		k.Set(key)
	}
	return k, keys[made.Key], bus
}

func openQARequest(key streams.APIKey, secret, target string, at time.Time) *http.Request {
	r := httptest.NewRequest(http.MethodPost, target, nil)
	stamp := strconv.FormatFloat(float64(at.UnixNano())/1e9, 'f', 6, 64)
	r.Header.Set("X-API-Key", key.Key)
	r.Header.Set("X-API-Microtime", stamp)
	r.Header.Set("X-API-Hash", OpenQASignature(secret, r.URL.EscapedPath(), r.URL.RawQuery, stamp))
	return r
}

func TestOpenQASignedRequests(t *testing.T) {
	keys, alice, bus := keysFor(t)
	all, err := bus.APIKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	// Signed over the canonical form, sent as the client wrote it.
	r := openQARequest(alice, alice.Secret, "/api/v1/jobs?BUILD=a~b&TEST=x+y", now)
	r.URL.RawQuery = "BUILD=a%7Eb&TEST=x%20y"
	if user, err := keys.Check(r); err != nil || user != "alice" {
		t.Fatalf("a query with ~ and %%20 signed over the canonical form: %q, %v", user, err)
	}
	if _, err := keys.Check(openQARequest(alice, alice.Secret, "/api/v1/jobs/1/cancel", now.Add(-299*time.Second))); err != nil {
		t.Fatalf("4:59 old: %v", err)
	}
	refused := map[string]*http.Request{
		"wrong secret":    openQARequest(alice, "0000000000000000", "/api/v1/jobs", now),
		"stale (1 h)":     openQARequest(alice, alice.Secret, "/api/v1/jobs", now.Add(-time.Hour)),
		"from the future": openQARequest(alice, alice.Secret, "/api/v1/jobs", now.Add(10*time.Minute)),
		"unknown key":     openQARequest(streams.APIKey{APIKeyCreated: schemas.APIKeyCreated{Key: "0123456789ABCDEF"}}, alice.Secret, "/api/v1/jobs", now),
		"no key":          httptest.NewRequest(http.MethodPost, "/api/v1/jobs", nil),
	}
	for _, k := range all {
		if k.User != "alice" {
			refused[k.User+"'s key ("+map[bool]string{true: "revoked", false: "expired"}[k.Revoked]+")"] = openQARequest(k, k.Secret, "/api/v1/jobs", now)
		}
	}
	other := openQARequest(alice, alice.Secret, "/api/v1/jobs/1/cancel", now)
	other.URL.Path = "/api/v1/jobs/2/cancel"
	refused["signed for another path"] = other
	for name, r := range refused {
		if user, err := keys.Check(r); !errors.Is(err, ErrNotAuthorized) {
			t.Errorf("%s: user %q, %v; want refused", name, user, err)
		}
	}
}

func jetqaRequest(key streams.APIKey, method, target string, body []byte, at time.Time, nonce string) *http.Request {
	r := httptest.NewRequest(method, target, bytes.NewReader(body))
	stamp := strconv.FormatInt(at.Unix(), 10)
	r.Header.Set("X-Jetqa-Key", key.Key)
	r.Header.Set("X-Jetqa-Time", stamp)
	r.Header.Set("X-Jetqa-Nonce", nonce)
	r.Header.Set("X-Jetqa-Signature", JetqaSignature(key.Secret, method, r.URL.EscapedPath(), r.URL.RawQuery, body, stamp, nonce))
	return r
}

func TestJetqaSignedRequestsCannotBeReplayed(t *testing.T) {
	keys, alice, _ := keysFor(t)
	now := time.Now()
	body := []byte("TEST=textmode&DISTRI=opensuse")
	send := func(r *http.Request) (string, error) {
		user, err := keys.Check(r)
		if err == nil {
			// The handler still reads the body.
			if got := new(bytes.Buffer); func() error { _, e := got.ReadFrom(r.Body); return e }() != nil || !bytes.Equal(got.Bytes(), body) {
				t.Fatalf("the body after the check: %q", got)
			}
		}
		return user, err
	}
	if user, err := send(jetqaRequest(alice, http.MethodPost, "/api/v1/jobs", body, now, "nonce-0000000000001")); err != nil || user != "alice" {
		t.Fatalf("signed: %q, %v", user, err)
	}
	if _, err := send(jetqaRequest(alice, http.MethodPost, "/api/v1/jobs", body, now, "nonce-0000000000001")); !errors.Is(err, ErrNotAuthorized) || !strings.Contains(err.Error(), "replayed") {
		t.Fatalf("the same request again: %v, want refused as a replay", err)
	}
	tampered := jetqaRequest(alice, http.MethodPost, "/api/v1/jobs", body, now, "nonce-0000000000002")
	tampered.Body = http.NoBody
	if _, err := keys.Check(tampered); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("another body: %v, want refused", err)
	}
	// A refused signature does not use up its nonce.
	if _, err := send(jetqaRequest(alice, http.MethodPost, "/api/v1/jobs", body, now, "nonce-0000000000002")); err != nil {
		t.Fatalf("the nonce of a refused request, signed right: %v", err)
	}
	if _, err := keys.Check(jetqaRequest(alice, http.MethodDelete, "/api/v1/jobs", body, now, "nonce-0000000000003")); err == nil {
		t.Log("DELETE signed as DELETE is accepted, as it should")
	} else {
		t.Fatal(err)
	}
	wrongMethod := jetqaRequest(alice, http.MethodDelete, "/api/v1/jobs", nil, now, "nonce-0000000000004")
	wrongMethod.Method = http.MethodPost
	if _, err := keys.Check(wrongMethod); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("signed for DELETE, sent as POST: %v, want refused", err)
	}
	if _, err := keys.Check(jetqaRequest(alice, http.MethodPost, "/api/v1/jobs", nil, now, "short")); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("a short nonce: %v, want refused", err)
	}
	if _, err := keys.Check(jetqaRequest(alice, http.MethodPost, "/api/v1/jobs", nil, now.Add(-time.Hour), "nonce-0000000000005")); !errors.Is(err, ErrNotAuthorized) {
		t.Fatalf("an hour old: %v, want refused", err)
	}
}

// The parsers of what a request carries never panic, and a canonical
// query is its own canonical form.
func FuzzCanonicalQuery(f *testing.F) {
	for _, s := range []string{"", "a=1&b=2", "build=foo~", "x=%zz%", "a+b=c%20d", "&&=&", "k%C3%A9=v"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		c := CanonicalQuery(raw)
		if again := CanonicalQuery(c); again != c {
			t.Fatalf("CanonicalQuery(%q) = %q, and of that %q", raw, c, again)
		}
	})
}

func FuzzCheck(f *testing.F) {
	f.Add("0123456789ABCDEF", "1582761600.0", "deadbeef", "/api/v1/jobs?a=b")
	f.Add("", "NaN", "", "/")
	f.Add("K", "1e400", "x", "/api/v1/jobs/%zz")
	keys := NewKeys(func(context.Context, string, string) error { return nil })
	keys.Set(streams.APIKey{APIKeyCreated: schemas.APIKeyCreated{Key: "0123456789ABCDEF", Secret: "s", User: "u"}})
	f.Fuzz(func(t *testing.T, key, stamp, hash, target string) {
		r, err := http.NewRequest(http.MethodPost, "http://x"+target, nil)
		if err != nil {
			return
		}
		for _, scheme := range []string{"X-API-Key", "X-Jetqa-Key"} {
			r.Header = http.Header{}
			r.Header.Set(scheme, key)
			r.Header.Set("X-API-Microtime", stamp)
			r.Header.Set("X-API-Hash", hash)
			r.Header.Set("X-Jetqa-Time", stamp)
			r.Header.Set("X-Jetqa-Nonce", hash+"0123456789abcdef")
			r.Header.Set("X-Jetqa-Signature", hash)
			if user, err := keys.Check(r); err == nil {
				t.Fatalf("accepted an unsigned request as %q", user)
			}
		}
	})
}

// Writing routes take a signed request; a refused one changes nothing.
// Reading stays public.
func TestWritesNeedASignature(t *testing.T) {
	f := start(t)
	before, err := f.bus.LastSequence(context.Background(), streams.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/api/v1/jobs?TEST=x", "/api/v1/jobs/1/cancel", "/api/v1/jobs/1/restart"} {
		resp, err := http.Post(f.base+path, "application/x-www-form-urlencoded", strings.NewReader("TEST=y"))
		if err != nil {
			t.Fatal(err)
		}
		var e struct {
			Error  string `json:"error"`
			Status int    `json:"error_status"`
		}
		err = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || err != nil || e.Status != 403 || !strings.Contains(e.Error, "no API key") {
			t.Errorf("unsigned POST %s: %s %+v %v", path, resp.Status, e, err)
		}
	}
	after, err := f.bus.LastSequence(context.Background(), streams.StreamJobs)
	if err != nil || after != before {
		t.Fatalf("refused requests changed the job stream: %d → %d (%v)", before, after, err)
	}
	var created struct{ ID int64 }
	if code := f.do(http.MethodPost, "/api/v1/jobs?TEST=signed", "", nil, &created); code != 200 || created.ID == 0 {
		t.Fatalf("signed POST: %d %+v", code, created)
	}
	if code := f.do(http.MethodGet, "/api/v1/jobs", "", nil, nil); code != 200 {
		t.Fatalf("reading the job list: %d", code)
	}
}

// The job settings parser takes any body and query without panicking, and
// what it accepts has only names a setting can have.
func FuzzReadSettings(f *testing.F) {
	f.Add("application/x-www-form-urlencoded", "TEST=a&DISTRI=b", "ISO=x.iso")
	f.Add("application/json", `{"TEST":"json","QEMURAM":512,"X":true}`, "")
	f.Add("application/json", `{"A":{"b":1}}`, "")
	f.Add("text/plain", "%zz", "a=%")
	f.Fuzz(func(t *testing.T, contentType, body, query string) {
		r, err := http.NewRequest(http.MethodPost, "http://x/api/v1/jobs", strings.NewReader(body))
		if err != nil {
			return
		}
		r.URL.RawQuery = query
		r.Header.Set("Content-Type", contentType)
		settings, err := readSettings(r)
		if err != nil {
			return
		}
		for k := range settings {
			if k == "" || strings.ContainsAny(k, " \t\n=") {
				t.Fatalf("accepted the setting name %q", k)
			}
		}
	})
}

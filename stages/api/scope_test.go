package api

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"jetqa/schemas"
)

// as signs the fixture's requests with a new key of user and scope, once
// the server knows it.
func (f *fixture) as(user string, scope schemas.KeyScope) {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k, err := f.bus.CreateAPIKey(ctx, user, time.Time{}, scope)
	if err != nil {
		f.t.Fatal(err)
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, ok := f.srv.keys.lookup(k.Key); ok {
			break
		}
		select {
		case <-ctx.Done():
			f.t.Fatalf("the server never learnt key %s", k.Key)
		case <-tick.C:
		}
	}
	f.key = k
}

// post posts a job as the fixture's key and returns its id.
func (f *fixture) post(test string) int64 {
	f.t.Helper()
	var created struct{ ID int64 }
	if code := f.do(http.MethodPost, "/api/v1/jobs", "application/json", strings.NewReader(`{"TEST":"`+test+`"}`), &created); code != http.StatusOK {
		f.t.Fatalf("post %s as %s: %d", test, f.key.User, code)
	}
	return created.ID
}

// A key of scope own changes its user's jobs only; an operator's changes
// every job; developer mode on another's job takes an admin. Each refusal
// says why and changes nothing.
func TestAKeysScopeBoundsWhatItChanges(t *testing.T) {
	f := start(t)
	f.as("bob", schemas.ScopeOperator)
	bobs, bobsDone := f.post("bobs"), f.post("bobs-done")
	if _, err := f.bus.Append(context.Background(), bobsDone, schemas.JobFinished{Result: schemas.ResultFailed, Reason: "test"}); err != nil {
		t.Fatal(err)
	}

	f.as("ci", schemas.ScopeOwn)
	own := f.post("mine")
	refused := func(method, path, want string) {
		t.Helper()
		var e struct{ Error string }
		if code := f.do(method, path, "application/json", strings.NewReader(`{"action":"pause"}`), &e); code != http.StatusForbidden || !strings.Contains(e.Error, want) {
			t.Errorf("%s %s with a key of scope own: %d %q, want 403 saying %q", method, path, code, e.Error, want)
		}
	}
	refused(http.MethodPost, "/api/v1/jobs/"+itoa(bobs)+"/cancel", "scope own) may cancel only jobs of ci")
	refused(http.MethodPost, "/api/v1/jobs/"+itoa(bobsDone)+"/restart", "may restart only jobs of ci")
	refused(http.MethodDelete, "/api/v1/jobs/"+itoa(bobsDone), "may delete only jobs of ci")
	refused(http.MethodPost, "/api/v1/jobs/"+itoa(bobs)+"/developer", "only its owner or an admin")
	if j, _ := f.job(bobs); j.State != schemas.StateScheduled {
		t.Errorf("bob's job after the refusals: %s", j.State)
	}
	if j, _ := f.job(bobsDone); j.Clone != 0 || j.State != schemas.StateDone {
		t.Errorf("bob's finished job after the refusals: %s, clone %d", j.State, j.Clone)
	}
	if code := f.do(http.MethodPost, "/api/v1/jobs/"+itoa(own)+"/cancel", "", nil, nil); code != http.StatusOK {
		t.Errorf("cancel its own job with a key of scope own: %d", code)
	}
	var restarted struct{ ID int64 }
	if code := f.do(http.MethodPost, "/api/v1/jobs/"+itoa(own)+"/restart", "", nil, &restarted); code != http.StatusOK {
		t.Errorf("restart its own job: %d", code)
	}
	if j, _ := f.job(restarted.ID); j.Owner != "ci" {
		t.Errorf("the clone belongs to %q, want ci", j.Owner)
	}

	f.as("alice", schemas.ScopeOperator)
	if code := f.do(http.MethodPost, "/api/v1/jobs/"+itoa(bobsDone)+"/restart", "", nil, nil); code != http.StatusOK {
		t.Errorf("an operator's key restarts another's job: %d", code)
	}
	refused = func(method, path, want string) {
		t.Helper()
		var e struct{ Error string }
		if code := f.do(method, path, "application/json", strings.NewReader(`{"action":"pause"}`), &e); code != http.StatusForbidden || !strings.Contains(e.Error, want) {
			t.Errorf("%s %s with an operator's key: %d %q, want 403 saying %q", method, path, code, e.Error, want)
		}
	}
	refused(http.MethodPost, "/api/v1/jobs/"+itoa(bobs)+"/developer", "only its owner or an admin")
	if code := f.do(http.MethodPost, "/api/v1/jobs/"+itoa(bobs)+"/cancel", "", nil, nil); code != http.StatusOK {
		t.Errorf("an operator's key cancels another's job: %d", code)
	}
}

// Keys made before scopes keep what they could do: an admin flag is the
// admin scope, no scope is an operator's.
func TestKeysOfBeforeScopesKeepTheirRights(t *testing.T) {
	for _, c := range []struct {
		event string
		want  schemas.KeyScope
	}{
		{`{"key":"A","secret":"S","user":"u"}`, schemas.ScopeOperator},
		{`{"key":"A","secret":"S","user":"u","admin":true}`, schemas.ScopeAdmin},
		{`{"key":"A","secret":"S","user":"u","scope":"own"}`, schemas.ScopeOwn},
	} {
		var k schemas.APIKeyCreated
		if err := json.Unmarshal([]byte(c.event), &k); err != nil {
			t.Fatal(err)
		}
		if got := k.Grants(); got != c.want {
			t.Errorf("%s grants %s, want %s", c.event, got, c.want)
		}
	}
	if _, err := schemas.ParseKeyScope("root"); err == nil || !strings.Contains(err.Error(), "use own") {
		t.Errorf("an unknown scope: %v", err)
	}
}

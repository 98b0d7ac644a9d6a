package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"jetqa/streams/natstest"
)

// GET /api/v1/jobs takes openQA's filters, latest=1 and paging.
func TestListJobsFiltersAndPages(t *testing.T) {
	f := start(t)
	post := func(settings ...string) int64 {
		t.Helper()
		form := url.Values{}
		for _, kv := range settings {
			k, v, _ := strings.Cut(kv, "=")
			form.Set(k, v)
		}
		var created struct{ ID int64 }
		if code := f.do(http.MethodPost, "/api/v1/jobs", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()), &created); code != 200 {
			t.Fatalf("post %v: %d", settings, code)
		}
		return created.ID
	}
	base := []string{"DISTRI=opensuse", "VERSION=Tumbleweed", "FLAVOR=DVD", "ARCH=x86_64", "MACHINE=64bit"}
	a1 := post(append(base, "TEST=textmode", "BUILD=1")...)
	b1 := post(append(base, "TEST=gnome", "BUILD=1")...)
	a2 := post(append(base, "TEST=textmode", "BUILD=2")...)
	other := post("DISTRI=fedora", "VERSION=41", "FLAVOR=Server", "ARCH=aarch64", "TEST=base", "BUILD=2", "MACHINE=aarch64")
	list := func(query string) ([]int64, http.Header) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, f.base+"/api/v1/jobs?"+query, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ Jobs []JobView }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %s %v", query, resp.Status, err)
		}
		var ids []int64
		for _, j := range out.Jobs {
			ids = append(ids, j.ID)
		}
		return ids, resp.Header
	}
	for query, want := range map[string][]int64{
		"":                                     {other, a2, b1, a1},
		"test=textmode":                        {a2, a1},
		"build=2":                              {other, a2},
		"distri=fedora&arch=aarch64":           {other},
		"flavor=DVD&machine=64bit&build=1":     {b1, a1},
		"ids=" + itoa(a1) + "," + itoa(other):  {other, a1},
		"ids=" + itoa(a1) + "&ids=" + itoa(b1): {b1, a1},
		"latest=1":                             {other, a2, b1},
		"latest=1&distri=opensuse":             {a2, b1},
		"state=scheduled,running":              {other, a2, b1, a1},
		"state=done":                           nil,
		"limit=2":                              {other, a2},
		"limit=2&offset=2":                     {b1, a1},
		"offset=10":                            nil,
	} {
		got, _ := list(query)
		if !slices.Equal(got, want) {
			t.Errorf("%q: jobs %v, want %v", query, got, want)
		}
	}
	if _, h := list("limit=2"); !strings.Contains(h.Get("Link"), "offset=2") || !strings.Contains(h.Get("Link"), `rel="next"`) {
		t.Errorf("limit=2: Link %q, want the next page", h.Get("Link"))
	}
	if _, h := list("limit=2&offset=2"); h.Get("Link") != "" {
		t.Errorf("the last page has a Link %q", h.Get("Link"))
	}
	for _, bad := range []string{"limit=x", "limit=10001", "offset=-1", "ids=a"} {
		if code := f.do(http.MethodGet, "/api/v1/jobs?"+bad, "", nil, nil); code != 400 {
			t.Errorf("%s: %d, want 400", bad, code)
		}
	}
}

// DELETE /api/v1/jobs/ID removes a final job from the lists; a job that
// is not final is refused, and a deleted one is gone.
func TestDeleteJob(t *testing.T) {
	f := start(t)
	var created struct{ ID int64 }
	if code := f.do(http.MethodPost, "/api/v1/jobs?TEST=a", "", nil, &created); code != 200 {
		t.Fatalf("post: %d", code)
	}
	id := itoa(created.ID)
	if code := f.do(http.MethodDelete, "/api/v1/jobs/"+id, "", nil, nil); code != http.StatusConflict {
		t.Fatalf("deleting a scheduled job: %d, want 409", code)
	}
	if code := f.do(http.MethodPost, "/api/v1/jobs/"+id+"/cancel", "", nil, nil); code != 200 {
		t.Fatalf("cancel: %d", code)
	}
	var out struct{ Result int }
	if code := f.do(http.MethodDelete, "/api/v1/jobs/"+id, "", nil, &out); code != 200 || out.Result != 1 {
		t.Fatalf("deleting the cancelled job: %d %+v", code, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	natstest.WaitUntil(t, ctx, func() error {
		if code := f.do(http.MethodGet, "/api/v1/jobs/"+id, "", nil, nil); code != http.StatusNotFound {
			return fmt.Errorf("the deleted job is still served: %d", code)
		}
		return nil
	})
	for _, req := range []struct{ method, path string }{
		{http.MethodDelete, "/api/v1/jobs/" + id},
		{http.MethodPost, "/api/v1/jobs/" + id + "/restart"},
		{http.MethodDelete, "/api/v1/jobs/999"},
	} {
		if code := f.do(req.method, req.path, "", nil, nil); code != http.StatusNotFound {
			t.Errorf("%s %s: %d, want 404", req.method, req.path, code)
		}
	}
	var list struct{ Jobs []JobView }
	if f.do(http.MethodGet, "/api/v1/jobs", "", nil, &list); len(list.Jobs) != 0 {
		t.Errorf("the list still has %v", list.Jobs)
	}
}

package api

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams/natstest"
)

// GET /api/v1/workers lists the worker instances in openQA's shape.
func TestWorkersInOpenQAShape(t *testing.T) {
	f := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a1, b1 := schemas.WorkerRef{Host: "a", Instance: 1}, schemas.WorkerRef{Host: "b", Instance: 1}
	a2 := schemas.WorkerRef{Host: "a", Instance: 2}
	for _, p := range []schemas.Payload{
		schemas.WorkerRegistered{Worker: a1, Classes: []string{"qemu_x86_64", "tap"}, Arch: "x86_64", CPUs: 4, MemoryMiB: 8192},
		schemas.WorkerRegistered{Worker: b1, Classes: []string{"qemu_aarch64"}, Arch: "aarch64"},
		schemas.WorkerRegistered{Worker: a2, Classes: []string{"qemu_x86_64"}, Arch: "x86_64"},
		schemas.WorkerHeartbeat{Worker: a1, Job: 7},
	} {
		if _, err := f.bus.Append(ctx, 0, p); err != nil {
			t.Fatal(err)
		}
	}
	// As the scheduler declares it, with the last sign of life it saw.
	if _, err := f.bus.Append(ctx, 0, schemas.WorkerOffline{Worker: b1, LastSeen: time.Now()}); err != nil {
		t.Fatal(err)
	}
	var out struct{ Workers []map[string]any }
	natstest.WaitUntil(t, ctx, func() error {
		out.Workers = nil
		if code := f.do(http.MethodGet, "/api/v1/workers", "", nil, &out); code != 200 {
			return fmt.Errorf("status %d", code)
		}
		if len(out.Workers) != 3 || out.Workers[1]["status"] != "dead" {
			return fmt.Errorf("workers %v", out.Workers)
		}
		return nil
	})
	w := out.Workers[0]
	for k, want := range map[string]any{"id": 1.0, "host": "a", "instance": 1.0, "status": "running", "jobid": 7.0, "alive": 1.0, "connected": 1.0, "websocket": 1.0, "error": nil} {
		if got, ok := w[k]; !ok || got != want {
			t.Errorf("worker a:1 %s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	if props, _ := w["properties"].(map[string]any); props["WORKER_CLASS"] != "qemu_x86_64,tap" || props["CPU_ARCH"] != "x86_64" {
		t.Errorf("worker a:1 properties %v", w["properties"])
	}
	if d := out.Workers[1]; d["host"] != "b" || d["alive"] != 0.0 || d["jobid"] != nil {
		t.Errorf("the offline worker: %v", d)
	}
	if i := out.Workers[2]; i["id"] != 3.0 || i["status"] != "idle" {
		t.Errorf("the idle worker: %v", i)
	}
	var page struct{ Workers []map[string]any }
	if code := f.do(http.MethodGet, "/api/v1/workers?limit=1&offset=1", "", nil, &page); code != 200 || len(page.Workers) != 1 || page.Workers[0]["id"] != 2.0 {
		t.Errorf("limit=1&offset=1: %d %v", code, page.Workers)
	}
	if code := f.do(http.MethodGet, "/api/v1/workers?limit=x", "", nil, nil); code != 400 {
		t.Errorf("limit=x: %d, want 400", code)
	}
	// A job assigned to a:2 names that instance's id, as openQA does.
	for _, p := range []schemas.Payload{schemas.JobCreated{Settings: map[string]string{"TEST": "t"}}, schemas.JobAssigned{Worker: a2}} {
		if _, err := f.bus.Append(ctx, 9, p); err != nil {
			t.Fatal(err)
		}
	}
	natstest.WaitUntil(t, ctx, func() error {
		var job struct{ Job map[string]any }
		if code := f.do(http.MethodGet, "/api/v1/jobs/9", "", nil, &job); code != 200 || job.Job["assigned_worker_id"] != 3.0 {
			return fmt.Errorf("job 9: %d %v", code, job.Job["assigned_worker_id"])
		}
		return nil
	})
}

// A job carries the fields openQA's job JSON always has (Jobs.pm to_hash):
// null where jetqa has nothing yet.
func TestJobInOpenQAShape(t *testing.T) {
	f := start(t)
	var created struct{ ID int64 }
	if code := f.do(http.MethodPost, "/api/v1/jobs?TEST=textmode&PRIORITY=40&DISTRI=opensuse", "", nil, &created); code != 200 {
		t.Fatalf("post: %d", code)
	}
	var out struct{ Job map[string]any }
	if code := f.do(http.MethodGet, "/api/v1/jobs/"+itoa(created.ID), "", nil, &out); code != 200 {
		t.Fatalf("get: %d", code)
	}
	for k, want := range map[string]any{"id": float64(created.ID), "priority": 40.0, "test": "textmode", "state": "scheduled", "result": "none", "group_id": nil, "blocked_by_id": nil, "clone_id": nil} {
		if got, ok := out.Job[k]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", k, got, ok, want)
		}
	}
	for _, k := range []string{"name", "settings", "t_started", "t_finished", "parents", "children"} {
		if _, ok := out.Job[k]; !ok {
			t.Errorf("no %s in %v", k, out.Job)
		}
	}
	if p, _ := out.Job["parents"].(map[string]any); p == nil || p["Chained"] == nil || p["Directly chained"] == nil || p["Parallel"] == nil {
		t.Errorf("parents %v, want openQA's three kinds", out.Job["parents"])
	}
}

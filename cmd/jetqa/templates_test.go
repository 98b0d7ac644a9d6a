package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"

	"jetqa/schemas"
)

// templatesRepo makes a git repository of job templates in openQA's job
// group format, with ids as os-autoinst/opensuse-jobgroups keeps them.
func templatesRepo(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	for p, content := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, p), content)
	}
	commitAll(t, repo, "templates")
	return dir
}

var testosTemplates = map[string]string{
	"job_groups.yaml": "7: testos\n",
	"job_groups/testos.yaml": `
.big: &big
  QEMURAM: '2048'
defaults:
  x86_64:
    machine: 64bit
    priority: 40
products:
  testos-*-demo-x86_64:
    distri: testos
    flavor: demo
    version: '*'
scenarios:
  x86_64:
    testos-*-demo-x86_64:
      - boot
      - install:
          machine: [64bit, uefi]
          settings:
            <<: *big
            HDD_1: 'testos-%VERSION%-%BUILD%@%MACHINE%.qcow2'
      - desktop:
          testsuite: boot
          priority: 60
          settings:
            START_AFTER_TEST: install
`,
	"definitions.yaml": `
machines:
  64bit:
    backend: qemu
    settings: {QEMUCPU: qemu64, WORKER_CLASS: qemu_x86_64}
  uefi:
    backend: qemu
    settings: {UEFI: '1', QEMURAM: '1024', WORKER_CLASS: qemu_x86_64}
test_suites:
  boot:
    settings: {DESKTOP: textmode, WORKER_CLASS: testos}
  install:
    settings: {INSTALLONLY: '1', QEMURAM: '1536'}
`,
	".github/workflows/ci.yml": "on: push\n",
}

// Products are scheduled from job templates loaded out of git, by
// openqa-cli, openqa_client and jetqa schedule, as openQA's POST
// /api/v1/isos: settings layered product < machine < test suite <
// template < request, chained parents first, _OBSOLETE ending the older
// build, and a child skipped when its parent does not pass.
func TestScheduleAProductFromJobTemplates(t *testing.T) {
	s := startServer(t)
	var out, errOut bytes.Buffer
	if err := dispatch([]string{"admin", "templates", "load", templatesRepo(t, map[string]string{"job_groups/broken.yaml": "products: {}\nscenarios:\n  x86_64:\n    nope: [boot]\n"}), "--nats", s.nats}, &out, &errOut); err == nil ||
		!strings.Contains(err.Error(), "job_groups/broken.yaml: scenarios.x86_64.nope: product nope is not defined under products") {
		t.Fatalf("broken templates: %v", err)
	}
	repo := templatesRepo(t, testosTemplates)
	if err := dispatch([]string{"admin", "templates", "load", repo, "--nats", s.nats}, &out, &errOut); err != nil {
		t.Fatalf("templates load: %v\n%s%s", err, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "1 job groups, 4 job templates, 2 machines, 2 test suites") || !strings.Contains(out.String(), "job group 7 testos") {
		t.Fatalf("templates load printed:\n%s", out.String())
	}

	out.Reset()
	if err := dispatch([]string{"admin", "templates", "show", "--nats", s.nats}, &out, &errOut); err != nil || !strings.Contains(out.String(), repo) ||
		!strings.Contains(out.String(), "1 job groups, 4 job templates") {
		t.Fatalf("templates show: %v\n%s", err, out.String())
	}
	var loaded struct {
		Commit    string
		JobGroups []struct{ ID int64 } `json:"job_groups"`
	}
	s.get(t, "/api/v1/templates", &loaded)
	if len(loaded.Commit) != 40 || len(loaded.JobGroups) != 1 || loaded.JobGroups[0].ID != 7 {
		t.Fatalf("GET /api/v1/templates: %+v", loaded)
	}

	c := newOpenQAClients(t, s)
	cli := func(args ...string) map[string]any {
		t.Helper()
		v, _ := c.apiCall(args...)
		return v
	}
	product := []string{"DISTRI=testos", "VERSION=1.0", "FLAVOR=demo", "ARCH=x86_64"}
	if missing := cli("-X", "POST", "isos", "DISTRI=testos", "FLAVOR=demo"); missing["error_status"] != 400.0 || !strings.Contains(missing["error"].(string), "VERSION ARCH") {
		t.Fatalf("isos without VERSION and ARCH: %v", missing)
	}
	if none := cli(append([]string{"-X", "POST", "isos", "BUILD=1"}, "DISTRI=other", "VERSION=1", "FLAVOR=demo", "ARCH=x86_64")...); none["count"] != 0.0 || !strings.Contains(none["error"].(string), "no products found for other-demo-x86_64") {
		t.Fatalf("isos for an unknown product: %v", none)
	}

	made := cli(append([]string{"-X", "POST", "isos", "BUILD=42", "ISO=testos.iso"}, product...)...)
	ids := jobIDs(t, made["ids"])
	if made["count"] != 4.0 || len(ids) != 4 {
		t.Fatalf("isos answered %v; want 4 jobs: boot, install on 64bit and uefi, desktop", made)
	}
	jobs := map[string]map[string]any{}
	for _, id := range ids {
		job, _ := cli("jobs/" + strconv.FormatInt(id, 10))["job"].(map[string]any)
		checkOpenQAShape(t, job, false)
		settings := job["settings"].(map[string]any)
		jobs[settings["TEST"].(string)+"@"+settings["MACHINE"].(string)] = job
	}
	uefi := jobs["install@uefi"]
	want := map[string]string{"HDD_1": "testos-1.0-42@uefi.qcow2", "UEFI": "1", "QEMURAM": "2048", "INSTALLONLY": "1",
		"WORKER_CLASS": "qemu_x86_64", "BACKEND": "qemu", "TEST_SUITE_NAME": "install", "ISO": "testos.iso", "BUILD": "42", "DISTRI": "testos"}
	for k, v := range want {
		if got := uefi["settings"].(map[string]any)[k]; got != v {
			t.Errorf("install@uefi %s = %v, want %s (product < machine < test suite < template < request)", k, got, v)
		}
	}
	if uefi["priority"] != 40.0 || uefi["group_id"] != 7.0 || uefi["group"] != "testos" || uefi["test"] != "install" {
		t.Errorf("install@uefi: priority %v group %v/%v test %v", uefi["priority"], uefi["group_id"], uefi["group"], uefi["test"])
	}
	desktop, parent := jobs["desktop@64bit"], jobs["install@64bit"]
	if desktop == nil || parent == nil {
		t.Fatalf("jobs made: %v", jobs)
	}
	if ds := desktop["settings"].(map[string]any); ds["TEST_SUITE_NAME"] != "boot" || ds["WORKER_CLASS"] != "qemu_x86_64,testos" || desktop["priority"] != 60.0 {
		t.Errorf("desktop: %v, priority %v", ds, desktop["priority"])
	}
	chained := desktop["parents"].(map[string]any)["Chained"].([]any)
	if len(chained) != 1 || chained[0] != parent["id"] || desktop["blocked_by_id"] != parent["id"] {
		t.Errorf("desktop: parents %v, blocked_by_id %v; want install@64bit, %v", desktop["parents"], desktop["blocked_by_id"], parent["id"])
	}
	if children := jobs["install@64bit"]["children"].(map[string]any)["Chained"].([]any); len(children) != 1 || children[0] != desktop["id"] {
		t.Errorf("install@64bit: children %v", children)
	}
	if parent["id"].(float64) > desktop["id"].(float64) {
		t.Errorf("parent %v created after its child %v", parent["id"], desktop["id"])
	}

	listed, _ := cli("jobs", "build=42")["jobs"].([]any)
	if len(listed) != 4 {
		t.Fatalf("jobs build=42: %v", listed)
	}
	for _, j := range listed {
		checkOpenQAShape(t, j.(map[string]any), true)
	}
	if a := uefi["assets"].(map[string]any); fmt.Sprint(a["iso"], a["hdd"]) != "[testos.iso] [testos-1.0-42@uefi.qcow2]" {
		t.Errorf("install@uefi assets %v, want openQA's by type", a)
	}

	// openqa_client schedules the next build, obsoleting the older one.
	py := `
import json, sys
from openqa_client.client import OpenQA_Client
c = OpenQA_Client(server=sys.argv[1], scheme="http", retries=0)
print(json.dumps(c.openqa_request("POST", "isos", params={"DISTRI": "testos", "VERSION": "1.0", "FLAVOR": "demo", "ARCH": "x86_64", "BUILD": "43", "_OBSOLETE": "1"})))
`
	pyOut, err := c.run("/usr/bin/python3", "-c", py, c.host)
	if err != nil {
		t.Fatalf("openqa_client: %v\n%s", err, pyOut)
	}
	var next struct {
		Count     int
		IDs       []int64
		Obsoleted []int64
	}
	lines := strings.Split(strings.TrimSpace(pyOut), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &next); err != nil || next.Count != 4 || len(next.Obsoleted) != 4 {
		t.Fatalf("openqa_client isos _OBSOLETE=1: %s (%v)", pyOut, err)
	}
	for _, id := range ids {
		if fin := s.finish(t, id, 10*time.Second); fin.Result != schemas.ResultObsoleted {
			t.Errorf("job %d of build 42 ended %s, want obsoleted", id, fin.Result)
		}
	}

	// jetqa schedule with TEST: the scenario and its parent. Cancelling
	// the parent skips the child.
	out.Reset()
	if err := dispatch(append([]string{"schedule", "--host", s.api, "BUILD=44", "TEST=desktop"}, product...), &out, &errOut); err != nil {
		t.Fatalf("jetqa schedule: %v\n%s", err, errOut.String())
	}
	if !strings.HasPrefix(out.String(), "2 jobs created:") {
		t.Fatalf("jetqa schedule TEST=desktop printed:\n%s", out.String())
	}
	var two []int64
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n")[1:] {
		id, err := strconv.ParseInt(line[strings.LastIndex(line, "/")+1:], 10, 64)
		if err != nil {
			t.Fatalf("jetqa schedule printed %q", line)
		}
		two = append(two, id)
	}
	s.postAction(t, two[0], "cancel", 200)
	fin := s.finish(t, two[1], 30*time.Second)
	if fin.Result != schemas.ResultSkipped || !strings.Contains(fin.Reason, "parent job "+strconv.FormatInt(two[0], 10)+" ended user_cancelled") {
		t.Fatalf("the child of a cancelled parent ended %s (%s), want skipped", fin.Result, fin.Reason)
	}
}

func jobIDs(t *testing.T, v any) []int64 {
	t.Helper()
	list, _ := v.([]any)
	out := make([]int64, 0, len(list))
	for _, id := range list {
		f, ok := id.(float64)
		if !ok {
			t.Fatalf("ids: %v", v)
		}
		out = append(out, int64(f))
	}
	return out
}

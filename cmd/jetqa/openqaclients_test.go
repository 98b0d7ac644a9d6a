package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"jetqa/schemas"
)

// openQA's own clients, Debian's openqa-cli (Perl) and openqa_client
// (python), post, read, list, cancel, restart and delete jobs and list
// workers on jetqa's API, signing with openQA's scheme.
func TestOpenQAClientsDriveTheAPI(t *testing.T) {
	s := startServer(t)
	c := newOpenQAClients(t, s)
	run, cli := c.run, c.mustAPI
	// A setting with a space and a tilde: signed over openQA's canonical query.
	posted := cli("-X", "POST", "jobs", "DISTRI=testos", "TEST=cli", "BUILD=a~b c")
	id, ok := posted["id"].(float64)
	if !ok || id <= 0 {
		t.Fatalf("POST jobs answered %v", posted)
	}
	jobPath := "jobs/" + strconv.FormatInt(int64(id), 10)
	job, _ := cli(jobPath)["job"].(map[string]any)
	if settings, _ := job["settings"].(map[string]any); job["state"] != "scheduled" || settings["BUILD"] != "a~b c" {
		t.Fatalf("%s: %v", jobPath, job)
	}
	if jobs, _ := cli("jobs", "test=cli", "latest=1")["jobs"].([]any); len(jobs) != 1 {
		t.Fatalf("jobs test=cli latest=1: %v", jobs)
	}
	cli("-X", "POST", jobPath+"/cancel")
	restarted := cli("-X", "POST", jobPath+"/restart")
	r, _ := restarted["result"].([]any)
	urls, _ := restarted["test_url"].([]any)
	if len(r) != 1 || len(urls) != 1 {
		t.Fatalf("restart answered %v, want result and test_url as openQA", restarted)
	}
	clone := r[0].(map[string]any)[strconv.FormatInt(int64(id), 10)]
	if u := urls[0].(map[string]any)[strconv.FormatInt(int64(id), 10)]; clone == nil || u != "/tests/"+strconv.FormatFloat(clone.(float64), 'f', 0, 64) {
		t.Fatalf("restart answered %v", restarted)
	}
	if d := cli("-X", "DELETE", jobPath); d["result"] != 1.0 {
		t.Fatalf("DELETE answered %v", d)
	}
	// A worker instance registers, as a worker host's does; the list has
	// openQA's fields (its t/api/01-workers.t), of openQA's kinds.
	reg := schemas.WorkerRegistered{Worker: schemas.WorkerRef{Host: "wh", Instance: 1}, Classes: []string{"qemu_x86_64"}, Arch: "x86_64", CPUs: 2, MemoryMiB: 2048}
	if _, err := s.bus.Append(context.Background(), 0, reg); err != nil {
		t.Fatal(err)
	}
	var workers []any
	for deadline := time.Now().Add(10 * time.Second); len(workers) == 0 && time.Now().Before(deadline); {
		workers, _ = cli("workers")["workers"].([]any)
	}
	if len(workers) != 1 {
		t.Fatalf("workers: %v", workers)
	}
	w := workers[0].(map[string]any)
	for field, want := range map[string]string{"id": "float64", "host": "string", "instance": "float64", "status": "string",
		"error": "<nil>", "properties": "map[string]interface {}", "alive": "float64", "connected": "float64", "websocket": "float64"} {
		if got := fmt.Sprintf("%T", w[field]); got != want {
			t.Errorf("worker %s is a %s (%v), openQA gives %s", field, got, w[field], want)
		}
	}
	if w["host"] != "wh" || w["instance"] != 1.0 || w["status"] != "idle" || w["properties"].(map[string]any)["WORKER_CLASS"] != "qemu_x86_64" {
		t.Errorf("worker %v", w)
	}
	// A wrong secret is refused, and nothing is created.
	if out, err := run("openqa-cli", "api", "--host", s.api, "--apikey", s.key.key, "--apisecret", "0000000000000000", "-X", "POST", "jobs", "TEST=forged"); err == nil || !strings.Contains(out, "403") {
		t.Fatalf("a wrong secret: %v %s; want 403", err, out)
	}
	if jobs, _ := cli("jobs", "test=forged")["jobs"].([]any); len(jobs) != 0 {
		t.Fatalf("the refused request created %v", jobs)
	}

	// openqa_client signs the query as requests encodes it, "~" and spaces
	// included.
	py := `
import json, sys
from openqa_client.client import OpenQA_Client
c = OpenQA_Client(server=sys.argv[1], scheme="http", retries=0)
made = c.openqa_request("POST", "jobs", params={"DISTRI": "testos", "TEST": "py", "BUILD": "x~y z"})
job = c.openqa_request("GET", "jobs/%d" % made["id"])["job"]
print(json.dumps({"id": made["id"], "build": job["settings"]["BUILD"], "state": job["state"]}))
`
	out, err := run("/usr/bin/python3", "-c", py, c.host)
	if err != nil {
		t.Fatalf("openqa_client: %v", err)
	}
	var got struct {
		ID    int64
		Build string
		State string
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &got); err != nil || got.ID == 0 || got.Build != "x~y z" || got.State != "scheduled" {
		t.Fatalf("openqa_client made %+v (%v)", got, err)
	}
}

// openQAJobShape is a job in openQA's API, field by field, as real
// openQA servers answer: `openqa-cli api jobs/23` in Rocky Linux's
// openQA documentation, and the GET /api/v1/jobs answers kept as
// fixtures by Fedora's fedora_openqa. The kinds are JSON's; "time" is
// openQA's "2023-06-19T16:54:22", "0|1" a number 0 or 1, "deps" the three
// dependency lists.
var openQAJobShape = map[string]string{
	"id": "number", "name": "string", "priority": "number", "state": "string", "result": "string",
	"test": "string", "settings": "strings", "assets": "lists", "clone_id": "null|number",
	"group_id": "null|number", "blocked_by_id": "null|number", "t_started": "null|time",
	"t_finished": "null|time", "parents": "deps", "children": "deps", "has_parents": "0|1",
	"parents_ok": "0|1",
}

// optional fields, there when they apply: group with group_id,
// assigned_worker_id once assigned, origin_id for a clone, reason.
var openQAJobOptional = map[string]string{"group": "string", "assigned_worker_id": "number", "origin_id": "number", "reason": "string"}

// checkOpenQAShape fails for each field of openQA's job that job lacks
// or gives in another JSON kind; list says it came from GET
// /api/v1/jobs, whose jobs have modules (name, category, result, flags).
func checkOpenQAShape(t *testing.T, job map[string]any, list bool) {
	t.Helper()
	timeRE := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$`)
	kindOf := func(v any, want string) bool {
		for _, k := range strings.Split(want, "|") {
			switch x := v.(type) {
			case nil:
				if k == "null" {
					return true
				}
			case float64:
				if k == "number" || (k == "0" && x == 0) || (k == "1" && x == 1) {
					return true
				}
			case string:
				if k == "string" || k == "time" && timeRE.MatchString(x) {
					return true
				}
			case map[string]any:
				ok := true
				for key, e := range x {
					switch k {
					case "strings":
						_, isString := e.(string)
						ok = ok && isString
					case "lists":
						_, isList := e.([]any)
						ok = ok && isList
					case "deps":
						_, isList := e.([]any)
						ok = ok && isList && slices.Contains([]string{"Chained", "Directly chained", "Parallel"}, key)
					default:
						ok = false
					}
				}
				if ok && (k != "deps" || len(x) == 3) {
					return true
				}
			}
		}
		return false
	}
	for field, want := range openQAJobShape {
		v, ok := job[field]
		if !ok {
			t.Errorf("job %v has no %q, which openQA's has", job["id"], field)
		} else if !kindOf(v, want) {
			t.Errorf("job %v: %s is %#v, openQA gives %s", job["id"], field, v, want)
		}
	}
	for field, want := range openQAJobOptional {
		if v, ok := job[field]; ok && !kindOf(v, want) {
			t.Errorf("job %v: %s is %#v, openQA gives %s", job["id"], field, v, want)
		}
	}
	if !list {
		return
	}
	modules, ok := job["modules"].([]any)
	if !ok {
		t.Fatalf("job %v in a list has no modules list: %#v", job["id"], job["modules"])
	}
	for _, m := range modules {
		m, _ := m.(map[string]any)
		if !kindOf(m["name"], "string") || !kindOf(m["category"], "string") || !kindOf(m["result"], "string") {
			t.Errorf("job %v: module %#v lacks openQA's name, category or result", job["id"], m)
		}
		if _, ok := m["flags"].([]any); !ok {
			t.Errorf("job %v: module %#v has no flags list", job["id"], m)
		}
	}
}

// openQAClients runs Debian's openQA clients against a jetqa API, with a
// home whose ~/.config/openqa/client.conf holds the test's key: a section
// per host, the host alone for openqa-cli, host:port for openqa_client.
type openQAClients struct {
	t    *testing.T
	api  string
	host string // HOST:PORT, as openqa_client is given it
	home string
}

func newOpenQAClients(t *testing.T, s *system) *openQAClients {
	t.Helper()
	for _, tool := range []string{"openqa-cli", "/usr/bin/python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: `bash deploy/install-deps.sh test` installs openQA's clients (%v)", tool, err)
		}
	}
	u, err := url.Parse(s.api)
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".config", "openqa"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(home, ".config", "openqa", "client.conf"),
		"["+u.Hostname()+"]\nkey = "+s.key.key+"\nsecret = "+s.key.secret+"\n"+
			"["+u.Host+"]\nkey = "+s.key.key+"\nsecret = "+s.key.secret+"\n")
	return &openQAClients{t: t, api: s.api, host: u.Host, home: home}
}

// run runs a client program with the clients' home.
func (c *openQAClients) run(name string, args ...string) (string, error) {
	c.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), "HOME="+c.home)
	out, err := cmd.CombinedOutput()
	c.t.Logf("%s %s\n%s", name, strings.Join(args, " "), out)
	return string(out), err
}

// apiCall runs `openqa-cli api --host API ARGS…` and decodes the JSON
// object it printed, whatever the status: on an error status openqa-cli
// prints a coloured status line first.
func (c *openQAClients) apiCall(args ...string) (map[string]any, error) {
	c.t.Helper()
	out, err := c.run("openqa-cli", append([]string{"api", "--host", c.api}, args...)...)
	body := []byte(strings.TrimSpace(out))
	body = body[bytes.LastIndexByte(body, '\n')+1:]
	body = body[max(bytes.IndexByte(body, '{'), 0):]
	var v map[string]any
	if jerr := json.Unmarshal(body, &v); jerr != nil {
		c.t.Fatalf("openqa-cli %v: %v, printed no JSON object: %v", args, err, jerr)
	}
	return v, err
}

// mustAPI is apiCall for a call that must succeed.
func (c *openQAClients) mustAPI(args ...string) map[string]any {
	c.t.Helper()
	v, err := c.apiCall(args...)
	if err != nil {
		c.t.Fatalf("openqa-cli %v: %v", args, err)
	}
	return v
}

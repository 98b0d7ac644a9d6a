package main

import (
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// openQA's own clients, Debian's openqa-cli (Perl) and openqa_client
// (python), post, read, list, cancel, restart and delete jobs and list
// workers on jetqa's API, signing with openQA's scheme.
func TestOpenQAClientsDriveTheAPI(t *testing.T) {
	for _, tool := range []string{"openqa-cli", "/usr/bin/python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is missing: `bash deploy/install-deps.sh test` installs openQA's clients (%v)", tool, err)
		}
	}
	s := startServer(t)
	u, err := url.Parse(s.api)
	if err != nil {
		t.Fatal(err)
	}
	// Both read ~/.config/openqa/client.conf, a section per host: the
	// host alone for openqa-cli, host:port for openqa_client.
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".config", "openqa"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(home, ".config", "openqa", "client.conf"),
		"["+u.Hostname()+"]\nkey = "+s.key.key+"\nsecret = "+s.key.secret+"\n"+
			"["+u.Host+"]\nkey = "+s.key.key+"\nsecret = "+s.key.secret+"\n")
	run := func(name string, args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Env = append(os.Environ(), "HOME="+home)
		out, err := cmd.CombinedOutput()
		t.Logf("%s %s\n%s", name, strings.Join(args, " "), out)
		return string(out), err
	}
	cli := func(args ...string) map[string]any {
		t.Helper()
		out, err := run("openqa-cli", append([]string{"api", "--host", s.api}, args...)...)
		if err != nil {
			t.Fatalf("openqa-cli %v: %v", args, err)
		}
		var v map[string]any
		if err := json.Unmarshal([]byte(out), &v); err != nil {
			t.Fatalf("openqa-cli %v printed no JSON object: %v", args, err)
		}
		return v
	}
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
	if _, ok := cli("workers")["workers"].([]any); !ok {
		t.Fatal("workers: no list")
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
	out, err := run("/usr/bin/python3", "-c", py, u.Host)
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

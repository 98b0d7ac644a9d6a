package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"jetqa/streams/natstest"
)

// An operator creates, lists and revokes API keys with the CLI; the keys
// are events the server reads back.
func TestAdminAPIKeys(t *testing.T) {
	s := startSystem(t)
	admin := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := cmdAdmin(append(append([]string{"apikey"}, args...), "--nats", s.nats), &out, &errOut)
		return out.String(), errOut.String(), err
	}
	out, _, err := admin("create", "--user", "alice", "--expires", "720h")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^key = ([0-9A-F]{16})\nsecret = ([0-9A-F]{16})$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("create printed %q, want client.conf lines with a key and a secret", out)
	}
	key := m[1]
	list, _, err := admin("list")
	if err != nil || !regexp.MustCompile(key+`\s+alice\s+operator\s+\S+\s+\S+\s+valid`).MatchString(list) {
		t.Fatalf("list: %v\n%s", err, list)
	}
	if strings.Contains(list, m[2]) {
		t.Fatalf("list shows the secret:\n%s", list)
	}
	if _, _, err := admin("revoke", key); err != nil {
		t.Fatal(err)
	}
	if list, _, _ = admin("list"); !regexp.MustCompile(key + `\s+alice\s.*revoked`).MatchString(list) {
		t.Fatalf("after revoke:\n%s", list)
	}
	out, _, err = admin("create", "--user", "root", "--admin")
	if err != nil {
		t.Fatal(err)
	}
	rootKey := regexp.MustCompile(`(?m)^key = ([0-9A-F]{16})$`).FindStringSubmatch(out)
	if list, _, _ = admin("list"); rootKey == nil || !regexp.MustCompile(rootKey[1]+`\s+root\s+admin\s.*valid`).MatchString(list) {
		t.Fatalf("an admin's key:\n%s\n%s", out, list)
	}
	out, _, err = admin("create", "--user", "ci", "--scope", "own")
	ciKey := regexp.MustCompile(`(?m)^key = ([0-9A-F]{16})$`).FindStringSubmatch(out)
	if list, _, _ = admin("list"); err != nil || ciKey == nil || !regexp.MustCompile(ciKey[1]+`\s+ci\s+own\s.*valid`).MatchString(list) {
		t.Fatalf("a key of scope own: %v\n%s\n%s", err, out, list)
	}
	if _, _, err := admin("create", "--user", "ci", "--scope", "everything"); err == nil || !strings.Contains(err.Error(), "use own") {
		t.Fatalf("an unknown scope: %v", err)
	}
	var code exitCode
	if _, msg, err := admin("create"); !errors.As(err, &code) || !strings.Contains(msg, "--user") {
		t.Fatalf("create without a user: %v %q", err, msg)
	}
	if _, _, err := admin("create", "--user", "bob", "--expires", time.Now().Add(-48*time.Hour).Format("2006-01-02")); err == nil || !strings.Contains(err.Error(), "past") {
		t.Fatalf("expiring yesterday: %v", err)
	}
	if _, _, err := admin("revoke", "0123456789ABCDEF"); err == nil || !strings.Contains(err.Error(), "no such API key") {
		t.Fatalf("revoking a key never made: %v", err)
	}
}

// `jetqa worker list` shows the instances the API knows.
func TestWorkerListCLI(t *testing.T) {
	s := startSystem(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	natstest.WaitUntil(t, ctx, func() error {
		var out, errOut bytes.Buffer
		err := dispatch([]string{"worker", "list", "--api", s.api}, &out, &errOut)
		if err == nil && !regexp.MustCompile(`(?m)^1\s+e2e:1\s+idle\s+-\s+qemu_x86_64\s`).MatchString(out.String()) {
			err = fmt.Errorf("worker list printed\n%s", out.String())
		}
		return err
	})
	var out, errOut bytes.Buffer
	if err := dispatch([]string{"worker", "list", "--api", s.api, "--json"}, &out, &errOut); err != nil || !strings.HasPrefix(out.String(), `{"workers":[{"id":1,"host":"e2e"`) {
		t.Fatalf("worker list --json: %v %s", err, out.String())
	}
	id := s.post(t, map[string]string{"TEST": "shown", "WORKER_CLASS": "nobody_has_this"})
	out.Reset()
	if err := dispatch([]string{"job", "show", "--api", s.api, "--json", strconv.FormatInt(id, 10)}, &out, &errOut); err != nil || !strings.Contains(out.String(), `"test":"shown"`) {
		t.Fatalf("job show --json: %v %s", err, out.String())
	}
}

func TestHostURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://jetqa.example.org:9526": "http://jetqa.example.org:9526",
		"https://jetqa.example.org":     "https://jetqa.example.org",
		"jetqa.example.org":             "http://jetqa.example.org:9526",
		"10.0.0.1:8080":                 "http://10.0.0.1:8080",
		"::1":                           "http://[::1]:9526",
	} {
		if got := hostURL(in); got != want {
			t.Errorf("hostURL(%q) = %q, want %q", in, got, want)
		}
	}
}

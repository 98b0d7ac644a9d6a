package main

import (
	"bytes"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
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
	if err != nil || !regexp.MustCompile(key+`\s+alice\s+\S+\s+\S+\s+valid`).MatchString(list) {
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

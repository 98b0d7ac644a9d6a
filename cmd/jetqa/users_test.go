package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// An operator adds, lists and removes the web UI's users with the CLI,
// the password on standard input or in a file; the users are events the
// server reads back.
func TestAdminUsers(t *testing.T) {
	s := startServerWithMatchers(t, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	user := func(stdin string, args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := cmdAdminUser(append(args, "--nats", s.nats), strings.NewReader(stdin), &out, &errOut)
		return out.String(), errOut.String(), err
	}
	if out, _, err := user("secret123\n", "add", "--user", "alice"); err != nil || !strings.Contains(out, "user alice added") {
		t.Fatalf("add alice: %v %q", err, out)
	}
	file := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(file, []byte("root password\r\nsecond line\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := user("", "add", "--user", "root", "--admin", "--password-file", file); err != nil {
		t.Fatalf("add root: %v", err)
	}
	var list bytes.Buffer
	if err := dispatch([]string{"admin", "user", "list", "--nats", s.nats}, &list, &list); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^USER\s+ROLE\s+PASSWORD SET\nalice\s+user\s+\S+\nroot\s+admin\s+\S+\n$`).MatchString(list.String()) {
		t.Fatalf("list:\n%s", list.String())
	}
	if strings.Contains(list.String(), "$2") {
		t.Fatalf("list shows a password hash:\n%s", list.String())
	}
	users, err := s.bus.Users(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !users["alice"].CheckPassword("secret123") || !users["root"].CheckPassword("root password") || !users["root"].Admin {
		t.Fatalf("the passwords given are not the users': %+v", users)
	}

	if out, _, err := user("another one\n", "add", "--user", "alice"); err != nil || !strings.Contains(out, "new password") {
		t.Fatalf("a new password for alice: %v %q", err, out)
	}
	if users, _ = s.bus.Users(ctx); users["alice"].CheckPassword("secret123") || !users["alice"].CheckPassword("another one") {
		t.Fatal("alice's old password still signs her in")
	}
	if _, _, err := user("", "remove", "--user", "alice"); err != nil {
		t.Fatal(err)
	}
	out, _, _ := user("", "list")
	if strings.Contains(out, "alice") || !strings.Contains(out, "root") {
		t.Fatalf("after removing alice:\n%s", out)
	}

	var code exitCode
	if _, msg, err := user("secret123\n", "add"); !errors.As(err, &code) || !strings.Contains(msg, "--user") {
		t.Errorf("add without a user: %v %q", err, msg)
	}
	if _, _, err := user("", "add", "--user", "bob"); err == nil || !strings.Contains(err.Error(), "no password on standard input") {
		t.Errorf("add with nothing on standard input: %v", err)
	}
	if _, _, err := user("short\n", "add", "--user", "bob"); err == nil || !strings.Contains(err.Error(), "too short") {
		t.Errorf("add with a short password: %v", err)
	}
	if _, _, err := user("secret123\n", "add", "--user", "b o b"); err == nil || !strings.Contains(err.Error(), "no spaces") {
		t.Errorf("add with a space in the name: %v", err)
	}
	if _, _, err := user("", "remove", "--user", "alice"); err == nil || !strings.Contains(err.Error(), "no such user") {
		t.Errorf("removing alice twice: %v", err)
	}
}

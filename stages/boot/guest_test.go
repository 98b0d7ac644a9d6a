package boot

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"jetqa/schemas"
)

// The guest's routes answer through GuestBridge as QEMU runs it: one
// bridge per connection, between the connection and the job's socket.
func TestGuestRoutesThroughTheBridge(t *testing.T) {
	dir := t.TempDir()
	caseDir, pool, results, jobDir := filepath.Join(dir, "case"), filepath.Join(dir, "pool"), filepath.Join(dir, "results"), filepath.Join(dir, "job")
	for name, content := range map[string]string{
		filepath.Join(caseDir, "data", "a.txt"):         "first\n",
		filepath.Join(caseDir, "data", "sub", "b.sh"):   "echo second\n",
		filepath.Join(pool, "vars.json"):                `{"DISTRI":"testos"}`,
		filepath.Join(pool, "current_script"):           "uname -a\n",
		filepath.Join(jobDir, "assets", "testos.iso"):   "iso bytes",
		filepath.Join(dir, "outside", "secret"):         "no",
		filepath.Join(caseDir, "data", "..", "main.pm"): "1;",
	} {
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(results, 0o755); err != nil {
		t.Fatal(err)
	}
	ready := &schemas.JobReady{CaseDir: caseDir, JobDir: jobDir, Settings: map[string]string{},
		Assets: map[string]string{"ISO": filepath.Join(jobDir, "assets", "testos.iso")}}
	g, err := newGuestRoutes(7, ready, pool, results, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sock, stop, err := serveGuest(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	// QEMU's side: each connection gets a bridge of its own.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = GuestBridge(sock, c, c)
			}()
		}
	}()
	base := "http://" + ln.Addr().String() + "/" + g.token
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for path, want := range map[string]string{
		"/data/a.txt":            "first\n",
		"/data/sub/b.sh":         "echo second\n",
		"/vars":                  `{"vars":{"DISTRI":"testos"}}`,
		"/current_script":        "uname -a\n",
		"/assets/iso/testos.iso": "iso bytes",
	} {
		if code, body := get(path); code != http.StatusOK || body != want {
			t.Errorf("GET %s: %d %q, want %q", path, code, body, want)
		}
	}
	for _, path := range []string{"/data/../main.pm", "/data/sub/../../../outside/secret", "/assets/iso/secret", "/data/none"} {
		if code, _ := get(path); code != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, code)
		}
	}
	resp, err := http.Get("http://" + ln.Addr().String() + "/wrongtoken/vars")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("another token: %d, want 404", resp.StatusCode)
	}

	// The directory comes as os-autoinst's cpio archive, which cpio reads.
	code, archive := get("/data")
	if code != http.StatusOK {
		t.Fatalf("GET /data: %d", code)
	}
	out := t.TempDir()
	cmd := exec.Command("cpio", "-id", "--quiet")
	cmd.Dir, cmd.Stdin = out, strings.NewReader(archive)
	if msg, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -id: %v: %s", err, msg)
	}
	for name, want := range map[string]string{"data/a.txt": "first\n", "data/sub/b.sh": "echo second\n"} {
		if got, err := os.ReadFile(filepath.Join(out, name)); err != nil || string(got) != want {
			t.Errorf("%s from the archive: %q, %v", name, got, err)
		}
	}

	// Uploads, as curl --form sends them.
	post := func(path string, fields ...string) (int, string) {
		t.Helper()
		var body bytes.Buffer
		mw := multipart.NewWriter(&body)
		for i := 0; i+1 < len(fields); i += 2 {
			if fields[i] == "upload" {
				fw, _ := mw.CreateFormFile("upload", "local.txt")
				io.WriteString(fw, fields[i+1])
			} else {
				mw.WriteField(fields[i], fields[i+1])
			}
		}
		mw.Close()
		resp, err := http.Post(base+path, mw.FormDataContentType(), &body)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post("/uploadlog/dmesg.txt", "upload", "kernel log", "upname", "boot-dmesg.txt"); code != http.StatusOK || body != "OK: boot-dmesg.txt\n" {
		t.Errorf("upload_logs: %d %q", code, body)
	}
	if got, err := os.ReadFile(filepath.Join(results, schemas.ULogsDir, "boot-dmesg.txt")); err != nil || string(got) != "kernel log" {
		t.Errorf("the uploaded log: %q, %v", got, err)
	}
	if code, body := post("/upload_asset/disk.qcow2", "upload", "disk", "target", "assets_public"); code != http.StatusOK || body != "OK: disk.qcow2\n" {
		t.Errorf("upload_asset public: %d %q", code, body)
	}
	if code, body := post("/upload_asset/notes.txt", "upload", "notes"); code != http.StatusOK || body != "OK: 7-notes.txt\n" {
		t.Errorf("upload_asset private: %d %q", code, body)
	}
	for _, bad := range [][]string{{"/uploadlog/x.txt", "upname", "x"}, {"/upload_asset/x", "upload", "x", "target", "elsewhere"}, {"/uploadlog/x", "upload", "x", "upname", ".hidden"}} {
		if code, _ := post(bad[0], bad[1:]...); code != http.StatusBadRequest {
			t.Errorf("POST %s %v: %d, want 400", bad[0], bad[1:], code)
		}
	}
	published := map[string]string{}
	g.publishInto(published)
	if len(published) != 2 || published["disk.qcow2"] != filepath.Join(jobDir, "publish", "disk.qcow2") || published["7-notes.txt"] == "" {
		t.Errorf("published %v", published)
	}
	if left, _ := filepath.Glob(filepath.Join(results, ".upload-*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

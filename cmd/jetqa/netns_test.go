package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// netns is a network namespace joined to the host by a veth pair: from
// inside, the host is hostIP and nothing else exists.
type netns struct {
	name, hostIP, nsIP string
}

// newNetns makes the namespace, or skips the test where that cannot be
// done (not root, no ip).
func newNetns(t *testing.T) netns {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("no ip command (Debian's iproute2)")
	}
	var b [2]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	n := netns{name: "jetqa-" + id, hostIP: fmt.Sprintf("10.231.%d.1", b[0]), nsIP: fmt.Sprintf("10.231.%d.2", b[0])}
	hostEnd, nsEnd := "jqh"+id, "jqw"+id
	ip := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v %s", strings.Join(args, " "), err, out)
		}
	}
	if out, err := exec.Command("ip", "netns", "add", n.name).CombinedOutput(); err != nil {
		t.Skipf("cannot make a network namespace here: %v %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.name).Run() })
	// Entering a namespace remounts / as a slave: impossible where / is not
	// a mount point (a chroot), and then nothing can run inside.
	if out, err := exec.Command("ip", "netns", "exec", n.name, "true").CombinedOutput(); err != nil {
		t.Skipf("cannot enter a network namespace here (is / a mount point?): %v %s", err, out)
	}
	ip("link", "add", hostEnd, "type", "veth", "peer", "name", nsEnd)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", hostEnd).Run() })
	ip("link", "set", nsEnd, "netns", n.name)
	ip("addr", "add", n.hostIP+"/30", "dev", hostEnd)
	ip("link", "set", hostEnd, "up")
	ip("-n", n.name, "addr", "add", n.nsIP+"/30", "dev", nsEnd)
	ip("-n", n.name, "link", "set", nsEnd, "up")
	ip("-n", n.name, "link", "set", "lo", "up")
	return n
}

// TestWorkerInANamespaceReachingOnlyNATSOverTLS runs a worker process in
// a network namespace whose only way out is the server's NATS port, with
// TLS and issued credentials: it runs the testos demo job to passed.
func TestWorkerInANamespaceReachingOnlyNATSOverTLS(t *testing.T) {
	testos := testosDir(t)
	s := serverWithWorkerInNamespace(t, "netns-worker")
	id := s.post(t, demoSettings(testos))
	fin := s.finish(t, id, 5*time.Minute)
	if fin.Result != schemas.ResultPassed {
		t.Fatalf("job %d: %s (%s)", id, fin.Result, fin.Reason)
	}
	if w := s.show(t, id).Worker; !strings.HasPrefix(w, "netns-worker") {
		t.Fatalf("job %d ran on %q, want the worker in the namespace", id, w)
	}
}

// serverWithWorkerInNamespace starts a server whose NATS port, with TLS,
// is the only thing a network namespace reaches, and a worker process
// named host in that namespace with issued credentials.
func serverWithWorkerInNamespace(t *testing.T, host string) *system {
	t.Helper()
	n := newNetns(t)
	dir := t.TempDir()
	ca, err := streams.MakeLabCA(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := streams.MakeServerCert(ca, []string{n.hostIP, "127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	files := streams.TLSFiles{Cert: filepath.Join(dir, "server.pem"), Key: filepath.Join(dir, "server-key.pem"), CA: filepath.Join(dir, "ca.pem")}
	writeFile(t, files.Cert, string(cert.Cert))
	writeFile(t, files.Key, string(cert.Key))
	writeFile(t, files.CA, string(ca.Cert))
	clientTLS, err := streams.ClientTLS(files.CA)
	if err != nil {
		t.Fatal(err)
	}
	// NATS listens on the namespace's side of the host only; the API stays
	// on the host's loopback, which the namespace cannot reach.
	s := startServerWith(t, 1, embedConfig{Host: n.hostIP, Port: -1, TLS: files}, clientTLS)
	if !strings.HasPrefix(s.nats, "tls://"+n.hostIP+":") {
		t.Fatalf("the server's NATS URL is %s, want tls://%s:…", s.nats, n.hostIP)
	}
	_, apiPort, _ := net.SplitHostPort(strings.TrimPrefix(s.api, "http://"))
	if out, err := exec.Command("ip", "netns", "exec", n.name, "bash", "-c", fmt.Sprintf("timeout 3 bash -c '</dev/tcp/%s/%s'", n.hostIP, apiPort)).CombinedOutput(); err == nil {
		t.Fatalf("the namespace reaches the API port %s: %s", apiPort, out)
	}

	creds := s.issue(t, streams.RoleWorker, host)
	worker := exec.Command("ip", "netns", "exec", n.name, os.Args[0], "worker", "--nats", s.nats, "--creds", creds, "--tls-ca", files.CA,
		"--data", t.TempDir(), "--accel", "tcg", "--heartbeat", "500ms", "--asset-paths", testosPath())
	worker.Env = append(os.Environ(), "JETQA_RUN_MAIN=1")
	worker.Stderr = systemLog(t)
	if err := worker.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = worker.Process.Kill()
		_ = worker.Wait()
	})
	return s
}

// TestWorkerConnectsOverWebSocket connects with a worker's credentials
// through the WebSocket port with TLS (wss://), as a worker behind an HTTP
// proxy does, and reports on it.
func TestWorkerConnectsOverWebSocket(t *testing.T) {
	dir := t.TempDir()
	ca, err := streams.MakeLabCA(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := streams.MakeServerCert(ca, []string{"127.0.0.1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	files := streams.TLSFiles{Cert: filepath.Join(dir, "server.pem"), Key: filepath.Join(dir, "server-key.pem"), CA: filepath.Join(dir, "ca.pem")}
	writeFile(t, files.Cert, string(cert.Cert))
	writeFile(t, files.Key, string(cert.Key))
	writeFile(t, files.CA, string(ca.Cert))
	clientTLS, err := streams.ClientTLS(files.CA)
	if err != nil {
		t.Fatal(err)
	}
	wsPort := freePorts(t, 1)[0]
	s := startServerWith(t, 0, embedConfig{Host: "127.0.0.1", Port: -1, WSPort: wsPort, TLS: files}, clientTLS)
	id, err := streams.LoadIdentity(s.issue(t, streams.RoleWorker, "proxied"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := fmt.Sprintf("wss://127.0.0.1:%d", wsPort)
	b, err := streams.ConnectTo(ctx, streams.Dial{URLs: url, Identity: &id, TLS: clientTLS}, "boot@proxied:1", nil)
	if err != nil {
		t.Fatalf("connect over %s: %v", url, err)
	}
	defer b.Close()
	if _, err := b.Append(ctx, 0, schemas.WorkerRegistered{Worker: schemas.WorkerRef{Host: "proxied", Instance: 1}, Classes: []string{"qemu_x86_64"}}); err != nil {
		t.Fatalf("register over WebSocket: %v", err)
	}
	// Plain ws:// is refused: the port speaks TLS only.
	if _, err := streams.ConnectTo(ctx, streams.Dial{URLs: fmt.Sprintf("ws://127.0.0.1:%d", wsPort), Identity: &id}, "plain", nil); err == nil {
		t.Fatal("a plain ws:// connection was accepted")
	}
}

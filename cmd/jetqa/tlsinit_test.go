package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"jetqa/streams"
)

// tlsInit runs `jetqa admin tls init` with args and returns what it
// printed.
func tlsInit(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := cmdAdminTLSInit(args, &stdout, &stderr)
	if stderr.Len() > 0 {
		t.Logf("stderr: %s", stderr.String())
	}
	return stdout.String(), err
}

// serverCert loads a certificate and its key as a server would and checks
// that the lab CA in caFile vouches for it under each of hosts.
func serverCert(t *testing.T, caFile, certFile, keyFile string, hosts ...string) *x509.Certificate {
	t.Helper()
	cfg, err := streams.ServerTLS(streams.TLSFiles{Cert: certFile, Key: keyFile, CA: caFile})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := streams.RouteTLS(streams.TLSFiles{Cert: certFile, Key: keyFile, CA: caFile}); err != nil {
		t.Fatal(err)
	}
	leaf := cfg.Certificates[0].Leaf
	for _, host := range hosts {
		_, err := leaf.Verify(x509.VerifyOptions{
			DNSName:   host,
			Roots:     cfg.ClientCAs,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		})
		if err != nil {
			t.Errorf("%s for %s: %v", certFile, host, err)
		}
	}
	return leaf
}

func fileMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func readBytes(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAdminTLSInitWritesALab(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	out, err := tlsInit(t, "--dir", dir, "--hosts", "node1.lab, 10.0.0.7", "--days", "30")
	if err != nil {
		t.Fatal(err)
	}
	if m := fileMode(t, dir); m != 0o700 {
		t.Errorf("%s has mode %o, want 700", dir, m)
	}
	for name, want := range map[string]os.FileMode{
		"ca.pem": 0o644, "ca-key.pem": 0o600, "server.pem": 0o644, "server-key.pem": 0o600,
	} {
		if m := fileMode(t, filepath.Join(dir, name)); m != want {
			t.Errorf("%s has mode %o, want %o", name, m, want)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 4 {
		t.Errorf("%d files in %s, want the 4 written and no leftovers", len(entries), dir)
	}

	ca := filepath.Join(dir, "ca.pem")
	leaf := serverCert(t, ca, filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"), "node1.lab", "10.0.0.7")
	if d := time.Until(leaf.NotAfter); d < 29*24*time.Hour || d > 31*24*time.Hour {
		t.Errorf("server certificate valid until %s, want in 30 days", leaf.NotAfter)
	}
	caPair, err := tls.LoadX509KeyPair(ca, filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if c := caPair.Leaf; !c.IsCA || c.Subject.CommonName != streams.LabCAName || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA: IsCA %v, name %q, key usage %v", c.IsCA, c.Subject.CommonName, c.KeyUsage)
	}
	if d := time.Until(caPair.Leaf.NotAfter); d < 3649*24*time.Hour {
		t.Errorf("CA valid until %s, want in 3650 days", caPair.Leaf.NotAfter)
	}

	for _, want := range []string{
		"jetqa server --tls-cert " + filepath.Join(dir, "server.pem") + " --tls-key " + filepath.Join(dir, "server-key.pem"),
		"--nats tls://node1.lab:4222 --tls-ca " + ca,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output does not say %q:\n%s", want, out)
		}
	}
}

func TestAdminTLSInitKeepsExistingFiles(t *testing.T) {
	dir := t.TempDir()
	if _, err := tlsInit(t, "--dir", dir, "--hosts", "node1.lab"); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.pem")
	before := readBytes(t, ca)
	_, err := tlsInit(t, "--dir", dir, "--hosts", "node1.lab")
	if err == nil || !strings.Contains(err.Error(), ca) || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second run: error %v, want one naming %s and --force", err, ca)
	}
	if !bytes.Equal(readBytes(t, ca), before) {
		t.Fatal("a refused run changed the CA")
	}

	// --force replaces everything, also a key someone made readable.
	key := filepath.Join(dir, "server-key.pem")
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := tlsInit(t, "--dir", dir, "--hosts", "node1.lab", "--force"); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(readBytes(t, ca), before) {
		t.Error("--force kept the old CA")
	}
	if m := fileMode(t, key); m != 0o600 {
		t.Errorf("replaced key has mode %o, want 600", m)
	}
	serverCert(t, ca, filepath.Join(dir, "server.pem"), key, "node1.lab")
}

func TestAdminTLSInitServerOnly(t *testing.T) {
	dir := t.TempDir()
	if _, err := tlsInit(t, "--dir", dir, "--server-only", "--hosts", "node2.lab"); err == nil || !strings.Contains(err.Error(), "ca.pem") {
		t.Fatalf("--server-only without a CA: error %v, want one naming ca.pem", err)
	}
	if _, err := tlsInit(t, "--dir", dir, "--hosts", "node1.lab"); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca.pem")
	caBefore, serverBefore := readBytes(t, ca), readBytes(t, filepath.Join(dir, "server.pem"))

	out, err := tlsInit(t, "--dir", dir, "--server-only", "--hosts", "node2.lab,10.0.0.8")
	if err != nil {
		t.Fatal(err)
	}
	cert, key := filepath.Join(dir, "server-node2.lab.pem"), filepath.Join(dir, "server-node2.lab-key.pem")
	serverCert(t, ca, cert, key, "node2.lab", "10.0.0.8")
	if m := fileMode(t, key); m != 0o600 {
		t.Errorf("%s has mode %o, want 600", key, m)
	}
	if !bytes.Equal(readBytes(t, ca), caBefore) || !bytes.Equal(readBytes(t, filepath.Join(dir, "server.pem")), serverBefore) {
		t.Error("--server-only changed the CA or the first server's certificate")
	}
	if !strings.Contains(out, "--tls-cert server-node2.lab.pem --tls-key server-node2.lab-key.pem --tls-ca ca.pem") {
		t.Errorf("output does not say how to start node2:\n%s", out)
	}

	_, err = tlsInit(t, "--dir", dir, "--server-only", "--hosts", "node2.lab")
	if err == nil || !strings.Contains(err.Error(), cert) {
		t.Errorf("second --server-only: error %v, want one naming %s", err, cert)
	}
}

func TestAdminTLSInitDefaultHosts(t *testing.T) {
	dir := t.TempDir()
	if _, err := tlsInit(t, "--dir", dir); err != nil {
		t.Fatal(err)
	}
	name, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	leaf := serverCert(t, filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"),
		name, "localhost", "127.0.0.1", "::1")
	if !slices.ContainsFunc(leaf.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.IPv6loopback) }) {
		t.Errorf("IP addresses %v, want ::1 among them", leaf.IPAddresses)
	}
}

func TestAdminTLSInitRefusesBadFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--days", "0"},
		{"--hosts", " , "},
		{"extra"},
	} {
		dir := t.TempDir()
		if _, err := tlsInit(t, append([]string{"--dir", dir}, args...)...); err == nil {
			t.Errorf("%q: no error", args)
		}
		if entries, _ := os.ReadDir(dir); len(entries) > 0 {
			t.Errorf("%q: wrote %d files", args, len(entries))
		}
	}
}

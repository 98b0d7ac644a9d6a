package streams_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"jetqa/streams"
	"jetqa/streams/natstest"
)

// labFiles makes a lab CA and a certificate for a server on 127.0.0.1,
// writes them below a fresh directory and returns their paths.
func labFiles(t *testing.T) streams.TLSFiles {
	t.Helper()
	ca, err := streams.MakeLabCA(24 * time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := streams.MakeServerCert(ca, []string{"localhost", "127.0.0.1", "::1"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f := streams.TLSFiles{
		Cert: filepath.Join(dir, "server.pem"),
		Key:  filepath.Join(dir, "server-key.pem"),
		CA:   filepath.Join(dir, "ca.pem"),
	}
	for path, content := range map[string][]byte{f.Cert: srv.Cert, f.Key: srv.Key, f.CA: ca.Cert} {
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// startTLSServer starts an embedded NATS server whose client port speaks
// only TLS with cfg and returns its tls:// URL.
func startTLSServer(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		TLS: true, TLSConfig: cfg, TLSTimeout: 5,
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server with TLS did not become ready")
	}
	return "tls://" + ns.Addr().String()
}

func TestTLSClientTrustsLabCA(t *testing.T) {
	f := labFiles(t)
	serverCfg, err := streams.ServerTLS(f)
	if err != nil {
		t.Fatal(err)
	}
	if serverCfg.ClientAuth != tls.NoClientCert || serverCfg.ClientCAs == nil {
		t.Errorf("client port: ClientAuth %v, ClientCAs set %v; want no client certificate asked, the CA kept for nodes", serverCfg.ClientAuth, serverCfg.ClientCAs != nil)
	}
	url := startTLSServer(t, serverCfg)

	clientCfg, err := streams.ClientTLS(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, nats.Secure(clientCfg))
	if err != nil {
		t.Fatalf("connect with the lab CA: %v", err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync("tls.ping")
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish("tls.ping", []byte("over TLS")); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("round trip over TLS: %v", err)
	}
	if string(msg.Data) != "over TLS" {
		t.Errorf("got %q back", msg.Data)
	}
	state, err := nc.TLSConnectionState()
	if err != nil {
		t.Fatal(err)
	}
	if state.Version < tls.VersionTLS12 {
		t.Errorf("TLS version %x, want at least 1.2", state.Version)
	}
}

func TestTLSClientRefusesOtherCA(t *testing.T) {
	url := startTLSServer(t, serverTLS(t, labFiles(t)))
	other := labFiles(t) // another lab, another CA
	cfg, err := streams.ClientTLS(other.CA)
	if err != nil {
		t.Fatal(err)
	}
	nc, err := nats.Connect(url, nats.Secure(cfg))
	if err == nil {
		nc.Close()
		t.Fatal("connected to a server whose certificate another CA signed")
	}
	t.Logf("other CA: %v", err)
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Errorf("error %q (%T), want x509.UnknownAuthorityError", err, err)
	}
}

func TestTLSServerRefusesPlainText(t *testing.T) {
	url := startTLSServer(t, serverTLS(t, labFiles(t)))
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "tls://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	info, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info, `"tls_required":true`) {
		t.Errorf("INFO does not ask for TLS: %s", info)
	}
	if _, err := io.WriteString(conn, "CONNECT {\"verbose\":false}\r\nPING\r\n"); err != nil {
		t.Fatal(err)
	}
	// The server must hang up on a client that talks plain text, not
	// answer it; the deadline tells a silent server from a closed one.
	rest, err := io.ReadAll(r)
	var timeout net.Error
	if errors.As(err, &timeout) && timeout.Timeout() {
		t.Fatalf("the server neither answered nor hung up (read %q)", rest)
	}
	t.Logf("plain text: read %q, %v", rest, err)
	if strings.Contains(string(rest), "PONG") {
		t.Fatalf("the server answered a plain-text client: %q", rest)
	}
}

func TestTLSRoutesJoinOnlyLabNodes(t *testing.T) {
	f := labFiles(t)
	first := startTLSNode(t, "n1", routeTLS(t, f), nil)
	second := startTLSNode(t, "n2", routeTLS(t, f), []string{"nats://" + first.ClusterAddr().String()})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	natstest.WaitUntil(t, ctx, func() error {
		if n1, n2 := first.NumRoutes(), second.NumRoutes(); n1 == 0 || n2 == 0 {
			return fmt.Errorf("routes: n1 has %d, n2 has %d", n1, n2)
		}
		return nil
	})

	// A peer that trusts the CA but has no certificate of its own must not
	// get a route: the handshake ends in an alert it reads as an error.
	clientCfg, err := streams.ClientTLS(f.CA)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", first.ClusterAddr().String(), clientCfg)
	if err == nil {
		defer conn.Close()
		if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		// TLS 1.3 reports the refused client certificate on the first read.
		_, err = bufio.NewReader(conn).ReadString('\n')
	}
	var timeout net.Error
	if err == nil || (errors.As(err, &timeout) && timeout.Timeout()) {
		t.Fatalf("a peer without a certificate reached the route port (read error %v)", err)
	}
	t.Logf("peer without certificate: %v", err)
	if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("error %q, want a refused certificate", err)
	}
}

// startTLSNode starts a cluster node whose routes use cfg.
func startTLSNode(t *testing.T, name string, cfg *tls.Config, routes []string) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		ServerName: name, Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true,
		Cluster: server.ClusterOpts{
			Name: "jetqa-tls", Host: "127.0.0.1", Port: -1,
			TLSConfig: cfg, TLSTimeout: 5,
		},
		Routes: server.RoutesFromStr(strings.Join(routes, ",")),
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatalf("node %s did not become ready", name)
	}
	return ns
}

func serverTLS(t *testing.T, f streams.TLSFiles) *tls.Config {
	t.Helper()
	cfg, err := streams.ServerTLS(f)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func routeTLS(t *testing.T, f streams.TLSFiles) *tls.Config {
	t.Helper()
	cfg, err := streams.RouteTLS(f)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestTLSErrorsNameTheFile(t *testing.T) {
	f := labFiles(t)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	notPEM := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	otherKey := labFiles(t).Key
	for _, tc := range []struct {
		name string
		load func() error
		want []string
	}{
		{"missing cert", func() error {
			_, err := streams.ServerTLS(streams.TLSFiles{Cert: missing, Key: f.Key})
			return err
		}, []string{"--tls-cert " + missing, "no such file", "jetqa admin tls init"}},
		{"missing key", func() error {
			_, err := streams.ServerTLS(streams.TLSFiles{Cert: f.Cert, Key: missing})
			return err
		}, []string{"--tls-key " + missing, "no such file"}},
		{"no key given", func() error {
			_, err := streams.ServerTLS(streams.TLSFiles{Cert: f.Cert})
			return err
		}, []string{"--tls-key"}},
		{"key of another certificate", func() error {
			_, err := streams.ServerTLS(streams.TLSFiles{Cert: f.Cert, Key: otherKey})
			return err
		}, []string{f.Cert, otherKey}},
		{"cert not PEM", func() error {
			_, err := streams.ServerTLS(streams.TLSFiles{Cert: notPEM, Key: f.Key})
			return err
		}, []string{"--tls-cert " + notPEM, "not a PEM file"}},
		{"missing CA of server", func() error {
			_, err := streams.ServerTLS(streams.TLSFiles{Cert: f.Cert, Key: f.Key, CA: missing})
			return err
		}, []string{"--tls-ca " + missing, "no such file"}},
		{"missing CA of client", func() error {
			_, err := streams.ClientTLS(missing)
			return err
		}, []string{"--tls-ca " + missing, "no such file"}},
		{"CA file holds only a key", func() error {
			_, err := streams.ClientTLS(f.Key)
			return err
		}, []string{"--tls-ca " + f.Key, "no PEM certificate"}},
		{"routes without CA", func() error {
			_, err := streams.RouteTLS(streams.TLSFiles{Cert: f.Cert, Key: f.Key})
			return err
		}, []string{"--tls-ca"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.load()
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestTLSClientWithoutCAUsesSystemRoots(t *testing.T) {
	cfg, err := streams.ClientTLS("")
	if cfg != nil || err != nil {
		t.Errorf("ClientTLS(\"\") = %v, %v; want nil, nil", cfg, err)
	}
}

func TestMakeServerCertNeedsCAAndHosts(t *testing.T) {
	ca, err := streams.MakeLabCA(time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := streams.MakeServerCert(ca, []string{"node1.lab", "10.0.0.7"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := streams.MakeServerCert(srv, []string{"x"}, time.Hour); err == nil {
		t.Error("a server certificate signed another certificate")
	}
	if _, err := streams.MakeServerCert(ca, []string{""}, time.Hour); err == nil {
		t.Error("made a certificate for no host")
	}
	pair, err := tls.X509KeyPair(srv.Cert, srv.Key)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.Cert)
	for _, host := range []string{"node1.lab", "10.0.0.7"} {
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
			if _, err := pair.Leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: pool, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				t.Errorf("%s, usage %v: %v", host, usage, err)
			}
		}
	}
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{DNSName: "other.lab", Roots: pool}); err == nil {
		t.Error("the certificate is valid for a host it does not name")
	}
}

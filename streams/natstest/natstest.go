// Package natstest starts a real embedded NATS server with JetStream for a
// test, with jetqa's streams set up, and connects a bus to it.
package natstest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"jetqa/streams"
)

// Server is an embedded NATS server that lives as long as the test.
type Server struct {
	URL string
	// Nodes are the servers of a cluster (StartCluster), for a test to
	// stop one.
	Nodes []*streams.Embedded
	t     testing.TB
}

// Start starts a server on a free port with its store in a temp directory.
func Start(t testing.TB) *Server {
	t.Helper()
	ns, err := streams.StartServer(streams.ServerConfig{Port: -1, DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	s := &Server{URL: ns.ClientURL(), t: t}
	if err := s.Bus("setup").Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// serveEnv names the store directory of the NATS server that a child
// process of StartProcess serves.
const serveEnv = "JETQA_NATSTEST_SERVE"

// Main runs a package's tests, or, in a child process that StartProcess
// started, serves a NATS server until its standard input closes. A
// package whose tests use StartProcess calls it from TestMain.
func Main(m *testing.M) {
	if dir := os.Getenv(serveEnv); dir != "" {
		os.Exit(serve(dir))
	}
	os.Exit(m.Run())
}

// serve runs the child's server: it prints the client URL as its first
// line and stops once standard input closes.
func serve(dir string) int {
	ns, err := streams.StartServer(streams.ServerConfig{Port: -1, DataDir: dir})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(ns.ClientURL())
	_, _ = io.Copy(io.Discard, os.Stdin)
	ns.Shutdown()
	ns.WaitForShutdown()
	return 0
}

// StartProcess is Start with the server in a child process, as jetqa's
// command-line clients meet it: what the test measures of a client, its
// heap and collections, is the client's alone. The package's TestMain
// must call Main.
func StartProcess(t testing.TB) *Server {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serveEnv+"="+t.TempDir())
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	url, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("the NATS server process said no URL (did TestMain call natstest.Main?): %v", err)
	}
	s := &Server{URL: strings.TrimSpace(url), t: t}
	if err := s.Bus("setup").Setup(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}

// Bus connects a new bus named name; it is closed when the test ends.
func (s *Server) Bus(name string) *streams.Bus {
	s.t.Helper()
	b, err := streams.Connect(context.Background(), s.URL, name, Logger(s.t))
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(b.Close)
	return b
}

// Logger writes log lines to the test's log.
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(writer{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type writer struct{ t testing.TB }

func (w writer) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// StartCluster starts a three-node NATS cluster with JetStream on free
// ports and sets up jetqa's streams with three replicas. The returned
// Server connects to the first node; URLs lists all three.
func StartCluster(t testing.TB) (*Server, []string) {
	t.Helper()
	const nodes = 3
	routePorts := make([]int, nodes)
	for i := range routePorts {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		routePorts[i] = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	var routes []string
	for _, p := range routePorts {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	var urls []string
	var started []*streams.Embedded
	for i := range nodes {
		ns, err := streams.StartServer(streams.ServerConfig{
			Port: -1, DataDir: t.TempDir(), Name: fmt.Sprintf("n%d", i+1),
			ClusterName: "jetqa-test", ClusterPort: routePorts[i], Routes: routes,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			ns.Shutdown()
			ns.WaitForShutdown()
		})
		urls = append(urls, ns.ClientURL())
		started = append(started, ns)
	}
	s := &Server{URL: urls[0], Nodes: started, t: t}
	bus := s.Bus("setup")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Until the cluster has elected its meta leader and all peers joined,
	// creating replicated streams fails: try again until the deadline.
	for {
		err := bus.SetupReplicas(ctx, nodes)
		if err == nil {
			return s, urls
		}
		select {
		case <-ctx.Done():
			t.Fatalf("cluster setup: %v", err)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// WaitUntil asks cond every few milliseconds until it returns nil, for
// what a test can only poll (a consumer's state on the server), and fails
// the test with cond's last answer when ctx ends.
func WaitUntil(t testing.TB, ctx context.Context, cond func() error) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%v (gave up: %v)", err, ctx.Err())
		case <-tick.C:
		}
	}
}

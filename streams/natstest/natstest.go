// Package natstest starts a real embedded NATS server with JetStream for a
// test, with jetqa's streams set up, and connects a bus to it.
package natstest

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"jetqa/streams"
)

// Server is an embedded NATS server that lives as long as the test.
type Server struct {
	URL string
	t   testing.TB
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

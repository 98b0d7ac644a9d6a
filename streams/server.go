package streams

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ServerConfig configures the embedded NATS server of `jetqa up` and
// `jetqa server`.
type ServerConfig struct {
	// Host and Port to listen on for clients; Port -1 picks a free port.
	Host string
	Port int
	// DataDir holds the JetStream file store.
	DataDir string
	// Name identifies the server, in a cluster uniquely; default "jetqa".
	Name string
	// Cluster joins the server to a NATS cluster: its name, the port this
	// server listens on for routes, and the route URLs of the other nodes
	// (nats://host:port).
	ClusterName string
	ClusterPort int
	Routes      []string
}

// MaxPayload is the largest message the embedded server accepts: a screen
// of a large desktop fits.
const MaxPayload = 8 << 20

// StartServer starts an embedded NATS server with JetStream and waits
// until it accepts connections.
func StartServer(cfg ServerConfig) (*server.Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("embedded NATS: no data directory")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Name == "" {
		cfg.Name = "jetqa"
	}
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   filepath.Join(cfg.DataDir, "jetstream"),
		MaxPayload: MaxPayload,
		NoSigs:     true,
		NoLog:      true,
	}
	if cfg.ClusterName != "" {
		opts.Cluster = server.ClusterOpts{Name: cfg.ClusterName, Host: cfg.Host, Port: cfg.ClusterPort}
		opts.Routes = server.RoutesFromStr(strings.Join(cfg.Routes, ","))
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded NATS on %s:%d did not become ready (port in use?)", cfg.Host, cfg.Port)
	}
	return ns, nil
}

package streams

import (
	"errors"
	"fmt"
	"path/filepath"
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
	opts := &server.Options{
		ServerName: "jetqa",
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   filepath.Join(cfg.DataDir, "jetstream"),
		MaxPayload: MaxPayload,
		NoSigs:     true,
		NoLog:      true,
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

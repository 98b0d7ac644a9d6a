package streams

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
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
	// Users are the credentials the server always knows: its own stages'
	// and the operator's. With none, anyone who reaches the port may do
	// anything (tests of single stages); with some, only those and the
	// ones issued later (SetCredentials) may connect.
	Users []Credential
	// Issued are the credentials issued when the server last ran, valid
	// until SetCredentials says otherwise: remote parties reconnecting
	// after a restart are not refused while the issued ones are read.
	Issued []Credential
	// WebSocketPort, when not 0, also takes clients over WebSocket (with
	// TLS when TLS is set: wss://).
	WebSocketPort int
	// TLS, when set, is required of every client; RouteTLS of every route.
	TLS      *tls.Config
	RouteTLS *tls.Config
}

// Embedded is a running embedded NATS server.
type Embedded struct {
	*server.Server
	cfg ServerConfig
	mu  sync.Mutex
}

// MaxPayload is the largest message the embedded server accepts: a screen
// of a large desktop fits.
const MaxPayload = 8 << 20

// StartServer starts an embedded NATS server with JetStream and waits
// until it accepts connections.
func StartServer(cfg ServerConfig) (*Embedded, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("embedded NATS: no data directory")
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Name == "" {
		cfg.Name = "jetqa"
	}
	opts := cfg.options(cfg.Issued)
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	ns.ConfigureLogger()
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded NATS on %s:%d did not become ready (port in use?)", cfg.Host, cfg.Port)
	}
	if cfg.Port == -1 {
		// Keep the port picked for reloads.
		cfg.Port = ns.Addr().(*net.TCPAddr).Port
	}
	return &Embedded{Server: ns, cfg: cfg}, nil
}

// options are the server's options with the issued credentials besides
// the configured users.
func (cfg ServerConfig) options(issued []Credential) *server.Options {
	opts := &server.Options{
		ServerName: cfg.Name,
		Host:       cfg.Host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   filepath.Join(cfg.DataDir, "jetstream"),
		MaxPayload: MaxPayload,
		NoSigs:     true,
		// The server's own log (elections, lost quorum, a full disk) goes
		// to a file in the data directory, where an operator looks.
		LogFile:      filepath.Join(cfg.DataDir, "nats.log"),
		LogSizeLimit: 64 << 20,
	}
	if cfg.ClusterName != "" {
		opts.Cluster = server.ClusterOpts{Name: cfg.ClusterName, Host: cfg.Host, Port: cfg.ClusterPort, TLSConfig: cfg.RouteTLS, TLSTimeout: 5}
		opts.Routes = server.RoutesFromStr(strings.Join(cfg.Routes, ","))
	}
	if cfg.TLS != nil {
		opts.TLS, opts.TLSConfig, opts.TLSTimeout = true, cfg.TLS, 5
	}
	if cfg.WebSocketPort != 0 {
		opts.Websocket = server.WebsocketOpts{Host: cfg.Host, Port: cfg.WebSocketPort, TLSConfig: cfg.TLS, NoTLS: cfg.TLS == nil, HandshakeTimeout: 10 * time.Second}
	}
	seen := map[string]bool{}
	for _, c := range slices.Concat(cfg.Users, issued) {
		if c.NKey == "" || seen[c.NKey] {
			continue
		}
		seen[c.NKey] = true
		opts.Nkeys = append(opts.Nkeys, c.NATSUser())
	}
	return opts
}

// SetCredentials makes the issued credentials the ones that may connect
// besides the configured users. Connections of a credential no longer
// issued are closed, and a changed one's permissions apply at once.
func (e *Embedded) SetCredentials(issued []Credential) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.cfg.Users) == 0 {
		return errors.New("this NATS server takes no credentials: it was started without users")
	}
	if err := e.ReloadOptions(e.cfg.options(issued)); err != nil {
		return fmt.Errorf("NATS users: %w", err)
	}
	return nil
}

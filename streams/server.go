package streams

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
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
	// Log receives the server's warnings and errors, and the disk guard's
	// word; nil: they go only to nats.log in the data directory.
	Log *slog.Logger
	// SyncAlways has JetStream flush every stored message to the disk
	// (fsync) before acknowledging it, instead of every two minutes:
	// nothing acknowledged is lost even when the host loses power, at the
	// cost docs/reliability.md gives.
	SyncAlways bool
}

// Embedded is a running embedded NATS server.
type Embedded struct {
	*server.Server
	cfg  ServerConfig
	auth *authenticator // nil when anyone may connect
	// storeDir is JetStream's store directory, as the options give it.
	storeDir string
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
	opts := cfg.options()
	var auth *authenticator
	if len(cfg.Users) > 0 {
		auth = newAuthenticator(cfg.Users, cfg.Issued)
		opts.CustomClientAuthentication = auth
		opts.AlwaysEnableNonce = true
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	ns.ConfigureLogger()
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	srvLog := &serverLog{file: ns.Logger(), log: log}
	ns.SetLogger(srvLog, false, false)
	ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded NATS on %s:%d did not become ready (port in use?)", cfg.Host, cfg.Port)
	}
	e := &Embedded{Server: ns, cfg: cfg, auth: auth, storeDir: opts.StoreDir}
	if js := ns.JetStreamConfig(); js != nil {
		go e.guardDisk(srvLog, *js, 2*time.Second)
	}
	return e, nil
}

// options are the server's options.
func (cfg ServerConfig) options() *server.Options {
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
		SyncAlways:   cfg.SyncAlways,
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
	return opts
}

// SetCredentials makes the issued credentials the ones that may connect
// besides the configured users. Connections of a credential no longer
// issued are closed.
func (e *Embedded) SetCredentials(issued []Credential) error {
	if e.auth == nil {
		return errors.New("this NATS server takes no credentials: it was started without users")
	}
	for _, id := range e.auth.set(e.cfg.Users, issued) {
		// Gone already, when it disconnected by itself.
		_ = e.DisconnectClientByID(id)
	}
	return nil
}

// authenticator admits a client that proves, by signing the nonce the
// server sent, that it holds the secret of a known nkey, and gives it that
// key's permissions. The set of keys changes at run time without a
// reload of the server's options.
type authenticator struct {
	mu      sync.RWMutex
	users   map[string]*server.NkeyUser // by public key
	clients map[uint64]string           // connection id → public key
}

func newAuthenticator(static, issued []Credential) *authenticator {
	a := &authenticator{clients: map[uint64]string{}}
	a.set(static, issued)
	return a
}

// set replaces the known keys; it returns the connections of keys no
// longer known.
func (a *authenticator) set(static, issued []Credential) []uint64 {
	users := map[string]*server.NkeyUser{}
	for _, c := range slices.Concat(static, issued) {
		if _, dup := users[c.NKey]; c.NKey != "" && !dup {
			users[c.NKey] = c.NATSUser()
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.users = users
	var gone []uint64
	for id, key := range a.clients {
		if users[key] == nil {
			gone = append(gone, id)
			delete(a.clients, id)
		}
	}
	return gone
}

// Check is called by the NATS server for every new client connection.
func (a *authenticator) Check(c server.ClientAuthentication) bool {
	o := c.GetOpts()
	if o == nil || o.Nkey == "" || c.Kind() != server.CLIENT {
		return false
	}
	a.mu.RLock()
	u := a.users[o.Nkey]
	a.mu.RUnlock()
	if u == nil {
		return false
	}
	sig, err := base64.RawURLEncoding.DecodeString(o.Sig)
	if err != nil {
		if sig, err = base64.StdEncoding.DecodeString(o.Sig); err != nil {
			return false
		}
	}
	pub, err := nkeys.FromPublicKey(o.Nkey)
	if err != nil || pub.Verify(c.GetNonce(), sig) != nil {
		return false
	}
	reg, ok := c.(interface{ RegisterNkeyUser(*server.NkeyUser) error })
	if !ok || reg.RegisterNkeyUser(&server.NkeyUser{Nkey: u.Nkey, Permissions: u.Permissions}) != nil {
		return false
	}
	a.mu.Lock()
	if a.users[o.Nkey] == nil {
		// Revoked while it was being let in.
		a.mu.Unlock()
		return false
	}
	a.clients[c.GetID()] = o.Nkey
	a.mu.Unlock()
	return true
}

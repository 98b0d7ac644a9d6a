package streams

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"jetqa/schemas"
	"jetqa/streams/blobs"
)

// Bus is one connection to NATS with its JetStream context. Every stage
// gets one; all of a stage's reads and writes go through it.
type Bus struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	source string
	log    *slog.Logger
	closed chan struct{}

	// worker is set on a worker's bus: its job events become reports.
	worker *schemas.WorkerRef
	// useOnly: the bus never creates consumers, it binds to the server's.
	useOnly bool
	// results is where the server keeps results; nil: the results bucket.
	results blobs.Store

	jobs             jobCache
	streamMu         sync.Mutex
	jobsStreamHandle jetstream.Stream
}

// Connect dials NATS at url without credentials. name identifies the
// connection on the server and is stamped as the source of every event
// this bus appends.
func Connect(ctx context.Context, url, name string, log *slog.Logger) (*Bus, error) {
	return ConnectTo(ctx, Dial{URLs: url}, name, log)
}

// Dial says how to reach NATS and as whom.
type Dial struct {
	// URLs are one or more server URLs, comma-separated; the connection
	// fails over between them.
	URLs string
	// Identity authenticates the connection; nil connects without.
	Identity *Identity
	// TLS verifies the server (tls:// URLs); nil uses the system's roots.
	TLS *tls.Config
	// InProcess connects to an embedded server of this process directly.
	InProcess *Embedded
}

// ConnectTo dials NATS as d says.
func ConnectTo(ctx context.Context, d Dial, name string, log *slog.Logger) (*Bus, error) {
	quiet := log == nil // a client command: no log lines of its own
	if quiet {
		log = slog.Default()
	}
	url := d.URLs
	closed := make(chan struct{})
	opts := []nats.Option{
		nats.ClosedHandler(func(c *nats.Conn) {
			// The server's last word, such as revoked credentials.
			if err := c.LastError(); err != nil {
				log.Error("NATS connection closed for good", "name", name, "err", err)
			}
			close(closed)
		}),
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) { log.Info("NATS reconnected", "url", c.ConnectedUrl()) }),
		// Permission violations arrive here, not as a call's error.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Error("NATS", "subject", sub.Subject, "err", err)
				return
			}
			log.Error("NATS", "err", err)
		}),
	}
	if d.Identity != nil {
		opts = append(opts, d.Identity.natsOptions()...)
	}
	if d.TLS != nil {
		opts = append(opts, nats.Secure(d.TLS))
	}
	if d.InProcess != nil {
		opts = append(opts, nats.InProcessServer(d.InProcess.Server))
	}
	nc, err := nats.Connect(url, opts...)
	if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) || errors.Is(err, nats.ErrAuthRevoked) {
		return nil, fmt.Errorf("connect to NATS at %s: %w: give the credentials file the server issued (`jetqa admin worker add NAME` writes one; --creds or $JETQA_CREDS)", url, err)
	}
	var unknownCA x509.UnknownAuthorityError
	if errors.As(err, &unknownCA) || err != nil && strings.Contains(err.Error(), "x509:") {
		return nil, fmt.Errorf("connect to NATS at %s: %w: give the CA that signed the server's certificate (--tls-ca or $JETQA_TLS_CA; ca.pem of `jetqa admin tls init`)", url, err)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("JetStream: %w", err)
	}
	if d.InProcess == nil && !quiet {
		log.Info("NATS connected", "name", name, "url", nc.ConnectedUrl())
	}
	b := &Bus{NC: nc, JS: js, source: name, log: log, closed: closed}
	if err := b.waitForJetStream(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return b, nil
}

func (b *Bus) waitForJetStream(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		// One try must not use up the whole wait: a cluster electing its
		// meta leader does not answer until it has one.
		try, cancelTry := context.WithTimeout(ctx, 2*time.Second)
		_, err := b.JS.AccountInfo(try)
		cancelTry()
		if err == nil {
			return nil
		}
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return fmt.Errorf("NATS at %s has no JetStream: start it with -js or use `jetqa up`: %w", b.NC.ConnectedUrl(), err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("JetStream not ready: %w", err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Source is the name stamped on the events this bus appends.
func (b *Bus) Source() string { return b.source }

// Close drains the connection: pending publishes are flushed and
// subscriptions finish their current message.
func (b *Bus) Close() {
	if err := b.NC.Drain(); err != nil {
		b.NC.Close()
		return
	}
	select {
	case <-b.closed:
	case <-time.After(10 * time.Second):
		b.NC.Close()
	}
}

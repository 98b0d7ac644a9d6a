package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"jetqa/streams"
)

// remote is how a process on another host reaches the server: NATS URLs,
// its credentials file, and the CA that signed the server's certificate.
type remote struct {
	nats, creds, ca string
}

// remoteFlags adds --nats, --creds and --tls-ca, with defaults from
// $JETQA_NATS, $JETQA_CREDS and $JETQA_TLS_CA.
func remoteFlags(fs *flag.FlagSet, r *remote, whose string) {
	fs.StringVar(&r.nats, "nats", envOr("JETQA_NATS", "nats://127.0.0.1:4222"), "NATS server(s) to connect to, comma-separated (tls://, wss:// too); the connection fails over between them")
	fs.StringVar(&r.creds, "creds", os.Getenv("JETQA_CREDS"), "credentials file of this "+whose+" (written by `jetqa admin "+whose+" add NAME` on the server)")
	fs.StringVar(&r.ca, "tls-ca", os.Getenv("JETQA_TLS_CA"), "CA certificate that signed the server's (ca.pem of `jetqa admin tls init`); default: the system's roots")
}

// dial reads the credentials and CA.
func (r remote) dial() (streams.Dial, *streams.Identity, error) {
	d := streams.Dial{URLs: r.nats}
	var id *streams.Identity
	if r.creds != "" {
		loaded, err := streams.LoadIdentity(r.creds)
		if err != nil {
			return d, nil, fmt.Errorf("--creds: %w", err)
		}
		id = &loaded
	}
	if r.ca != "" {
		tls, err := streams.ClientTLS(r.ca)
		if err != nil {
			return d, nil, err
		}
		d.TLS = tls
	}
	d.Identity = id
	return d, id, nil
}

// cliDial is how a client command connects: as the operator, with
// $JETQA_CREDS or, on the server host, the data directory's admin.creds
// in the current directory.
func cliDial(natsURL string) (streams.Dial, error) {
	r := remote{nats: natsURL, creds: os.Getenv("JETQA_CREDS"), ca: os.Getenv("JETQA_TLS_CA")}
	if r.creds == "" {
		local := filepath.Join("data", adminCreds)
		if _, err := os.Stat(local); err == nil {
			r.creds = local
		} else if !errors.Is(err, os.ErrNotExist) {
			return streams.Dial{}, err
		}
	}
	d, _, err := r.dial()
	return d, err
}

// connectNATS connects a client command as cliDial says.
func connectNATS(ctx context.Context, natsURL, name string) (*streams.Bus, error) {
	d, err := cliDial(natsURL)
	if err != nil {
		return nil, err
	}
	return streams.ConnectTo(ctx, d, name, nil)
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"jetqa/streams"
)

// Validity of the lab CA; a server certificate's is --days.
const labCADays = 3650

// cmdAdminTLSInit makes the TLS material of a lab: a private CA and a
// certificate for the server, or with --server-only one more server
// certificate signed by the CA already in --dir.
func cmdAdminTLSInit(args []string, stdout, stderr io.Writer) error {
	flags := flag.NewFlagSet("admin tls init", flag.ContinueOnError)
	flags.SetOutput(stderr)
	dir := flags.String("dir", "tls", "directory to write ca.pem, ca-key.pem, server.pem and server-key.pem to")
	hostList := flags.String("hosts", "", "comma-separated DNS names and IP addresses the server is reached at (default: this host's name, localhost, 127.0.0.1, ::1)")
	days := flags.Int("days", 825, "days the server certificate is valid (the CA: 3650)")
	force := flags.Bool("force", false, "replace existing files")
	serverOnly := flags.Bool("server-only", false, "make only a server certificate, for another node, with the CA already in --dir: server-HOST.pem and server-HOST-key.pem")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("admin tls init: unexpected argument %q", flags.Arg(0))
	}
	if *days <= 0 {
		return fmt.Errorf("--days %d: a certificate must be valid for at least a day", *days)
	}
	hosts, err := certHosts(*hostList)
	if err != nil {
		return err
	}
	caFile, caKeyFile := filepath.Join(*dir, "ca.pem"), filepath.Join(*dir, "ca-key.pem")
	certFile, keyFile := filepath.Join(*dir, "server.pem"), filepath.Join(*dir, "server-key.pem")

	var ca streams.PEMPair
	var files []labFile
	if *serverOnly {
		if ca.Cert, err = os.ReadFile(caFile); err != nil {
			return fmt.Errorf("--server-only signs with the lab CA in %s: %w (make it first with `jetqa admin tls init --dir %s`)", *dir, err, *dir)
		}
		if ca.Key, err = os.ReadFile(caKeyFile); err != nil {
			return fmt.Errorf("--server-only signs with the lab CA's key: %w", err)
		}
		name := "server-" + fileSafe(hosts[0])
		certFile, keyFile = filepath.Join(*dir, name+".pem"), filepath.Join(*dir, name+"-key.pem")
	} else {
		if ca, err = streams.MakeLabCA(labCADays * 24 * time.Hour); err != nil {
			return err
		}
		files = append(files,
			labFile{caFile, ca.Cert, 0o644, "the lab CA: copy it to every worker and server host"},
			labFile{caKeyFile, ca.Key, 0o600, "the CA's key: keep it here, it signs server certificates"})
	}
	srv, err := streams.MakeServerCert(ca, hosts, time.Duration(*days)*24*time.Hour)
	if err != nil {
		return err
	}
	files = append(files,
		labFile{certFile, srv.Cert, 0o644, fmt.Sprintf("server certificate for %s, valid %d days", strings.Join(hosts, ", "), *days)},
		labFile{keyFile, srv.Key, 0o600, "the server's key"})

	// Check every file before writing any, so that a refusal leaves the
	// directory as it was.
	if !*force {
		hint := "--force replaces it"
		if !*serverOnly {
			hint = "--server-only makes another server certificate with this CA; --force replaces the CA too, and hosts that trust the old CA then refuse the new certificates"
		}
		for _, f := range files {
			if _, err := os.Stat(f.path); err == nil {
				return fmt.Errorf("%s exists: not replaced (%s)", f.path, hint)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	for _, f := range files {
		if err := writeFileMode(f.path, f.content, f.mode); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "wrote %s: %s\n", f.path, f.what)
	}

	natsURL := "tls://" + net.JoinHostPort(hosts[0], "4222")
	if *serverOnly {
		fmt.Fprintf(stdout, "\nCopy %s, %s and %s to %s and start the server there with:\n  jetqa server --tls-cert %s --tls-key %s --tls-ca %s\n",
			certFile, keyFile, caFile, hosts[0], filepath.Base(certFile), filepath.Base(keyFile), filepath.Base(caFile))
		return nil
	}
	fmt.Fprintf(stdout, "\nStart the server with:\n  jetqa server --tls-cert %s --tls-key %s\n", certFile, keyFile)
	fmt.Fprintf(stdout, "Copy %s to each worker host and start the workers with:\n  jetqa worker --nats %s --tls-ca %s\n", caFile, natsURL, caFile)
	fmt.Fprintf(stdout, "For another server node: jetqa admin tls init --dir %s --server-only --hosts NAME,IP\n", *dir)
	return nil
}

// labFile is a file that `admin tls init` writes.
type labFile struct {
	path    string
	content []byte
	mode    os.FileMode
	what    string
}

// certHosts splits --hosts; empty, it names this host as its neighbours
// and itself reach it.
func certHosts(list string) ([]string, error) {
	var hosts []string
	for h := range strings.SplitSeq(list, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hosts = append(hosts, h)
		}
	}
	if len(hosts) > 0 {
		return hosts, nil
	}
	if list != "" {
		return nil, fmt.Errorf("--hosts %q names no host", list)
	}
	name, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("this host's name, for the certificate: %w (name the hosts with --hosts)", err)
	}
	hosts = append(hosts, name)
	if name != "localhost" {
		hosts = append(hosts, "localhost")
	}
	return append(hosts, "127.0.0.1", "::1"), nil
}

// fileSafe turns a host name or IP address into a part of a file name.
func fileSafe(host string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '-':
			return r
		}
		return '_'
	}, host)
}

// writeFileMode replaces path with content and mode, whatever the mode of
// a file it replaces, and never leaves half a file: a key readable by all
// or a truncated certificate would only show at the next handshake.
func writeFileMode(path string, content []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(content); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

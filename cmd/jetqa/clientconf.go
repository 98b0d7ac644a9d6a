package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// API credentials live in client.conf files of openQA's format: a section
// per server host, with key and secret.
//
//	[127.0.0.1:9526]
//	key = 0123456789ABCDEF
//	secret = FEDCBA9876543210
//
// The client reads, first match winning: $JETQA_CLIENT_CONF alone if set;
// else data/client.conf (what `jetqa up` writes in its data directory),
// ~/.config/jetqa/client.conf, /etc/jetqa/client.conf, and openQA's own
// ~/.config/openqa/client.conf and /etc/openqa/client.conf.
const clientConf = "client.conf"

func clientConfFiles() []string {
	if p := os.Getenv("JETQA_CLIENT_CONF"); p != "" {
		return []string{p}
	}
	files := []string{filepath.Join("data", clientConf)}
	home, _ := os.UserHomeDir()
	for _, dir := range []string{"jetqa", "openqa"} {
		if home != "" {
			files = append(files, filepath.Join(home, ".config", dir, clientConf))
		}
		files = append(files, filepath.Join("/etc", dir, clientConf))
	}
	return files
}

// apiCredential is a key and secret, and the file they came from.
type apiCredential struct{ key, secret, file string }

// credentialFor finds the key for the API at apiURL: a section named as
// its host and port, or its host alone.
func credentialFor(apiURL string) (apiCredential, error) {
	u, err := url.Parse(apiURL)
	if err != nil {
		return apiCredential{}, err
	}
	names := []string{u.Host, u.Hostname(), apiURL, strings.TrimRight(apiURL, "/")}
	if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsLoopback() {
		names = append(names, "localhost:"+u.Port(), "localhost")
	}
	for _, file := range clientConfFiles() {
		sections, err := readClientConf(file)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return apiCredential{}, err
		}
		for _, n := range names {
			if s, ok := sections[n]; ok && s["key"] != "" && s["secret"] != "" {
				return apiCredential{key: s["key"], secret: s["secret"], file: file}, nil
			}
		}
	}
	return apiCredential{}, os.ErrNotExist
}

// readClientConf reads a client.conf: a section per API host.
func readClientConf(path string) (map[string]map[string]string, error) {
	return readINI(path, "", nil)
}

// ensureLocalAPIKey gives `jetqa up` an API key for the local user on
// first start, in dataDir/client.conf under the API's host and port, so
// the client commands work with no set-up. A later start on another port
// adds a section with the same key.
func ensureLocalAPIKey(ctx context.Context, bus *streams.Bus, dataDir, apiAddr string) error {
	path := filepath.Join(dataDir, clientConf)
	sections, err := readClientConf(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if s, ok := sections[apiAddr]; ok && s["key"] != "" {
		return nil
	}
	var key, secret string
	for _, s := range sections {
		if s["key"] != "" && s["secret"] != "" {
			key, secret = s["key"], s["secret"]
			break
		}
	}
	if key == "" {
		user := os.Getenv("USER")
		if user == "" {
			user = "local"
		}
		k, err := bus.CreateAPIKey(ctx, user, time.Time{}, schemas.ScopeAdmin)
		if err != nil {
			return fmt.Errorf("local API key: %w", err)
		}
		key, secret = k.Key, k.Secret
	}
	return appendClientConf(path, apiAddr, key, secret, "the API key of `jetqa up`: jetqa and openqa-cli sign their requests with it")
}

// appendClientConf adds a section for host with key and secret to the
// client.conf at path, made readable by its owner only if it is new.
func appendClientConf(path, host, key, secret, comment string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "# %s\n[%s]\nkey = %s\nsecret = %s\n", comment, host, key, secret)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

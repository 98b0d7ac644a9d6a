package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"jetqa/schemas"
	"jetqa/streams"
)

// cmdAsset registers assets on the server and lists them.
func cmdAsset(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "add" && args[0] != "list") {
		return fmt.Errorf("usage: jetqa asset add [--name NAME] FILE|URL, or jetqa asset list")
	}
	fs := flag.NewFlagSet("asset "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats", envOr("JETQA_NATS", "nats://127.0.0.1:4222"), "NATS server")
	name := fs.String("name", "", "name jobs use for it (default: the file name)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	bus, err := streams.Connect(ctx, *natsURL, "jetqa-asset", nil)
	if err != nil {
		return err
	}
	defer bus.Close()
	if args[0] == "list" {
		return listAssets(ctx, bus, stdout)
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("usage: jetqa asset add [--name NAME] FILE|URL")
	}
	reg, err := addAsset(ctx, bus, fs.Arg(0), *name)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "asset %s: %d bytes, sha256 %s (use it as ISO=%s, HDD_1=%s, …)\n", reg.Name, reg.Size, reg.SHA256, reg.Name, reg.Name)
	return nil
}

// addAsset stores a file or a download in the server's asset store, hashing
// it on the way, and records its registration.
func addAsset(ctx context.Context, bus *streams.Bus, source, name string) (schemas.AssetRegistered, error) {
	var r io.Reader
	if strings.HasPrefix(source, "http://") || strings.HasPrefix(source, "https://") {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, source, nil)
		if err != nil {
			return schemas.AssetRegistered{}, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return schemas.AssetRegistered{}, fmt.Errorf("download %s: %w", source, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return schemas.AssetRegistered{}, fmt.Errorf("download %s: HTTP %s", source, resp.Status)
		}
		r = resp.Body
		if name == "" {
			name = path.Base(resp.Request.URL.Path)
		}
	} else {
		f, err := os.Open(source)
		if err != nil {
			return schemas.AssetRegistered{}, err
		}
		defer f.Close()
		r = f
		if name == "" {
			name = filepath.Base(source)
		}
	}
	if name == "" || name == "/" || name == "." || strings.ContainsAny(name, "/\\") {
		return schemas.AssetRegistered{}, fmt.Errorf("asset name %q: give a plain file name with --name", name)
	}
	h := sha256.New()
	counted := &countingReader{r: io.TeeReader(r, h)}
	if err := bus.PutBlob(ctx, streams.BucketAssets, name, counted); err != nil {
		return schemas.AssetRegistered{}, err
	}
	reg := schemas.AssetRegistered{Name: name, SHA256: hex.EncodeToString(h.Sum(nil)), Size: counted.n, Source: source}
	if _, err := bus.Append(ctx, 0, reg); err != nil {
		return reg, err
	}
	return reg, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func listAssets(ctx context.Context, bus *streams.Bus, stdout io.Writer) error {
	last, err := bus.LastSequence(ctx, streams.StreamAssets)
	if err != nil || last == 0 {
		return err
	}
	return bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamAssets, Filters: []string{"jetqa.asset.>"}},
		func(ev schemas.Event, p schemas.Payload, d streams.Delivery) error {
			if reg, ok := p.(*schemas.AssetRegistered); ok {
				fmt.Fprintf(stdout, "%-40s %14d  sha256 %.16s  %s  %s\n", reg.Name, reg.Size, reg.SHA256, ev.Time.Local().Format("2006-01-02 15:04"), reg.Source)
			}
			if d.Pending == 0 || d.Sequence >= last {
				return streams.ErrStopWatch
			}
			return nil
		})
}

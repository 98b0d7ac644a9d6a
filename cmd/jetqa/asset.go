package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// cmdAsset registers assets on the server and lists them.
func cmdAsset(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "add" && args[0] != "list" && args[0] != "fetch") {
		return fmt.Errorf("usage: jetqa asset add [--name NAME] FILE|URL, jetqa asset list, or jetqa asset fetch --host HOST NAME|URL")
	}
	fs := flag.NewFlagSet("asset "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats", envOr("JETQA_NATS", "nats://127.0.0.1:4222"), "NATS server")
	name := fs.String("name", "", "add: name jobs use for it (default: the file name)")
	host, _ := os.Hostname()
	fs.StringVar(&host, "host", host, "fetch: the worker host whose cache gets the asset")
	sha := fs.String("sha256", "", "fetch: verify a URL's bytes against this SHA-256")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	ctx, bus, done, err := connectCLI(*natsURL, "jetqa-asset")
	if err != nil {
		return err
	}
	defer done()
	if args[0] == "list" {
		return listAssets(ctx, bus, stdout)
	}
	if args[0] == "fetch" {
		if fs.NArg() != 1 {
			return fmt.Errorf("usage: jetqa asset fetch --host HOST NAME|URL")
		}
		return prefetch(ctx, bus, host, fs.Arg(0), *sha, stdout)
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
	return bus.AddAsset(ctx, name, source, r)
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

// prefetch asks a worker host to bring an asset into its cache, showing
// the download's progress, and waits for the answer.
func prefetch(ctx context.Context, bus *streams.Bus, host, source, sha string, stdout io.Writer) error {
	id := fmt.Sprintf("%x", sha256.Sum256([]byte(fmt.Sprint(time.Now().UnixNano(), source))))[:12]
	view := newProgressView(stdout)
	defer view.Close()
	answer := make(chan *schemas.AssetPrefetched, 1)
	watchCtx, stop := context.WithCancel(ctx)
	defer stop()
	last, err := bus.LastSequence(ctx, streams.StreamWorkers)
	if err != nil {
		return err
	}
	go func() {
		_ = bus.Watch(watchCtx, streams.WatchConfig{Stream: streams.StreamWorkers, From: last + 1,
			Filters: []string{"jetqa.worker." + streams.Token(host) + ".0.progress", "jetqa.worker." + streams.Token(host) + ".0.prefetched"}},
			func(_ schemas.Event, p schemas.Payload, _ streams.Delivery) error {
				switch e := p.(type) {
				case *schemas.AssetProgress:
					if e.Setting == "prefetch "+id {
						view.Update(e)
					}
				case *schemas.AssetPrefetched:
					if e.ID == id {
						answer <- e
						return streams.ErrStopWatch
					}
				}
				return nil
			})
	}()
	if _, err := bus.Append(ctx, 0, schemas.AssetPrefetchRequested{Host: host, ID: id, Source: source, SHA256: sha}); err != nil {
		return err
	}
	view.Println(fmt.Sprintf("asked worker host %s to cache %s; waiting for it (Ctrl-C stops waiting, not the download)", host, source))
	select {
	case a := <-answer:
		if a.Error != "" {
			return fmt.Errorf("worker host %s: %s", host, a.Error)
		}
		how := "downloaded"
		if a.Hit {
			how = "already cached"
		}
		view.Println(fmt.Sprintf("%s on %s: %s, %d bytes, sha256 %s", source, host, how, a.Size, a.SHA256))
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

package main

import (
	"flag"
	"fmt"
	"io"
	"sort"

	"jetqa/schemas"
	"jetqa/streams"
)

// cmdCache shows the asset caches of the worker hosts, as they last
// reported them.
func cmdCache(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "status" {
		return fmt.Errorf("usage: jetqa cache status [--host HOST]")
	}
	fs := flag.NewFlagSet("cache status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats", envOr("JETQA_NATS", "nats://127.0.0.1:4222"), "NATS server")
	host := fs.String("host", "", "only this worker host")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	ctx, bus, done, err := connectCLI(*natsURL, "jetqa-cache")
	if err != nil {
		return err
	}
	defer done()
	last, err := bus.LastSequence(ctx, streams.StreamWorkers)
	if err != nil {
		return err
	}
	latest := map[string]*schemas.CacheStatus{}
	if last > 0 {
		err = bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamWorkers, Filters: []string{"jetqa.worker.*.0.cache"}},
			func(_ schemas.Event, p schemas.Payload, d streams.Delivery) error {
				if cs, ok := p.(*schemas.CacheStatus); ok && (*host == "" || cs.Host == *host) {
					latest[cs.Host] = cs
				}
				if d.Pending == 0 || d.Sequence >= last {
					return streams.ErrStopWatch
				}
				return nil
			})
		if err != nil {
			return err
		}
	}
	if len(latest) == 0 {
		fmt.Fprintln(stdout, "no worker host has reported its cache yet")
		return nil
	}
	hosts := make([]string, 0, len(latest))
	for h := range latest {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		cs := latest[h]
		fmt.Fprintf(stdout, "%s: %s of %s used in %s (%s partial); %d hits, %d misses, %d downloads, %s fetched\n",
			h, mib(cs.TotalBytes), mib(cs.LimitBytes), cs.Dir, mib(cs.PartialBytes), cs.Hits, cs.Misses, cs.Downloads, mib(cs.BytesFetched))
		for _, e := range cs.Entries {
			use := ""
			if e.Users > 0 {
				use = fmt.Sprintf("  in use by %d job(s)", e.Users)
			}
			fmt.Fprintf(stdout, "  %-48s %12s  last used %s  sha256 %.12s%s\n", e.Source, mib(e.Size), e.LastUse.Local().Format("2006-01-02 15:04:05"), e.SHA256, use)
		}
	}
	return nil
}

package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
)

// cmdMatcher runs a needle matcher pool on its own: it connects out to
// NATS and takes match requests from the pool's work queue, alongside any
// other matcher processes on any host.
func cmdMatcher(args []string, stderr io.Writer) error {
	host, _ := os.Hostname()
	var r remote
	var name, logLevel, debugListen string
	var workers, spectra, needles int
	var noSplit bool
	fs := flag.NewFlagSet("matcher", flag.ContinueOnError)
	fs.SetOutput(stderr)
	remoteFlags(fs, &r, "matcher")
	fs.IntVar(&workers, "workers", runtime.NumCPU(), "requests matched at once, one per core by default")
	fs.StringVar(&name, "name", "matcher@"+host, "name of this matcher in its answers")
	fs.BoolVar(&noSplit, "no-split", false, "never spread a large request over idle matchers")
	fs.IntVar(&spectra, "spectra-mib", 512, "memory, in MiB, the needles may keep for whole-screen searches (0: none)")
	fs.IntVar(&needles, "needle-cache-mib", 256, "memory, in MiB, of the prepared needles kept for the next requests")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&debugListen, "debug-listen", "", debugUsage)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if workers < 1 {
		fmt.Fprintf(stderr, "jetqa matcher: --workers %d: need at least 1\n", workers)
		return exitCode(2)
	}
	log, err := newLogger(stderr, logLevel)
	if err != nil {
		return err
	}
	a := newAssembly(context.Background(), log)
	if a.dial, a.matcher, err = r.dial(); err != nil {
		return err
	}
	a.url = r.nats
	if spectra <= 0 {
		spectra = -1 // match.Config's "none"
	}
	if err := a.addMatchers(matcherConfig{Name: name, Workers: workers, NoSplit: noSplit, SpectraMiB: spectra, NeedleCacheMiB: needles}, a.matcher); err != nil {
		a.teardown()
		return err
	}
	if err := a.addDebug(debugListen); err != nil {
		a.teardown()
		return err
	}
	fmt.Fprintf(stderr, "jetqa matcher %s is up: %d worker(s), NATS %s (Ctrl-C stops)\n", name, workers, r.nats)
	return runUntilSignal(a, log)
}

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"syscall"
	"time"

	"github.com/oklog/run"

	"jetqa/streams"
)

// upConfig is everything `jetqa up` runs with.
type upConfig struct {
	DataDir       string
	Listen        string
	NATSPort      int
	Host          string
	Instances     int
	Matchers      int
	Accel         string
	WorkerClass   string
	WorkerTimeout time.Duration
	Heartbeat     time.Duration
	LogLevel      string
	Results       string
	Retention     string
	Cache         workerConfig // only the cache fields
}

func cmdUp(args []string, stderr io.Writer) error {
	host, _ := os.Hostname()
	var c upConfig
	fs := flag.NewFlagSet("up", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.DataDir, "data", "data", "directory for the event store, asset cache and jobs")
	fs.StringVar(&c.Listen, "listen", "127.0.0.1:9526", "address of the HTTP API")
	fs.IntVar(&c.NATSPort, "nats-port", 4222, "client port of the embedded NATS server (-1: any free port)")
	fs.StringVar(&c.Host, "host", host, "name of this worker host")
	fs.IntVar(&c.Instances, "instances", 1, "worker instances (VMs at once)")
	fs.IntVar(&c.Matchers, "matchers", runtime.NumCPU(), "needle matchers")
	fs.StringVar(&c.Accel, "accel", "auto", "QEMU accelerator: auto (KVM when usable, else TCG), kvm or tcg")
	fs.StringVar(&c.WorkerClass, "worker-class", "qemu_x86_64", "WORKER_CLASS of the instances (comma-separated)")
	fs.DurationVar(&c.WorkerTimeout, "worker-timeout", 60*time.Second, "silence after which a worker instance is offline")
	fs.DurationVar(&c.Heartbeat, "heartbeat", 10*time.Second, "how often worker instances say they are alive")
	fs.StringVar(&c.Results, "results", "", resultsUsage)
	fs.StringVar(&c.Retention, "retention", "", retentionUsage)
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	cacheFlags(fs, &c.Cache)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, c.LogLevel)
	if err != nil {
		return err
	}
	a, apiAddr, err := upAssembly(context.Background(), c, log)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "jetqa is up: API http://%s, NATS %s, data in %s (Ctrl-C stops)\n", apiAddr, a.url, c.DataDir)
	fmt.Fprintf(stderr, "web UI: http://%s/tests (users for signing in: jetqa admin user add --user NAME)\n", apiAddr)
	return runUntilSignal(a, log)
}

// upAssembly wires the embedded server and every stage of one host.
func upAssembly(ctx context.Context, c upConfig, log *slog.Logger) (*assembly, string, error) {
	dataDir, err := absDir(c.DataDir)
	if err != nil {
		return nil, "", err
	}
	a := newAssembly(ctx, log)
	// The worker stages connect with a worker's credentials, made for this
	// run: they may do here what a remote worker may do, no more.
	worker, err := streams.NewIdentity(streams.RoleWorker, c.Host)
	if err != nil {
		return nil, "", err
	}
	a.worker = &worker
	if err := a.embed(embedConfig{DataDir: dataDir, Host: "127.0.0.1", Port: c.NATSPort, Also: []streams.Credential{worker.Credential(c.Instances)}}); err != nil {
		return nil, "", err
	}
	apiAddr, err := a.addServer(serverConfig{Host: c.Host, Listen: c.Listen, Matchers: c.Matchers, WorkerTimeout: c.WorkerTimeout, Results: c.Results, Retention: c.Retention})
	if err == nil {
		err = a.localAPIKey(dataDir, apiAddr)
	}
	if err == nil {
		err = a.addWorker(workerConfig{
			Host: c.Host, DataDir: dataDir, Instances: c.Instances, Accel: c.Accel, WorkerClass: c.WorkerClass, Heartbeat: c.Heartbeat,
			CacheDir: c.Cache.CacheDir, CacheLimitGiB: c.Cache.CacheLimitGiB, CacheWorkers: c.Cache.CacheWorkers, AssetPaths: c.Cache.AssetPaths, ForbidNetworks: c.Cache.ForbidNetworks,
		})
	}
	if err != nil {
		a.teardown()
		return nil, "", err
	}
	return a, apiAddr, nil
}

// localAPIKey makes sure the local user has an API key (ensureLocalAPIKey),
// connected as the server's stages are.
func (a *assembly) localAPIKey(dataDir, apiAddr string) error {
	bus, err := a.connect("apikey", a.self)
	if err != nil {
		return err
	}
	defer bus.Close()
	ctx, cancel := context.WithTimeout(a.ctx, 30*time.Second)
	defer cancel()
	return ensureLocalAPIKey(ctx, bus, dataDir, apiAddr)
}

// runUntilSignal runs the assembly until SIGINT or SIGTERM (a clean stop,
// exit status 0) or until a stage fails.
func runUntilSignal(a *assembly, log *slog.Logger) error {
	a.g.Add(run.SignalHandler(a.ctx, os.Interrupt, syscall.SIGTERM))
	err := a.g.Run()
	a.teardown()
	if errors.Is(err, run.ErrSignal) {
		log.Info("stopped", "why", err.Error())
		return nil
	}
	return err
}

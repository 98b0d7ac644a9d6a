package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"syscall"

	"github.com/oklog/run"

	"jetqa/schemas"
	"jetqa/stages/api"
	"jetqa/stages/boot"
	"jetqa/stages/fetch"
	"jetqa/stages/match"
	"jetqa/stages/schedule"
	"jetqa/stages/upload"
	"jetqa/streams"
)

// upConfig is everything `jetqa up` runs with.
type upConfig struct {
	DataDir     string
	Listen      string
	NATSPort    int
	Host        string
	Instances   int
	Matchers    int
	Accel       string
	WorkerClass string
	LogLevel    string
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
	fs.StringVar(&c.LogLevel, "log-level", "info", "debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, c.LogLevel)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g, teardown, err := upGroup(ctx, c, log, func(apiAddr, natsURL string) {
		fmt.Fprintf(stderr, "jetqa is up: API http://%s, NATS %s, data in %s (Ctrl-C stops)\n", apiAddr, natsURL, c.DataDir)
	})
	if err != nil {
		return err
	}
	g.Add(run.SignalHandler(ctx, os.Interrupt, syscall.SIGTERM))
	err = g.Run()
	teardown()
	if errors.Is(err, run.ErrSignal) {
		log.Info("stopped", "why", err.Error())
		return nil
	}
	return err
}

// upGroup wires the embedded server and every stage of one host as actors.
// teardown, called after the group returns, drains the connections and then
// stops the server: consumers first, the server last.
func upGroup(ctx context.Context, c upConfig, log *slog.Logger, started func(apiAddr, natsURL string)) (*run.Group, func(), error) {
	if c.Instances < 1 {
		return nil, nil, fmt.Errorf("--instances %d: need at least 1", c.Instances)
	}
	dataDir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("data directory: %w", err)
	}
	ns, err := streams.StartServer(streams.ServerConfig{Port: c.NATSPort, DataDir: dataDir})
	if err != nil {
		return nil, nil, err
	}
	var buses []*streams.Bus
	teardown := func() {
		for i := len(buses) - 1; i >= 0; i-- {
			buses[i].Close()
		}
		ns.Shutdown()
		ns.WaitForShutdown()
	}
	fail := func(err error) (*run.Group, func(), error) {
		teardown()
		return nil, nil, err
	}
	connect := func(name string) (*streams.Bus, error) {
		b, err := streams.Connect(ctx, ns.ClientURL(), name, log)
		if err == nil {
			buses = append(buses, b)
		}
		return b, err
	}
	setup, err := connect("setup@" + c.Host)
	if err != nil {
		return fail(err)
	}
	if err := setup.Setup(ctx); err != nil {
		return fail(err)
	}

	var g run.Group
	stageCtx, stop := context.WithCancel(ctx)
	add := func(name string, runStage func(context.Context) error) {
		g.Add(func() error {
			if err := runStage(stageCtx); err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			return nil
		}, func(error) { stop() })
	}

	bus, err := connect("api@" + c.Host)
	if err != nil {
		return fail(err)
	}
	apiSrv, err := api.New(api.Config{Listen: c.Listen}, bus, log.With("stage", "api"))
	if err != nil {
		return fail(err)
	}
	add("api", apiSrv.Run)

	if bus, err = connect("schedule@" + c.Host); err != nil {
		return fail(err)
	}
	add("schedule", schedule.New(schedule.Config{}, bus, log.With("stage", "schedule")).Run)

	if bus, err = connect("fetch@" + c.Host); err != nil {
		return fail(err)
	}
	fetchStage, err := fetch.New(fetch.Config{
		Host:     c.Host,
		CacheDir: filepath.Join(dataDir, "cache"),
		AssetDir: filepath.Join(dataDir, "assets"),
		JobsDir:  filepath.Join(dataDir, "jobs"),
	}, bus, log.With("stage", "fetch"))
	if err != nil {
		return fail(err)
	}
	add("fetch", fetchStage.Run)

	for i := 1; i <= c.Instances; i++ {
		worker := schemas.WorkerRef{Host: c.Host, Instance: i}
		if bus, err = connect("boot@" + worker.String()); err != nil {
			return fail(err)
		}
		bootStage, err := boot.New(boot.Config{Worker: worker, Classes: schemas.WorkerClasses(c.WorkerClass), Accel: c.Accel}, bus, log.With("stage", "boot"))
		if err != nil {
			return fail(err)
		}
		add("boot "+worker.String(), bootStage.Run)
	}

	if bus, err = connect("match@" + c.Host); err != nil {
		return fail(err)
	}
	add("match", match.New(match.Config{Name: "match@" + c.Host, Workers: c.Matchers}, bus, log.With("stage", "match")).Run)

	if bus, err = connect("upload@" + c.Host); err != nil {
		return fail(err)
	}
	uploadStage, err := upload.New(upload.Config{Host: c.Host}, bus, log.With("stage", "upload"))
	if err != nil {
		return fail(err)
	}
	add("upload", uploadStage.Run)

	if started != nil {
		started(apiSrv.Addr(), ns.ClientURL())
	}
	return &g, func() { stop(); teardown() }, nil
}

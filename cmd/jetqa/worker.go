package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"jetqa/streams"
)

// cmdWorker runs a worker host: fetch, one boot stage per instance, and
// upload. It only connects out, to NATS.
func cmdWorker(args []string, stderr io.Writer) error {
	host, _ := os.Hostname()
	var c workerConfig
	var r remote
	var logLevel, config string
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	remoteFlags(fs, &r, "worker")
	fs.StringVar(&c.DataDir, "data", envOr("STATE_DIRECTORY", "worker-data"), "directory for the asset cache and jobs, shared by the host's processes (default: systemd's $STATE_DIRECTORY)")
	fs.StringVar(&config, "config", "", "workers.ini in openQA's format (HOST, WORKER_CLASS, CACHEDIRECTORY, CACHELIMIT, CACHEWORKERS; [SERVER] CREDENTIALS, TLS_CA; [N] per instance); flags given win")
	fs.StringVar(&c.Host, "host", host, "name of this worker host (default: the name its credentials were issued for)")
	fs.IntVar(&c.Instances, "instances", 1, "worker instances (VMs at once)")
	fs.IntVar(&c.Instance, "instance", 0, "run only this one instance, as jetqa-worker@N does (the host's stages run in `--host-stages`)")
	fs.BoolVar(&c.HostOnly, "host-stages", false, "run only the host's asset cache and upload, shared by its instances (as openQA's cache service)")
	fs.StringVar(&c.Accel, "accel", "auto", "QEMU accelerator: auto (KVM when usable, else TCG), kvm or tcg")
	fs.StringVar(&c.WorkerClass, "worker-class", "qemu_x86_64", "WORKER_CLASS of the instances (comma-separated)")
	fs.DurationVar(&c.Heartbeat, "heartbeat", 10*time.Second, "how often the instances say they are alive")
	cacheFlags(fs, &c)
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, logLevel)
	if err != nil {
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if config != "" {
		ini, err := readWorkersINI(config)
		if err != nil {
			return err
		}
		if err := ini.apply(&c, &r, set); err != nil {
			return err
		}
	}
	if c.Instance > 0 && c.HostOnly {
		return fmt.Errorf("--instance and --host-stages: give one")
	}
	if c.DataDir, err = absDir(c.DataDir); err != nil {
		return err
	}
	a := newAssembly(context.Background(), log)
	if a.dial, a.worker, err = r.dial(); err != nil {
		return err
	}
	if a.worker != nil {
		// Credentials speak for one host: the worker is that host.
		switch {
		case a.worker.Role != streams.RoleWorker:
			return fmt.Errorf("--creds %s holds %s credentials, not a worker's", r.creds, a.worker.Role)
		case !set["host"]:
			c.Host = a.worker.Name
		case streams.Token(c.Host) != streams.Token(a.worker.Name):
			return fmt.Errorf("--host %s, but the credentials are worker %s's: a worker may act only as the host it was issued for", c.Host, a.worker.Name)
		}
	}
	a.url = r.nats
	if err := a.addWorker(c); err != nil {
		a.teardown()
		return err
	}
	fmt.Fprintf(stderr, "jetqa worker %s is up: %d instance(s), NATS %s, data in %s (Ctrl-C stops)\n", c.Host, c.Instances, r.nats, c.DataDir)
	return runUntilSignal(a, log)
}

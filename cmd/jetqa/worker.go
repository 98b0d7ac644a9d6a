package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"
)

// cmdWorker runs a worker host: fetch, one boot stage per instance, and
// upload. It only connects out, to NATS.
func cmdWorker(args []string, stderr io.Writer) error {
	host, _ := os.Hostname()
	var c workerConfig
	var r remote
	var logLevel string
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	remoteFlags(fs, &r, "worker")
	fs.StringVar(&c.DataDir, "data", "worker-data", "directory for the asset cache and jobs")
	fs.StringVar(&c.Host, "host", host, "name of this worker host")
	fs.IntVar(&c.Instances, "instances", 1, "worker instances (VMs at once)")
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
	if c.DataDir, err = absDir(c.DataDir); err != nil {
		return err
	}
	a := newAssembly(context.Background(), log)
	if a.dial, a.worker, err = r.dial(); err != nil {
		return err
	}
	a.url = r.nats
	if err := a.addWorker(c); err != nil {
		a.teardown()
		return err
	}
	fmt.Fprintf(stderr, "jetqa worker %s is up: %d instance(s), NATS %s, data in %s (Ctrl-C stops)\n", c.Host, c.Instances, r.nats, c.DataDir)
	return runUntilSignal(a, log)
}

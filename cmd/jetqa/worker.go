package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"jetqa/stages/boot"
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
	fs.StringVar(&config, "config", "", "workers.ini in openQA's format (HOST, WORKER_CLASS, CACHEDIRECTORY, CACHELIMIT, CACHEWORKERS, jetqa's FORBID_SETTINGS, FORBID_NETWORKS and ASSET_PATHS; [SERVER] CREDENTIALS, TLS_CA; [N] per instance); flags given win")
	fs.StringVar(&c.Host, "host", host, "name of this worker host (default: the name its credentials were issued for)")
	fs.IntVar(&c.Instances, "instances", 1, "worker instances (VMs at once)")
	fs.IntVar(&c.Instance, "instance", 0, "run only this one instance, as jetqa-worker@N does (the host's stages run in `--host-stages`)")
	fs.BoolVar(&c.HostOnly, "host-stages", false, "run only the host's asset cache and upload, shared by its instances (as openQA's cache service)")
	fs.StringVar(&c.Accel, "accel", "auto", "QEMU accelerator: auto (KVM when usable, else TCG), kvm or tcg")
	fs.StringVar(&c.WorkerClass, "worker-class", "qemu_x86_64", "WORKER_CLASS of the instances (comma-separated)")
	fs.DurationVar(&c.Heartbeat, "heartbeat", 10*time.Second, "how often the instances say they are alive")
	fs.StringVar(&c.ForbidSettings, "forbid-settings", "", "job settings this worker refuses, comma-separated (e.g. QEMU_APPEND,UEFI_PFLASH_CODE): a job setting one ends incomplete, naming it")
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
	servers := []remote{r}
	if config != "" {
		ini, err := readWorkersINI(config)
		if err != nil {
			return err
		}
		if servers, err = ini.apply(&c, r, set); err != nil {
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
	// Each instance runs one VM at a time, whichever server its job is from.
	c.Slots = map[int]*boot.Slot{}
	for i := 1; i <= max(c.Instances, c.Instance); i++ {
		c.Slots[i] = boot.NewSlot()
	}
	var urls []string
	for _, srv := range servers {
		sc := c
		if sc.Dial, sc.Identity, err = srv.dial(); err != nil {
			return err
		}
		if sc.Identity != nil {
			// Credentials speak for one host: the worker is that host.
			switch {
			case sc.Identity.Role != streams.RoleWorker:
				return fmt.Errorf("credentials %s hold %s credentials, not a worker's", srv.creds, sc.Identity.Role)
			case !set["host"] && (c.Host == sc.Identity.Name || len(urls) == 0):
				c.Host, sc.Host = sc.Identity.Name, sc.Identity.Name
			case streams.Token(sc.Host) != streams.Token(sc.Identity.Name):
				return fmt.Errorf("host %s, but the credentials %s are worker %s's: a worker may act only as the host it was issued for", sc.Host, srv.creds, sc.Identity.Name)
			}
		}
		if len(servers) > 1 {
			// As openQA's cache, per server: job ids and asset names are
			// each server's own.
			sc.DataDir = filepath.Join(c.DataDir, streams.Token(srv.nats))
			if sc.CacheDir != "" {
				sc.CacheDir = filepath.Join(sc.CacheDir, streams.Token(srv.nats))
			}
		}
		if err := a.addWorker(sc); err != nil {
			a.teardown()
			return err
		}
		urls = append(urls, srv.nats)
	}
	a.url = strings.Join(urls, " ")
	fmt.Fprintf(stderr, "jetqa worker %s is up: %d instance(s), NATS %s, data in %s (Ctrl-C stops)\n", c.Host, c.Instances, a.url, c.DataDir)
	return runUntilSignal(a, log)
}

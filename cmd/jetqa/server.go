package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"jetqa/streams"
)

// resultsUsage is the --results flag's help.
const resultsUsage = "keep results in S3: s3://BUCKET[/PREFIX][?endpoint=URL], with credentials, region and endpoint from the AWS_* environment as the AWS tools read them (default: the embedded object store)"

// retentionUsage is the --retention flag's help.
const retentionUsage = "remove results once kept long enough: KIND[:RESULT]=AGE,… with KIND screenshots, video, logs, other or events, e.g. screenshots:failed=90d,screenshots=30d,logs=180d,events=365d (default: keep everything)"

// cmdServer runs the server side: the embedded NATS server, the API, the
// scheduler and the matcher pool. Workers connect to its NATS port.
func cmdServer(args []string, stderr io.Writer) error {
	host, _ := os.Hostname()
	var dataDir, listen, natsHost, logLevel, debugListen string
	var natsPort, matchers int
	var workerTimeout time.Duration
	var tlsFiles streams.TLSFiles
	var name, cluster, routes, results, keep, sync string
	var clusterPort, wsPort int
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&dataDir, "data", "data", "directory for the event store")
	fs.StringVar(&listen, "listen", "127.0.0.1:9526", "address of the HTTP API")
	fs.StringVar(&natsHost, "nats-host", "127.0.0.1", "address the embedded NATS server listens on for clients (0.0.0.0: reachable by remote workers)")
	fs.IntVar(&natsPort, "nats-port", 4222, "client port of the embedded NATS server (-1: any free port)")
	fs.IntVar(&matchers, "matchers", runtime.NumCPU(), "needle matchers in this process (0: none, run `jetqa matcher` elsewhere)")
	fs.DurationVar(&workerTimeout, "worker-timeout", 60*time.Second, "silence after which a worker instance is offline")
	fs.StringVar(&tlsFiles.Cert, "tls-cert", "", "certificate of the NATS client port (PEM; `jetqa admin tls init` makes one for a lab): remote workers then connect with tls://")
	fs.StringVar(&tlsFiles.Key, "tls-key", "", "private key of --tls-cert (PEM)")
	fs.StringVar(&tlsFiles.CA, "tls-ca", "", "CA that signed the cluster's certificates: routes then require TLS both ways")
	fs.IntVar(&wsPort, "ws-port", 0, "WebSocket port for workers behind HTTP proxies (wss:// with --tls-cert; 0: none)")
	fs.StringVar(&name, "name", host, "name of this server in a cluster (unique)")
	fs.StringVar(&cluster, "cluster", "", "join or form the NATS cluster of this name")
	fs.IntVar(&clusterPort, "cluster-port", 6222, "port this server listens on for routes from the other nodes")
	fs.StringVar(&routes, "routes", "", "route URLs of the cluster's nodes, comma-separated (nats://n1:6222,…; tls:// with --tls-ca)")
	fs.StringVar(&results, "results", "", resultsUsage)
	fs.StringVar(&keep, "retention", "", retentionUsage)
	fs.StringVar(&sync, "sync", "auto", "when JetStream writes events to the disk (fsync): always (before acknowledging each; what auto does on a single server) or interval (every 2 minutes; what auto does in a cluster, whose other nodes hold each event); docs/reliability.md")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&debugListen, "debug-listen", "", debugUsage)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if _, err := syncAlways(sync, cluster); err != nil {
		fmt.Fprintf(stderr, "jetqa server: %v\n", err)
		return exitCode(2)
	}
	log, err := newLogger(stderr, logLevel)
	if err != nil {
		return err
	}
	dir, err := absDir(dataDir)
	if err != nil {
		return err
	}
	a := newAssembly(context.Background(), log)
	ec := embedConfig{DataDir: dir, Name: name, Host: natsHost, Port: natsPort, TLS: tlsFiles, WSPort: wsPort, Sync: sync}
	if cluster != "" {
		ec.Cluster, ec.ClusterPort = cluster, clusterPort
		ec.Routes = splitList(routes)
	}
	if err := a.embed(ec); err != nil {
		return err
	}
	if err := a.addDebug(debugListen); err != nil {
		a.teardown()
		return err
	}
	apiAddr, err := a.addServer(serverConfig{Host: host, Listen: listen, Matchers: matchers, WorkerTimeout: workerTimeout, Results: results, Retention: keep})
	if err != nil {
		a.teardown()
		return err
	}
	fmt.Fprintf(stderr, "jetqa server is up: API http://%s, NATS %s, data in %s (Ctrl-C stops)\n", apiAddr, a.url, dataDir)
	fmt.Fprintf(stderr, "web UI: http://%s/tests (users for signing in: jetqa admin user add --user NAME)\n", apiAddr)
	return runUntilSignal(a, log)
}

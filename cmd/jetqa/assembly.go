package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/oklog/run"

	"jetqa/schemas"
	"jetqa/stages/api"
	"jetqa/stages/authority"
	"jetqa/stages/boot"
	"jetqa/stages/fetch"
	"jetqa/stages/match"
	"jetqa/stages/retention"
	"jetqa/stages/schedule"
	"jetqa/stages/upload"
	"jetqa/streams"
	"jetqa/streams/blobs"
)

// assembly wires stages as oklog/run actors, each on its own NATS
// connection, and tears them down in order: stages stop consuming, the
// connections drain, the embedded server (if any) stops last.
type assembly struct {
	ctx   context.Context
	log   *slog.Logger
	url   string            // where remote parties connect
	dial  streams.Dial      // how this process's stages connect
	ns    *streams.Embedded // embedded server, nil when connecting to one
	buses []*streams.Bus
	g     run.Group

	// Who the stages connect as: the server's own stages, the worker
	// stages, a matcher pool. nil connects without credentials.
	self, worker, matcher *streams.Identity
	dataDir               string // of the embedded server
	replicas              int    // of new streams and buckets

	stageCtx context.Context
	stop     context.CancelFunc
}

func newAssembly(ctx context.Context, log *slog.Logger) *assembly {
	a := &assembly{ctx: ctx, log: log}
	a.stageCtx, a.stop = context.WithCancel(ctx)
	return a
}

// embedConfig is what the embedded NATS server of `jetqa up` and `jetqa
// server` runs with.
type embedConfig struct {
	DataDir string
	Name    string // of the server, unique in a cluster
	Host    string // to listen on for clients
	Port    int
	WSPort  int              // WebSocket listener, 0: none
	TLS     streams.TLSFiles // Cert and Key: TLS on the client and WebSocket ports; CA: on routes
	// Cluster, when set, joins the NATS cluster of that name through Routes.
	Cluster     string
	ClusterPort int
	Routes      []string
	// Also may connect: the in-process worker of `jetqa up`.
	Also []streams.Credential
	// Sync is JetStream's sync policy: "always", "interval", or "" (auto:
	// always on a single server, the interval in a cluster, whose other
	// nodes hold every acknowledged event).
	Sync string
}

// syncAlways reads --sync.
func syncAlways(sync, cluster string) (bool, error) {
	switch sync {
	case "", "auto":
		return cluster == "", nil
	case "always":
		return true, nil
	case "interval":
		return false, nil
	}
	return false, fmt.Errorf("--sync %q: give auto, always or interval", sync)
}

// adminCreds is the operator's credentials file in the data directory:
// the command line on the server host connects with it.
const adminCreds = "admin.creds"

// embed starts the embedded NATS server. Only credentials connect: the
// server's own stages' (made now, never written down), the operator's
// (DATA/admin.creds, made on the first start) and those issued later.
func (a *assembly) embed(c embedConfig) error {
	self, err := streams.NewIdentity(streams.RoleAdmin, "server")
	if err != nil {
		return err
	}
	admin, err := streams.EnsureIdentityFile(filepath.Join(c.DataDir, adminCreds), streams.RoleAdmin, "admin", "jetqa server in "+c.DataDir)
	if err != nil {
		return err
	}
	cfg := streams.ServerConfig{
		Host: c.Host, Port: c.Port, DataDir: c.DataDir, Name: c.Name, WebSocketPort: c.WSPort,
		ClusterName: c.Cluster, ClusterPort: c.ClusterPort, Routes: c.Routes,
		Users:  append([]streams.Credential{self.Credential(0), admin.Credential(0)}, c.Also...),
		Issued: readIssued(filepath.Join(c.DataDir, issuedFile)),
		Log:    a.log.With("stage", "nats"),
	}
	if cfg.SyncAlways, err = syncAlways(c.Sync, c.Cluster); err != nil {
		return err
	}
	if c.TLS.Cert != "" || c.TLS.Key != "" {
		if cfg.TLS, err = streams.ServerTLS(c.TLS); err != nil {
			return err
		}
	}
	switch {
	case c.Cluster != "" && c.TLS.CA != "":
		if cfg.RouteTLS, err = streams.RouteTLS(c.TLS); err != nil {
			return err
		}
	case c.Cluster != "":
		a.log.Warn("cluster routes without TLS: anyone who reaches the route port can join the cluster; give --tls-cert, --tls-key and --tls-ca", "port", c.ClusterPort)
	}
	a.replicas = 1
	if c.Cluster != "" {
		a.replicas = min(3, max(1, len(c.Routes)))
	}
	ns, err := streams.StartServer(cfg)
	if err != nil {
		return err
	}
	a.ns, a.url, a.self, a.dataDir = ns, ns.ClientURL(), &self, c.DataDir
	if cfg.TLS != nil {
		a.url = strings.Replace(a.url, "nats://", "tls://", 1)
	}
	a.dial = streams.Dial{InProcess: ns}
	return nil
}

// connect opens a connection named name as id.
func (a *assembly) connect(name string, id *streams.Identity) (*streams.Bus, error) {
	d := a.dial
	d.Identity = id
	b, err := streams.ConnectTo(a.ctx, d, name, a.log)
	if err != nil {
		return nil, err
	}
	a.buses = append(a.buses, b)
	return b, nil
}

// connectWorker opens a connection that speaks for a worker instance
// (instance 0: the host's own stages) to the server c serves: it reports
// to the server and never writes the job stream or creates anything.
func (a *assembly) connectWorker(c workerConfig, name string, w schemas.WorkerRef) (*streams.Bus, error) {
	d, id := a.dial, a.worker
	if c.Dial.URLs != "" {
		d, id = c.Dial, c.Identity
	}
	d.Identity = id
	b, err := streams.ConnectTo(a.ctx, d, name, a.log)
	if err != nil {
		return nil, err
	}
	a.buses = append(a.buses, b)
	b.AsWorker(w)
	return b, nil
}

// add runs a stage as an actor: when one ends, all are stopped.
func (a *assembly) add(name string, runStage func(context.Context) error) {
	a.g.Add(func() error {
		if err := runStage(a.stageCtx); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}, func(error) { a.stop() })
}

func (a *assembly) teardown() {
	a.stop()
	for i := len(a.buses) - 1; i >= 0; i-- {
		a.buses[i].Close()
	}
	if a.ns != nil {
		a.ns.Shutdown()
		a.ns.WaitForShutdown()
	}
}

// serverConfig is what the server side runs with.
type serverConfig struct {
	Host          string
	Listen        string
	Matchers      int
	WorkerTimeout time.Duration
	// Results is where results are kept: s3://BUCKET[/PREFIX], or "" for
	// the embedded object store.
	Results string
	// Retention is the retention policy (retention.ParseRules); "" keeps
	// everything.
	Retention string
}

// addServer adds the API, the scheduler and the matcher pool; it returns
// the API's address.
func (a *assembly) addServer(c serverConfig) (string, error) {
	var rules retention.Rules
	if c.Retention != "" {
		var err error
		if rules, err = retention.ParseRules(c.Retention); err != nil {
			return "", fmt.Errorf("--retention: %w", err)
		}
	}
	var results blobs.Store
	if c.Results != "" {
		ctx, cancel := context.WithTimeout(a.ctx, time.Minute)
		s3, err := blobs.OpenS3(ctx, c.Results)
		cancel()
		if err != nil {
			return "", fmt.Errorf("--results: %w", err)
		}
		a.log.Info("results are kept in S3", "where", s3.Describe())
		results = s3
	}
	bus, err := a.connect("authority@"+c.Host, a.self)
	if err != nil {
		return "", err
	}
	if results != nil {
		bus.UseResults(results)
	}
	// Only the server creates and changes streams, buckets and consumers.
	if err := a.setup(bus); err != nil {
		return "", err
	}
	a.add("authority", authority.New(authority.Config{}, bus, a.log.With("stage", "authority")).Run)
	if a.ns != nil {
		a.add("credentials", func(ctx context.Context) error { return a.followCredentials(ctx, bus) })
	}
	if bus, err = a.connect("api@"+c.Host, a.self); err != nil {
		return "", err
	}
	if results != nil {
		bus.UseResults(results)
	}
	apiSrv, err := api.New(api.Config{Listen: c.Listen}, bus, a.log.With("stage", "api"))
	if err != nil {
		return "", err
	}
	a.add("api", apiSrv.Run)
	if len(rules) > 0 {
		if bus, err = a.connect("retention@"+c.Host, a.self); err != nil {
			return "", err
		}
		if results != nil {
			bus.UseResults(results)
		}
		a.add("retention", retention.New(retention.Config{Rules: rules}, bus, a.log.With("stage", "retention")).Run)
	}
	if bus, err = a.connect("schedule@"+c.Host, a.self); err != nil {
		return "", err
	}
	sched := schedule.New(schedule.Config{WorkerTimeout: c.WorkerTimeout}, bus, a.log.With("stage", "schedule"))
	a.add("schedule", sched.Run)
	if c.Matchers > 0 {
		if err := a.addMatchers(matcherConfig{Name: "match@" + c.Host, Workers: c.Matchers}, a.self); err != nil {
			return "", err
		}
	}
	return apiSrv.Addr(), nil
}

// setup creates the streams and buckets, or finds them. A cluster answers
// only once it has elected a leader and its nodes joined: until then the
// setup is tried again, for a while.
func (a *assembly) setup(bus *streams.Bus) error {
	replicas := max(a.replicas, 1)
	ctx, cancel := context.WithTimeout(a.ctx, 3*time.Minute)
	defer cancel()
	for {
		// One try must not use up the wait: a request the cluster takes
		// while it has no leader is never answered.
		try, cancelTry := context.WithTimeout(ctx, 15*time.Second)
		err := bus.SetupReplicas(try, replicas)
		cancelTry()
		if err == nil || replicas == 1 {
			return err
		}
		a.log.Warn("waiting for the cluster to set up the streams", "replicas", replicas, "err", err)
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster of %d nodes not ready: %w", replicas, err)
		case <-time.After(2 * time.Second):
		}
	}
}

// followCredentials keeps the embedded server's users in step with the
// credentials issued, on this node and, through the replicated bucket, on
// every node of a cluster.
func (a *assembly) followCredentials(ctx context.Context, bus *streams.Bus) error {
	return bus.WatchCredentials(ctx, func(issued []streams.Credential) {
		if err := a.ns.SetCredentials(issued); err != nil {
			a.log.Error("credentials not applied", "err", err)
			return
		}
		a.log.Info("NATS users updated", "issued", len(issued))
		if data, err := json.Marshal(issued); err == nil {
			_ = os.WriteFile(filepath.Join(a.dataDir, issuedFile), data, 0o600)
		}
	})
}

// issuedFile keeps the credentials issued, for the next start of the
// embedded server; the bucket stays the truth.
const issuedFile = "issued-credentials.json"

func readIssued(path string) []streams.Credential {
	var issued []streams.Credential
	if data, err := os.ReadFile(path); err == nil {
		_ = json.Unmarshal(data, &issued)
	}
	return issued
}

// matcherConfig is what a matcher pool runs with.
type matcherConfig struct {
	Name       string
	Workers    int
	NoSplit    bool
	SpectraMiB int // 0: the default, negative: none
	// NeedleCacheMiB bounds the prepared needles kept; 0: the default.
	NeedleCacheMiB int
}

// addMatchers adds a needle matcher pool connecting as id.
func (a *assembly) addMatchers(c matcherConfig, id *streams.Identity) error {
	bus, err := a.connect(c.Name, id)
	if err != nil {
		return err
	}
	bus.UseOnly()
	a.add("match", match.New(match.Config{Name: c.Name, Workers: c.Workers, NoSplit: c.NoSplit, SpectraMiB: c.SpectraMiB, NeedleCacheBytes: int64(c.NeedleCacheMiB) << 20}, bus, a.log.With("stage", "match")).Run)
	return nil
}

// workerConfig is what a worker host runs with.
type workerConfig struct {
	Host      string
	DataDir   string
	Instances int
	// Instance > 0 runs only that instance; HostOnly runs only the host's
	// stages (fetch, upload). By default a worker runs both.
	Instance int
	HostOnly bool
	// ClassOf is an instance's own WORKER_CLASS, "" for WorkerClass.
	ClassOf     func(instance int) string
	Accel       string
	WorkerClass string
	Heartbeat   time.Duration
	// ForbidSettings are job settings the instances refuse, comma-separated.
	ForbidSettings string
	// AssetPaths are the directories whose files jobs may name by path,
	// comma-separated (fetch.Config.AssetPaths); DATA/assets always.
	AssetPaths string
	// ForbidNetworks are the networks jobs may not download from
	// (fetch.ParseNetworks).
	ForbidNetworks string
	// The asset cache, with openQA's workers.ini names: CACHEDIRECTORY
	// (default DataDir/cache), CACHELIMIT in GiB, CACHEWORKERS.
	CacheDir      string
	CacheLimitGiB float64
	CacheWorkers  int
	// Dial and Identity reach the server this worker serves; zero: the
	// assembly's. Slots are the instances' VMs, shared with the stages
	// serving other servers.
	Dial     streams.Dial
	Identity *streams.Identity
	Slots    map[int]*boot.Slot
}

// cacheFlags adds the asset cache flags; their defaults come from the
// environment variables named as in openQA's workers.ini.
func cacheFlags(fs *flag.FlagSet, c *workerConfig) {
	fs.StringVar(&c.CacheDir, "cache-dir", os.Getenv("CACHEDIRECTORY"), "asset cache directory, shared by the host's instances (CACHEDIRECTORY; default DATA/cache)")
	limit, err := strconv.ParseFloat(envOr("CACHELIMIT", "50"), 64)
	if err != nil {
		limit = 50
	}
	fs.Float64Var(&c.CacheLimitGiB, "cache-limit", limit, "asset cache size limit in GiB (CACHELIMIT)")
	workers, err := strconv.Atoi(envOr("CACHEWORKERS", "5"))
	if err != nil {
		workers = 5
	}
	fs.IntVar(&c.CacheWorkers, "cache-workers", workers, "parallel asset downloads (CACHEWORKERS)")
	fs.StringVar(&c.ForbidNetworks, "forbid-networks", "", "networks jobs may not download assets from, comma-separated CIDRs or addresses, e.g. 169.254.0.0/16,10.0.0.0/8 (a worker's internal hosts, a cloud's metadata service)")
	fs.StringVar(&c.AssetPaths, "asset-paths", "", "directories of this host whose files jobs may name by absolute path or file:// URL, comma-separated; DATA/assets always; any other path is refused, as whoever may post jobs could read it through the VM")
}

// addWorker adds a worker host's stages: fetch, one boot stage per
// instance, upload.
// guestBridgeCommand is the subcommand QEMU runs for each connection a
// Perl job's guest opens to the job's routes.
const guestBridgeCommand = "guest-bridge"

// guestBridge is how QEMU runs this program's guest-bridge; none when
// the program cannot say where it is, and then guests have no routes.
func (a *assembly) guestBridge() []string {
	exe, err := os.Executable()
	if err != nil {
		a.log.Warn("guests get no routes (upload_logs, data_url): this program's path is unknown", "err", err)
		return nil
	}
	return []string{exe, guestBridgeCommand}
}

func (a *assembly) addWorker(c workerConfig) error {
	if c.Instances < 1 {
		return fmt.Errorf("--instances %d: need at least 1", c.Instances)
	}
	host := schemas.WorkerRef{Host: c.Host}
	if c.Instance == 0 {
		if err := a.addHostStages(c, host); err != nil {
			return err
		}
	}
	instances := []int{c.Instance}
	switch {
	case c.HostOnly:
		instances = nil
	case c.Instance == 0:
		instances = nil
		for i := 1; i <= c.Instances; i++ {
			instances = append(instances, i)
		}
	}
	for _, i := range instances {
		worker := schemas.WorkerRef{Host: c.Host, Instance: i}
		bus, err := a.connectWorker(c, "boot@"+worker.String(), worker)
		if err != nil {
			return err
		}
		class := c.WorkerClass
		if c.ClassOf != nil && c.ClassOf(i) != "" {
			class = c.ClassOf(i)
		}
		bootStage, err := boot.New(boot.Config{
			Worker: worker, Classes: schemas.WorkerClasses(class), Accel: c.Accel, HeartbeatInterval: c.Heartbeat, Slot: c.Slots[i],
			Forbidden: schemas.WorkerClasses(c.ForbidSettings), GuestBridge: a.guestBridge(),
		}, bus, a.log.With("stage", "boot", "server", c.Dial.URLs))
		if err != nil {
			return err
		}
		a.add("boot "+worker.String()+" "+c.Dial.URLs, bootStage.Run)
	}
	return nil
}

// addHostStages adds what a worker host's instances share: the asset
// cache and checkouts (fetch) and the upload of results.
func (a *assembly) addHostStages(c workerConfig, host schemas.WorkerRef) error {
	bus, err := a.connectWorker(c, "fetch@"+c.Host, host)
	if err != nil {
		return err
	}
	cacheDir := c.CacheDir
	if cacheDir == "" {
		cacheDir = filepath.Join(c.DataDir, "cache")
	}
	forbidden, err := fetch.ParseNetworks(c.ForbidNetworks)
	if err != nil {
		return fmt.Errorf("--forbid-networks: %w", err)
	}
	fetchStage, err := fetch.New(fetch.Config{
		Host:            c.Host,
		CacheDir:        cacheDir,
		CacheLimitBytes: int64(c.CacheLimitGiB * (1 << 30)),
		CacheWorkers:    c.CacheWorkers,
		AssetDir:        filepath.Join(c.DataDir, "assets"),
		AssetPaths:      splitList(c.AssetPaths),
		ForbidNetworks:  forbidden,
		JobsDir:         filepath.Join(c.DataDir, "jobs"),
	}, bus, a.log.With("stage", "fetch"))
	if err != nil {
		return err
	}
	a.add("fetch", fetchStage.Run)
	if bus, err = a.connectWorker(c, "upload@"+c.Host, host); err != nil {
		return err
	}
	uploadStage, err := upload.New(upload.Config{Host: c.Host, JobsDir: filepath.Join(c.DataDir, "jobs")}, bus, a.log.With("stage", "upload"))
	if err != nil {
		return err
	}
	a.add("upload", uploadStage.Run)
	return nil
}

// absDir makes the data directory absolute and creates it.
func absDir(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return "", fmt.Errorf("data directory: %w", err)
	}
	return abs, nil
}

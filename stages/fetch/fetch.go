// Package fetch is the worker host's setup stage: for each job assigned to
// one of the host's instances it brings the job's assets into the host's
// cache and checks out the job's tests and needles at a pinned commit, then
// says the job is ready to boot.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"jetqa/schemas"
	"jetqa/stages/fetch/cache"
	"jetqa/stages/fetch/gitmirror"
	"jetqa/streams"
)

// Config of the fetch stage of one worker host.
type Config struct {
	// Host is the worker host's name, as its instances register.
	Host string
	// CacheDir holds downloaded and copied assets (CACHEDIRECTORY).
	CacheDir string
	// CacheLimitBytes bounds the cache (CACHELIMIT); default 50 GiB.
	CacheLimitBytes int64
	// CacheWorkers is how many downloads run at once (CACHEWORKERS);
	// default 5.
	CacheWorkers int
	// AssetDir is where assets given by bare name are looked up.
	AssetDir string
	// AssetPaths are the directories of the host whose files a job may
	// name by absolute path or file:// URL, besides AssetDir. Any other
	// path is refused: a job's settings come from whoever may post jobs,
	// and a file given to the VM can be read back by the job's tests.
	AssetPaths []string
	// JobsDir gets one directory per job: checkouts and results.
	JobsDir string
	// MirrorsDir keeps one bare mirror per test or needle repository;
	// default CacheDir/git.
	MirrorsDir string
	// HTTPClient downloads assets given by URL; default http.DefaultClient,
	// or one that refuses ForbidNetworks.
	HTTPClient *http.Client
	// ForbidNetworks are the networks jobs may not download assets from
	// (ParseNetworks): a worker inside a lab or cloud keeps jobs away from
	// its internal hosts and metadata services this way.
	ForbidNetworks []netip.Prefix
}

func (c Config) withDefaults() Config {
	if c.Host == "" {
		c.Host, _ = os.Hostname()
	}
	switch {
	case c.HTTPClient == nil && len(c.ForbidNetworks) > 0:
		c.HTTPClient = guardedClient(c.ForbidNetworks)
	case c.HTTPClient == nil:
		c.HTTPClient = http.DefaultClient
	}
	if c.MirrorsDir == "" && c.CacheDir != "" {
		c.MirrorsDir = filepath.Join(c.CacheDir, "git")
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.CacheDir == "":
		return errors.New("fetch: no cache directory")
	case c.JobsDir == "":
		return errors.New("fetch: no jobs directory")
	}
	return nil
}

// Bus is what the fetch stage needs of the event streams.
type Bus interface {
	Append(ctx context.Context, job int64, p schemas.Payload) (uint64, error)
	Consume(ctx context.Context, cfg streams.ConsumerConfig, h streams.Handler) error
	OnJobEvent(ctx context.Context, job int64, token string, fn func()) error
	LoadJob(ctx context.Context, job int64) (*schemas.JobAggregate, error)
	LoadJobAt(ctx context.Context, job int64, seq uint64) (*schemas.JobAggregate, error)
	LookupAsset(ctx context.Context, name string) (*schemas.AssetRegistered, error)
	OpenBlobAt(ctx context.Context, bucket, key string, offset int64) (io.ReadCloser, int64, error)
}

// Stage is the fetch stage.
type Stage struct {
	cfg     Config
	bus     Bus
	log     *slog.Logger
	mirrors *gitmirror.Mirrors
	cache   *cache.Cache

	heldMu sync.Mutex
	held   map[int64]*heldJob // cache entries in use, by job
}

// heldJob is what a job holds of the cache until it ends.
type heldJob struct {
	entries []*cache.Entry
	stop    context.CancelFunc // of the wait for its end
}

// New returns the fetch stage of one worker host.
func New(cfg Config, bus Bus, log *slog.Logger) (*Stage, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	for _, d := range []string{cfg.CacheDir, cfg.JobsDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("fetch: %w", err)
		}
	}
	mirrors, err := gitmirror.New(gitmirror.Config{Dir: cfg.MirrorsDir, Log: log})
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	c, err := cache.Open(cache.Config{Dir: filepath.Join(cfg.CacheDir, "assets"), LimitBytes: cfg.CacheLimitBytes, Workers: cfg.CacheWorkers, Log: log})
	if err != nil {
		return nil, fmt.Errorf("fetch: %w", err)
	}
	return &Stage{cfg: cfg, bus: bus, log: log, mirrors: mirrors, cache: c, held: map[int64]*heldJob{}}, nil
}

// Run consumes the host's assignments until ctx ends.
func (s *Stage) Run(ctx context.Context) error {
	s.publishCacheStatus(ctx)
	go s.releaseFinished(ctx)
	go func() {
		err := s.bus.Consume(ctx, streams.ConsumerConfig{
			Stream:  streams.StreamWorkers,
			Durable: streams.PrefetchDurable(s.cfg.Host),
			Filters: []string{streams.PrefetchFor(s.cfg.Host)},
			AckWait: time.Minute,
		}, s.prefetch)
		if err != nil && ctx.Err() == nil {
			s.log.Error("prefetch consumer", "err", err)
		}
	}()
	return s.bus.Consume(ctx, streams.ConsumerConfig{
		Stream:  streams.StreamJobs,
		Durable: streams.FetchDurable(s.cfg.Host),
		Filters: []string{streams.AssignedTo(s.cfg.Host)},
	}, s.handle)
}

// prefetch brings an asset into the cache ahead of the jobs that need it,
// as `jetqa asset fetch` asks, and answers how it went.
func (s *Stage) prefetch(ctx context.Context, _ schemas.Event, p schemas.Payload, _ streams.Delivery) error {
	req, ok := p.(*schemas.AssetPrefetchRequested)
	if !ok {
		return nil
	}
	done := schemas.AssetPrefetched{Host: s.cfg.Host, ID: req.ID, Source: req.Source}
	src, want, err := s.source(ctx, "ASSET", req.Source, req.SHA256)
	if err == nil {
		var e *cache.Entry
		e, err = s.cache.Get(ctx, src, want, s.reporter(ctx, 0, schemas.WorkerRef{Host: s.cfg.Host}, "prefetch "+req.ID, req.Source))
		if err == nil {
			done.SHA256, done.Size, done.Hit = e.SHA256, e.Size, e.Hit
			e.Release()
		}
		s.publishCacheStatus(ctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		done.Error = err.Error()
	}
	_, err = s.bus.Append(ctx, 0, done)
	return err
}

// releaseFinished gives the cache entries of finished jobs back to the
// cache's eviction: at once when the job's end is seen (hold), and on a
// sweep of the jobs still holding entries for an end that happened while
// the connection was down.
func (s *Stage) releaseFinished(ctx context.Context) {
	sweep := time.NewTicker(time.Minute)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sweep.C:
		}
		s.heldMu.Lock()
		jobs := slices.Collect(maps.Keys(s.held))
		s.heldMu.Unlock()
		for _, job := range jobs {
			if agg, err := s.bus.LoadJob(ctx, job); err == nil && agg.Final() {
				s.release(job)
			}
		}
	}
}

// errJob marks a problem with the job itself (its settings, its assets,
// its repositories): the job ends incomplete with the message as reason.
type errJob struct{ err error }

func (e errJob) Error() string { return e.err.Error() }
func (e errJob) Unwrap() error { return e.err }

func jobError(format string, args ...any) error { return errJob{fmt.Errorf(format, args...)} }

func (s *Stage) handle(ctx context.Context, ev schemas.Event, p schemas.Payload, d streams.Delivery) error {
	assigned, ok := p.(*schemas.JobAssigned)
	if !ok {
		return nil
	}
	job, worker := ev.Job, assigned.Worker
	log := s.log.With("job", job, "worker", worker.String())
	agg, err := s.bus.LoadJobAt(ctx, job, d.Sequence)
	if err != nil {
		return err
	}
	if agg.Final() || agg.Started || agg.Worker == nil || *agg.Worker != worker {
		log.Info("skipping an assignment that is no longer current", "state", agg.State)
		return nil
	}
	ready, err := s.setup(ctx, job, worker, agg.Settings)
	var je errJob
	if errors.As(err, &je) {
		log.Warn("job setup failed", "reason", err)
		_, err = s.bus.Append(ctx, job, schemas.JobFinished{Result: schemas.ResultIncomplete, Reason: "setup failed: " + err.Error()})
	} else if err == nil {
		log.Info("job ready")
		_, err = s.bus.Append(ctx, job, ready)
	}
	if errors.Is(err, schemas.ErrTransition) {
		// Cancelled, or given to another worker, while this one set it up.
		log.Warn("job moved on during setup", "why", err)
		return nil
	}
	return err
}

func (s *Stage) setup(ctx context.Context, job int64, worker schemas.WorkerRef, settings map[string]string) (schemas.JobReady, error) {
	jobDir := filepath.Join(s.cfg.JobsDir, fmt.Sprint(job))
	if err := os.RemoveAll(jobDir); err != nil {
		return schemas.JobReady{}, err
	}
	if err := os.MkdirAll(jobDir, 0o755); err != nil {
		return schemas.JobReady{}, err
	}
	ready := schemas.JobReady{Worker: worker, Settings: settings, Assets: map[string]string{}, JobDir: jobDir}
	assetsDir := filepath.Join(jobDir, "assets")
	if err := os.MkdirAll(assetsDir, 0o755); err != nil {
		return ready, err
	}
	for _, setting := range AssetSettings(settings) {
		a, err := s.fetchAsset(ctx, job, worker, setting, settings[setting], settings[setting+"_SHA256"], assetsDir)
		if err != nil {
			s.release(job)
			return ready, err
		}
		if _, err := s.bus.Append(ctx, job, a); err != nil {
			return ready, err
		}
		ready.Assets[setting] = a.Path
	}
	caseDir, ok := settings["CASEDIR"]
	if !ok || caseDir == "" {
		return ready, jobError("CASEDIR is not set: give the git URL (or path) of the test distribution, e.g. CASEDIR=https://host/tests.git#main")
	}
	checkout, err := s.checkout(ctx, "CASEDIR", caseDir, filepath.Join(jobDir, "casedir"))
	if err != nil {
		return ready, err
	}
	checkout.Worker = worker
	if _, err := s.bus.Append(ctx, job, checkout); err != nil {
		return ready, err
	}
	ready.CaseDir = checkout.Path
	ready.ProductDir = ready.CaseDir
	if p := settings["PRODUCTDIR"]; p != "" {
		if ready.ProductDir, err = insideCaseDir("PRODUCTDIR", p, ready.CaseDir); err != nil {
			return ready, err
		}
	}
	needles := settings["NEEDLES_DIR"]
	if needles != "" && !filepath.IsAbs(needles) && !strings.Contains(needles, "://") && !strings.Contains(needles, "@") {
		// A relative NEEDLES_DIR is a directory of CASEDIR's checkout,
		// as os-autoinst takes it.
		if ready.NeedlesDir, err = insideCaseDir("NEEDLES_DIR", needles, ready.CaseDir); err != nil {
			return ready, err
		}
		ready.NeedlesCommit = checkout.Commit
	} else if needles != "" {
		nc, err := s.checkout(ctx, "NEEDLES_DIR", needles, filepath.Join(jobDir, "needles"))
		if err != nil {
			return ready, err
		}
		nc.Worker = worker
		if _, err := s.bus.Append(ctx, job, nc); err != nil {
			return ready, err
		}
		ready.NeedlesDir, ready.NeedlesCommit = nc.Path, nc.Commit
	} else {
		ready.NeedlesDir, ready.NeedlesCommit = defaultNeedlesDir(ready.CaseDir, ready.ProductDir, settings["DISTRI"]), checkout.Commit
	}
	return ready, nil
}

// insideCaseDir resolves a directory given relative to CASEDIR's
// checkout, refusing one outside it or missing.
func insideCaseDir(setting, rel, caseDir string) (string, error) {
	clean := filepath.Clean(rel)
	if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
		return "", jobError("%s=%s: a relative %s must stay inside CASEDIR", setting, rel, setting)
	}
	dir := filepath.Join(caseDir, clean)
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		return "", jobError("%s=%s: CASEDIR has no directory %s", setting, rel, clean)
	}
	return dir, nil
}

// defaultNeedlesDir is where openQA looks without NEEDLES_DIR:
// PRODUCTDIR/needles, products/<DISTRI>/needles inside CASEDIR, else
// needles/.
func defaultNeedlesDir(caseDir, productDir, distri string) string {
	if productDir != caseDir {
		d := filepath.Join(productDir, "needles")
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return d
		}
	}
	if distri != "" {
		d := filepath.Join(caseDir, "products", distri, "needles")
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			return d
		}
	}
	return filepath.Join(caseDir, "needles")
}

var assetSetting = regexp.MustCompile(`^(ISO|KERNEL|INITRD|UEFI_PFLASH_VARS|HDD_\d+|ISO_\d+|ASSET_\d+)$`)

// AssetSettings lists the settings of a job that name assets, sorted.
func AssetSettings(settings map[string]string) []string {
	var out []string
	for k, v := range settings {
		if v != "" && assetSetting.MatchString(k) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func isURL(s string) bool {
	return strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://")
}

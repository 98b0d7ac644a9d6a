// Package match is the needle matching pool: stateless matchers that take
// match requests from a JetStream work queue, fetch the candidate needles
// by content hash (decoded and prepared once per process), search the
// screen with OpenCV and answer on the requesting worker's subject.
package match

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"jetqa/schemas"
	"jetqa/stages/match/needle"
	"jetqa/streams"
)

// Config of one matcher process.
type Config struct {
	// Name identifies the matcher in its answers; default host name.
	Name string
	// Workers is how many requests this process matches at once; default
	// one per core.
	Workers int
	// MaxCandidates is how many failing candidates an answer reports.
	MaxCandidates int
	// NoSplit keeps every request in one piece (see split).
	NoSplit bool
	// SpectraMiB bounds the memory the needles keep for whole-screen
	// searches (their areas' DFTs); default 512, negative for none.
	SpectraMiB int
	// NeedleCacheBytes bounds the memory of the prepared needles kept for
	// the next requests (their areas' pixels); default 256 MiB.
	NeedleCacheBytes int64
}

func (c Config) withDefaults() Config {
	if c.Name == "" {
		h, _ := os.Hostname()
		c.Name = "matcher@" + h
	}
	if c.Workers <= 0 {
		c.Workers = runtime.NumCPU()
	}
	if c.MaxCandidates <= 0 {
		c.MaxCandidates = 5
	}
	if c.NeedleCacheBytes <= 0 {
		c.NeedleCacheBytes = 256 << 20
	}
	if c.SpectraMiB == 0 {
		c.SpectraMiB = needle.DefaultKeptSpectra >> 20
	}
	return c
}

// Bus is what a matcher needs of the event streams and blob store.
type Bus interface {
	Consume(ctx context.Context, cfg streams.ConsumerConfig, h streams.Handler) error
	ResolveMatch(ctx context.Context, to schemas.WorkerRef, job int64, res schemas.MatchResolved) error
	GetBlob(ctx context.Context, bucket, key string) ([]byte, error)
	Append(ctx context.Context, job int64, p schemas.Payload) (uint64, error)
	Waiting(ctx context.Context, stream, durable string) (int, error)
}

// Pool is the matchers of one process.
type Pool struct {
	cfg Config
	bus Bus
	log *slog.Logger

	needles *needleCache
	loading singleflight.Group
	costs   *costs
}

// New returns a matcher pool.
func New(cfg Config, bus Bus, log *slog.Logger) *Pool {
	cfg = cfg.withDefaults()
	return &Pool{cfg: cfg, bus: bus, log: log, needles: newNeedleCache(cfg.NeedleCacheBytes), costs: newCosts()}
}

// Durable is the one consumer all matchers of all processes share; the
// server creates it (streams.MatchersConsumer).
const Durable = streams.DurableMatchers

// Run matches requests with cfg.Workers goroutines until ctx ends.
func (p *Pool) Run(ctx context.Context) error {
	needle.HoldFreedMemory()
	needle.LimitThreads(runtime.GOMAXPROCS(0))
	needle.KeepSpectra(int64(p.cfg.SpectraMiB) << 20)
	defer p.needles.close()
	var wg sync.WaitGroup
	errs := make(chan error, p.cfg.Workers)
	for range p.cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- p.bus.Consume(ctx, streams.MatchersConsumer, p.handle)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (p *Pool) handle(ctx context.Context, ev schemas.Event, pl schemas.Payload, _ streams.Delivery) error {
	req, ok := pl.(*schemas.MatchRequested)
	if !ok {
		return fmt.Errorf("%w: %s on the match queue", streams.ErrGiveUp, pl.Kind())
	}
	if req.Part == nil && !p.cfg.NoSplit {
		req = p.split(ctx, ev.Job, req)
	}
	res := p.Match(ctx, req)
	res.Part = req.Part
	// An answer found is sent even when the pool is stopping.
	sendCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	return p.bus.ResolveMatch(sendCtx, req.ReplyTo, ev.Job, res)
}

// Match evaluates one request. Problems with the request itself (a screen
// that is not a PNG, a needle that cannot be loaded) are answered in
// MatchResolved.Error, so the job ends with the reason.
func (p *Pool) Match(ctx context.Context, req *schemas.MatchRequested) (res schemas.MatchResolved) {
	start := time.Now()
	res = schemas.MatchResolved{ID: req.ID, Matcher: p.cfg.Name}
	defer func() { res.Micros = time.Since(start).Microseconds() }()
	needles, used, err := p.load(ctx, req.Needles)
	defer p.needles.release(used)
	if err != nil {
		res.Error = err.Error()
		return res
	}
	decoding := time.Now()
	screen, err := needle.DecodeScreen(req.Screen)
	if err != nil {
		res.Error = fmt.Sprintf("screen: %v", err)
		return res
	}
	defer screen.Close()
	searching := time.Now()
	best, all := needle.Search(screen, needles, req.Threshold, req.Ratio)
	p.costs.observe(req.Ratio, searching.Sub(decoding), time.Since(searching), matchAreas(needles))
	res.Matched = best != nil
	for _, c := range all[:min(len(all), p.cfg.MaxCandidates)] {
		res.Candidates = append(res.Candidates, candidate(c))
	}
	// The first candidate is the found needle (best is &all[0]), or else
	// the closest.
	if len(res.Candidates) > 0 {
		c := res.Candidates[0]
		res.Best = &c
	}
	return res
}

func candidate(c needle.Candidate) schemas.CandidateMatch {
	out := schemas.CandidateMatch{Needle: c.Needle, OK: c.OK, Error: c.Error, Workaround: c.Workaround}
	for _, a := range c.Areas {
		out.Areas = append(out.Areas, schemas.AreaMatch{X: a.X, Y: a.Y, Width: a.Width, Height: a.Height, Similarity: a.Similarity, OK: a.OK})
	}
	return out
}

// matchAreas is how many area searches looking for needles takes.
func matchAreas(needles []*needle.Needle) int {
	areas := 0
	for _, n := range needles {
		areas += n.MatchAreas()
	}
	return areas
}

// load returns the prepared needles of a request, in use until released.
func (p *Pool) load(ctx context.Context, refs []schemas.NeedleRef) ([]*needle.Needle, []*cachedNeedle, error) {
	needles := make([]*needle.Needle, 0, len(refs))
	used := make([]*cachedNeedle, 0, len(refs))
	for _, ref := range refs {
		cn, err := p.needle(ctx, ref)
		if err != nil {
			return nil, used, err
		}
		needles, used = append(needles, cn.n), append(used, cn)
	}
	return needles, used, nil
}

// needle returns the prepared needle for a reference, in use until
// released, loading it from the blob store once however many requests
// ask for it at once.
func (p *Pool) needle(ctx context.Context, ref schemas.NeedleRef) (*cachedNeedle, error) {
	for {
		if cn, ok := p.needles.get(ref.Hash); ok {
			return cn, nil
		}
		// Loaded into the cache once for all who ask at the same time;
		// evicted again before this one got it, it is loaded again.
		if _, err, _ := p.loading.Do(ref.Hash, func() (any, error) { return nil, p.loadNeedle(ctx, ref) }); err != nil {
			return nil, err
		}
	}
}

// loadNeedle reads a needle from the blob store, checks it is what its
// hash says, and adds it prepared to the cache.
func (p *Pool) loadNeedle(ctx context.Context, ref schemas.NeedleRef) error {
	jsonKey, pngKey := streams.NeedleBlobKeys(ref.Hash)
	js, err := p.bus.GetBlob(ctx, streams.BucketNeedles, jsonKey)
	if err != nil {
		return fmt.Errorf("needle %s: %w", ref.Name, err)
	}
	png, err := p.bus.GetBlob(ctx, streams.BucketNeedles, pngKey)
	if err != nil {
		return fmt.Errorf("needle %s: %w", ref.Name, err)
	}
	// Any worker may store needles: one is used only if it is what its
	// name, the hash of its content, says.
	sum := sha256.New()
	sum.Write(js)
	sum.Write(png)
	if got := hex.EncodeToString(sum.Sum(nil)); got != ref.Hash {
		return fmt.Errorf("needle %s: the stored files hash to %s, not to their name %s: refusing them", ref.Name, got, ref.Hash)
	}
	spec, err := schemas.ParseNeedle(ref.Name, js)
	if err != nil {
		return err
	}
	n, err := needle.Prepare(spec, png)
	if err != nil {
		return err
	}
	p.needles.add(ref.Hash, n)
	return nil
}

// NeedleCache says how many prepared needles the pool keeps, and their
// pixels' bytes.
func (p *Pool) NeedleCache() (needles int, bytes int64) { return p.needles.stats() }

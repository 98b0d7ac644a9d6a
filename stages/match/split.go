package match

import (
	"context"
	"slices"
	"sync"
	"time"

	"jetqa/schemas"
	"jetqa/stages/match/needle"
	"jetqa/streams"
)

// partOverhead is what a part costs besides decoding the screen again:
// publishing it with its screen, and its answer's trip back.
const partOverhead = 2 * time.Millisecond

// split spreads a request with many candidates over idle matchers: when
// searching all its needles would take several times what another matcher
// needs to start on a part (decoding the screen and the trips through
// JetStream), and matchers are waiting for work, it publishes parts of the
// request to the pool and returns the part this matcher keeps. Each part
// is answered on its own; the requester merges the answers
// (schemas.MergeMatchParts). A request that cannot be loaded is not split:
// Match reports why. When a part cannot be published the request is kept
// whole.
func (p *Pool) split(ctx context.Context, job int64, req *schemas.MatchRequested) *schemas.MatchRequested {
	loaded, used, err := p.load(ctx, req.Needles)
	defer p.needles.release(used)
	if err != nil || len(loaded) < 2 {
		return req
	}
	areas := matchAreas(loaded)
	perArea, decode := p.costs.estimate(req.Ratio)
	work := time.Duration(areas) * perArea
	parts := min(len(loaded), int(work/(decode+partOverhead)))
	if parts < 2 {
		return req
	}
	idle, err := p.bus.Waiting(ctx, streams.StreamMatchRequests, Durable)
	if err != nil {
		p.log.Warn("cannot tell how many matchers are idle; not splitting", "err", err)
		return req
	}
	if parts = min(parts, idle+1); parts < 2 {
		return req
	}

	split := make([]schemas.MatchRequested, parts)
	for i, group := range balance(loaded, parts) {
		split[i] = *req
		split[i].Needles = make([]schemas.NeedleRef, 0, len(group))
		for _, j := range group {
			split[i].Needles = append(split[i].Needles, req.Needles[j])
		}
		split[i].Part = &schemas.MatchPart{Index: i, Count: parts, Candidates: p.cfg.MaxCandidates}
	}
	for i := 1; i < parts; i++ {
		if _, err := p.bus.Append(ctx, job, split[i]); err != nil {
			// This matcher answers the whole request then: the requester
			// takes a whole answer as final and drops the parts that were
			// published.
			p.log.Warn("cannot publish part of a match request; matching it whole", "id", req.ID, "part", i, "err", err)
			return req
		}
	}
	p.log.Debug("split match request", "id", req.ID, "parts", parts, "needles", len(loaded), "areas", areas, "estimate", work, "idle", idle)
	return &split[0]
}

// balance deals needles (by index) into n groups of about equal areas,
// largest first, each group in the request's order.
func balance(needles []*needle.Needle, n int) [][]int {
	order := make([]int, len(needles))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return needles[b].MatchAreas() - needles[a].MatchAreas() })
	groups := make([][]int, n)
	load := make([]int, n)
	for _, i := range order {
		g := 0
		for j := range load {
			if load[j] < load[g] || load[j] == load[g] && len(groups[j]) < len(groups[g]) {
				g = j
			}
		}
		groups[g] = append(groups[g], i)
		load[g] += needles[i].MatchAreas()
	}
	for _, g := range groups {
		slices.Sort(g)
	}
	return groups
}

// costs is this process's running estimate of what matching takes, from
// the requests it has matched: the search of one area near its place
// (ratio < 0.5) and on the whole screen, and the decoding of a screen.
type costs struct {
	mu      sync.Mutex
	perArea [2]time.Duration
	decode  time.Duration
}

// newCosts starts from what a 1024x768 screen costs on one core of a
// small machine (BenchmarkAgainstTinycv's desktops), until the process
// has measured its own.
func newCosts() *costs {
	return &costs{perArea: [2]time.Duration{time.Millisecond, 20 * time.Millisecond}, decode: time.Millisecond}
}

func ratioClass(ratio float64) int {
	if ratio < 0.5 {
		return 0
	}
	return 1
}

// observe folds one request's times into the estimates, a quarter each.
func (c *costs) observe(ratio float64, decode, search time.Duration, areas int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.decode += (decode - c.decode) / 4
	if areas > 0 {
		k := ratioClass(ratio)
		c.perArea[k] += (search/time.Duration(areas) - c.perArea[k]) / 4
	}
}

func (c *costs) estimate(ratio float64) (perArea, decode time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.perArea[ratioClass(ratio)], c.decode
}

package boot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// remoteMatcher sends match requests to the matcher pool's work queue and
// waits for the answers on the worker instance's own subject. The boot
// stage never runs OpenCV itself.
type remoteMatcher struct {
	bus     Bus
	worker  schemas.WorkerRef
	job     int64
	commit  string // of the needles
	mu      sync.Mutex
	waiting map[string]*pendingMatch
	lastErr error // of the last watch that failed
}

// pendingMatch is a request waiting for its answer, or for the answers to
// all its parts when a matcher split it.
type pendingMatch struct {
	answer chan schemas.MatchResolved
	// parts are the answers to the parts of a split, by the split's part
	// count and the part's index: a request split again after a retry may
	// be cut differently, and only parts of one split are merged.
	parts map[int]map[int]schemas.MatchResolved
}

// startMatcher begins following the worker's answer subject. Answers to
// requests sent after it returns are never missed: the watch starts at
// the stream's current end.
func startMatcher(ctx context.Context, bus Bus, worker schemas.WorkerRef, job int64, needlesCommit string) (*remoteMatcher, error) {
	last, err := bus.LastSequence(ctx, streams.StreamMatchResults)
	if err != nil {
		return nil, err
	}
	m := &remoteMatcher{bus: bus, worker: worker, job: job, commit: needlesCommit, waiting: map[string]*pendingMatch{}}
	go m.follow(ctx, last+1)
	return m, nil
}

// follow hands each answer from seq on to its request until ctx ends. A
// watch that fails (the server or its NATS node is away) is started
// again where it stopped, a second later: a request waits for its answer
// as long as its own timeout allows, however often the link goes.
func (m *remoteMatcher) follow(ctx context.Context, seq uint64) {
	for {
		err := m.bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamMatchResults, Filters: []string{streams.MatchResolvedFor(m.worker)}, From: seq},
			func(_ schemas.Event, p schemas.Payload, d streams.Delivery) error {
				seq = d.Sequence + 1
				if res, ok := p.(*schemas.MatchResolved); ok {
					m.answered(*res)
				}
				return nil
			})
		if ctx.Err() != nil {
			return
		}
		m.mu.Lock()
		m.lastErr = err
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// match asks the pool and waits for its answer.
func (m *remoteMatcher) match(ctx context.Context, screen []byte, tags []string, needles []schemas.NeedleRef, ratio float64) (schemas.MatchResolved, error) {
	id := newID()
	ch := make(chan schemas.MatchResolved, 1)
	m.mu.Lock()
	m.waiting[id] = &pendingMatch{answer: ch, parts: map[int]map[int]schemas.MatchResolved{}}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.waiting, id)
		m.mu.Unlock()
	}()
	req := schemas.MatchRequested{ID: id, ReplyTo: m.worker, Tags: tags, Screen: screen, Needles: needles, NeedlesCommit: m.commit, Ratio: ratio}
	if _, err := m.bus.Append(ctx, m.job, req); err != nil {
		return schemas.MatchResolved{}, fmt.Errorf("send match request: %w", err)
	}
	select {
	case res := <-ch:
		return res, nil
	case <-ctx.Done():
		m.mu.Lock()
		lost := m.lastErr
		m.mu.Unlock()
		if lost != nil {
			return schemas.MatchResolved{}, fmt.Errorf("no answer from the matcher pool (is a matcher running? following the answers last failed: %v): %w", lost, ctx.Err())
		}
		return schemas.MatchResolved{}, fmt.Errorf("no answer from the matcher pool (is a matcher running?): %w", ctx.Err())
	}
}

// answered hands an answer to its request, once every part of one split
// has come when the request was split. A part answered twice (a matcher
// that retried its split) counts once; a whole answer is final.
func (m *remoteMatcher) answered(res schemas.MatchResolved) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.waiting[res.ID]
	if p == nil {
		return
	}
	if res.Part != nil && res.Part.Count > 1 {
		if res.Part.Index < 0 || res.Part.Index >= res.Part.Count {
			return
		}
		split := p.parts[res.Part.Count]
		if split == nil {
			split = map[int]schemas.MatchResolved{}
			p.parts[res.Part.Count] = split
		}
		split[res.Part.Index] = res
		if len(split) < res.Part.Count {
			return
		}
		all := make([]schemas.MatchResolved, 0, len(split))
		for i := range res.Part.Count {
			all = append(all, split[i])
		}
		res = schemas.MergeMatchParts(all, res.Part.Candidates)
	}
	delete(m.waiting, res.ID)
	p.answer <- res
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

package boot

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"

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
	mu      sync.Mutex
	waiting map[string]chan schemas.MatchResolved
	failed  chan error
}

// startMatcher begins following the worker's answer subject. Answers to
// requests sent after it returns are never missed: the watch starts at
// the stream's current end.
func startMatcher(ctx context.Context, bus Bus, worker schemas.WorkerRef, job int64) (*remoteMatcher, error) {
	last, err := bus.LastSequence(ctx, streams.StreamMatchResults)
	if err != nil {
		return nil, err
	}
	m := &remoteMatcher{bus: bus, worker: worker, job: job, waiting: map[string]chan schemas.MatchResolved{}, failed: make(chan error, 1)}
	go func() {
		err := bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamMatchResults, Filters: []string{streams.MatchResolvedFor(worker)}, From: last + 1},
			func(_ schemas.Event, p schemas.Payload, _ streams.Delivery) error {
				res, ok := p.(*schemas.MatchResolved)
				if !ok {
					return nil
				}
				m.mu.Lock()
				ch := m.waiting[res.ID]
				delete(m.waiting, res.ID)
				m.mu.Unlock()
				if ch != nil {
					ch <- *res
				}
				return nil
			})
		if err != nil && ctx.Err() == nil {
			m.failed <- err
		}
	}()
	return m, nil
}

// match asks the pool and waits for its answer.
func (m *remoteMatcher) match(ctx context.Context, screen []byte, tags []string, needles []schemas.NeedleRef, ratio float64) (schemas.MatchResolved, error) {
	id := newID()
	ch := make(chan schemas.MatchResolved, 1)
	m.mu.Lock()
	m.waiting[id] = ch
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.waiting, id)
		m.mu.Unlock()
	}()
	req := schemas.MatchRequested{ID: id, ReplyTo: m.worker, Tags: tags, Screen: screen, Needles: needles, Ratio: ratio}
	if _, err := m.bus.Append(ctx, m.job, req); err != nil {
		return schemas.MatchResolved{}, fmt.Errorf("send match request: %w", err)
	}
	select {
	case res := <-ch:
		return res, nil
	case err := <-m.failed:
		return schemas.MatchResolved{}, fmt.Errorf("waiting for the matcher pool: %w", err)
	case <-ctx.Done():
		return schemas.MatchResolved{}, fmt.Errorf("no answer from the matcher pool (is a matcher running?): %w", ctx.Err())
	}
}

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

package streams

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// BucketJobViews holds the API's read model: one JSON view per job, keyed
// by job id, derived from the job stream and rebuildable from it at any time.
const BucketJobViews = "jetqa-jobviews"

// ErrViewConflict is returned by PutView when the view changed since it was
// read: read it again and redo the update.
var ErrViewConflict = errors.New("view changed meanwhile")

func (b *Bus) views(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := b.JS.KeyValue(ctx, BucketJobViews)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", BucketJobViews, err)
	}
	return kv, nil
}

// GetView reads a job's view and its revision; a job without one gives
// nil data and revision 0.
func (b *Bus) GetView(ctx context.Context, job int64) ([]byte, uint64, error) {
	kv, err := b.views(ctx)
	if err != nil {
		return nil, 0, err
	}
	e, err := kv.Get(ctx, strconv.FormatInt(job, 10))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, 0, nil
	case err != nil:
		return nil, 0, fmt.Errorf("view of job %d: %w", job, err)
	}
	return e.Value(), e.Revision(), nil
}

// PutView writes a job's view if it is still at revision rev (0: if it has
// none yet).
func (b *Bus) PutView(ctx context.Context, job int64, data []byte, rev uint64) error {
	kv, err := b.views(ctx)
	if err != nil {
		return err
	}
	key := strconv.FormatInt(job, 10)
	if rev == 0 {
		_, err = kv.Create(ctx, key, data)
	} else {
		_, err = kv.Update(ctx, key, data, rev)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) || isWrongSequence(err) {
		return fmt.Errorf("view of job %d: %w", job, ErrViewConflict)
	}
	if err != nil {
		return fmt.Errorf("view of job %d: %w", job, err)
	}
	return nil
}

// DeleteView removes a job's view.
func (b *Bus) DeleteView(ctx context.Context, job int64) error {
	kv, err := b.views(ctx)
	if err != nil {
		return err
	}
	if err := kv.Delete(ctx, strconv.FormatInt(job, 10)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("view of job %d: %w", job, err)
	}
	return nil
}

// FollowViews calls fn with every job's current view, then ready once, then
// fn with every later change (data nil when a view was deleted), until ctx
// ends.
func (b *Bus) FollowViews(ctx context.Context, fn func(job int64, data []byte), ready func()) error {
	kv, err := b.views(ctx)
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch %s: %w", BucketJobViews, err)
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return ctx.Err()
			}
			if e == nil {
				ready()
				continue
			}
			job, err := strconv.ParseInt(e.Key(), 10, 64)
			if err != nil {
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				fn(job, nil)
				continue
			}
			fn(job, e.Value())
		}
	}
}

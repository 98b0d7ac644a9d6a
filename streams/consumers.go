package streams

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Result consumers are durable consumers of finished jobs on the job
// stream, one per name: jetqa.job.<id>.finished, in the order jobs
// finished. The server (`jetqa admin consumer add`) creates one with its
// credentials; whoever holds them binds to it, so a consumer stopped for a
// day goes on where it was and misses nothing.

// ResultsDurable is the durable consumer of result consumer name.
func ResultsDurable(name string) string { return "results-" + Token(name) }

// ResultsConfig is how result consumer name reads: one job at a time, in
// order, for as long as its handler keeps trying.
func ResultsConfig(name string) ConsumerConfig {
	return ConsumerConfig{
		Stream:  StreamJobs,
		Durable: ResultsDurable(name),
		Filters: []string{JobEvents("finished")},
		AckWait: time.Minute,
		// A handler retries with back-off itself (a webhook down for a
		// day); a message comes again only after a stop or a crash.
		MaxDeliver: 1 << 30,
	}
}

// CreateResultsConsumer creates result consumer name's durable, starting
// with the jobs that finish from now on, or with every finished job.
func (b *Bus) CreateResultsConsumer(ctx context.Context, name string, fromStart bool) error {
	cfg := ResultsConfig(name)
	cfg.DeliverNew = !fromStart
	if _, err := b.JS.Consumer(ctx, cfg.Stream, cfg.Durable); err == nil {
		return fmt.Errorf("result consumer %q exists: remove it first (`jetqa admin consumer revoke %s`)", name, name)
	}
	_, err := b.createConsumer(ctx, cfg.withDefaults())
	return err
}

// DeleteResultsConsumer removes result consumer name's durable.
func (b *Bus) DeleteResultsConsumer(ctx context.Context, name string) error {
	err := b.JS.DeleteConsumer(ctx, StreamJobs, ResultsDurable(name))
	if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("result consumer %q: %w", name, err)
	}
	return nil
}

package streams

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// LeaseTTL is how long a lease outlives its last renewal: the time a
// standby waits before it takes over from a holder that died.
const LeaseTTL = 10 * time.Second

// Lease makes one of several processes the active one. The holder renews
// it well within LeaseTTL; if the holder dies the entry expires on the
// server and another process takes it.
type Lease struct {
	bus    *Bus
	name   string
	holder string
	rev    uint64
}

// Lease returns the lease name, to be held by holder.
func (b *Bus) Lease(name, holder string) *Lease {
	return &Lease{bus: b, name: name, holder: holder}
}

// Hold takes the lease when it is free and renews it when this holder has
// it. It reports whether this holder has the lease now.
func (l *Lease) Hold(ctx context.Context) (bool, error) {
	kv, err := l.bus.JS.KeyValue(ctx, BucketLeases)
	if err != nil {
		return false, fmt.Errorf("lease %s: %w", l.name, err)
	}
	if l.rev != 0 {
		rev, err := kv.Update(ctx, l.name, []byte(l.holder), l.rev)
		if err == nil {
			l.rev = rev
			return true, nil
		}
		l.rev = 0
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !isWrongSequence(err) && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return false, fmt.Errorf("renew lease %s: %w", l.name, err)
		}
	}
	rev, err := kv.Create(ctx, l.name, []byte(l.holder))
	switch {
	case err == nil:
		l.rev = rev
		return true, nil
	case errors.Is(err, jetstream.ErrKeyExists) || isWrongSequence(err):
		return false, nil
	}
	return false, fmt.Errorf("take lease %s: %w", l.name, err)
}

// Release gives the lease up at once, so a standby need not wait for it to
// expire.
func (l *Lease) Release(ctx context.Context) {
	if l.rev == 0 {
		return
	}
	if kv, err := l.bus.JS.KeyValue(ctx, BucketLeases); err == nil {
		_ = kv.Delete(ctx, l.name, jetstream.LastRevision(l.rev))
	}
	l.rev = 0
}

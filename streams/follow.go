package streams

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"jetqa/schemas"
)

// A worker reads the job stream without consumers of its own: creating a
// consumer on JETQA_JOBS is the server's (a consumer can be changed by
// whoever may create one), so what a worker follows it reads by direct
// get, woken by the events' publication.

// followSweep is how often a follower reads again without being woken:
// the wake-ups are not stored, and one sent while the connection was down
// is lost.
const followSweep = 5 * time.Second

// FollowJob calls fn with each event of job stored after sequence after,
// in order, until ctx ends or fn returns an error (ErrStopWatch ends it
// cleanly). An unreadable event is logged and skipped.
func (b *Bus) FollowJob(ctx context.Context, job int64, after uint64, fn func(ev schemas.Event, p schemas.Payload, d Delivery) error) error {
	wake := make(chan struct{}, 1)
	filter := JobSubject(job) + ".>"
	sub, err := b.NC.Subscribe(filter, func(*nats.Msg) {
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	if err != nil {
		return fmt.Errorf("follow job %d: %w", job, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	s, err := b.jobsStream(ctx)
	if err != nil {
		return err
	}
	sweep := time.NewTicker(followSweep)
	defer sweep.Stop()
	for {
		for {
			raw, err := s.GetMsg(ctx, after+1, jetstream.WithGetMsgSubject(filter))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				break
			}
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				b.log.Warn("follow job: read failed, trying again", "job", job, "err", err)
				break
			}
			after = raw.Sequence
			ev, p, err := decode(raw.Header.Get(HeaderKind), raw.Data)
			if err == nil {
				err = onItsSubject(raw.Subject, ev, p)
			}
			if err != nil {
				b.log.Warn("skipping unreadable event", "subject", raw.Subject, "seq", raw.Sequence, "err", err)
				continue
			}
			if err := fn(ev, p, Delivery{Subject: raw.Subject, Sequence: raw.Sequence}); err != nil {
				if errors.Is(err, ErrStopWatch) {
					return nil
				}
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-wake:
		case <-sweep.C:
		}
	}
}

// OnJobEvent calls fn when an event of job with the given token
// ("finished", …) is published from now on, until ctx ends. It is a live
// signal only: an event published while the connection is down is not
// seen, so fn's caller must also look for itself now and then. One job's
// subject, not every job's: a fleet of hosts each following every job's end
// would be sent hosts × jobs messages.
func (b *Bus) OnJobEvent(ctx context.Context, job int64, token string, fn func()) error {
	sub, err := b.NC.Subscribe(JobSubject(job)+"."+token, func(*nats.Msg) { fn() })
	if err != nil {
		return fmt.Errorf("follow job %d's %s events: %w", job, token, err)
	}
	<-ctx.Done()
	_ = sub.Unsubscribe()
	return nil
}

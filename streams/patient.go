package streams

import (
	"context"
	"time"
)

// patience is how long a worker's bus keeps asking again for a read that
// gets no answer: as long as it keeps sending a report (reportWait).
const patience = reportWait

// patiently runs read, a read that may be repeated, until it is answered.
// On a worker's bus a read that gets no answer (the server or its NATS
// node is away: a restart, a failover, a cut link) is asked again, each
// try bounded to 10 s, for up to patience: a job outlives the server's
// outage instead of ending on its first unanswered read. Elsewhere it
// runs once.
func (b *Bus) patiently(ctx context.Context, what string, read func(ctx context.Context) error) error {
	if b.worker == nil {
		return read(ctx)
	}
	giveUp := time.Now().Add(patience)
	for {
		try, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := read(try)
		cancel()
		if err == nil || !unanswered(err) || ctx.Err() != nil || time.Now().After(giveUp) {
			return err
		}
		b.log.Warn("jetqa server did not answer, asking again", "read", what, "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}

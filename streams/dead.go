package streams

import (
	"context"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"jetqa/schemas"
)

// Headers of a dead letter.
const (
	headerDeadSubject = "Jetqa-Subject"
	headerDeadReason  = "Jetqa-Reason"
	headerDeadWorker  = "Jetqa-Worker"
)

// DeadLetter is a message a stage gave up on, kept in JETQA_DEAD.
type DeadLetter struct {
	// Durable is the consumer that gave up, as its subject token;
	// "authority" for a worker's report the server refused.
	Durable string
	// Subject is where the message was, Job the job it was about (0: none).
	Subject string
	Job     int64
	Reason  string
	// Worker is who sent a refused report.
	Worker string
}

// StopsJobOf says whether the dead letter leaves a job assigned to w with
// no way on: a stage of w's own host gave up on one of the job's events.
// A dead letter of anybody else (another host, a result consumer, a
// refused report) never ends a job.
func (d DeadLetter) StopsJobOf(w schemas.WorkerRef) bool {
	if d.Job == 0 {
		return false
	}
	switch d.Durable {
	case Token(FetchDurable(w.Host)), Token(BootDurable(w)), Token(UploadDurable(w.Host)):
		return true
	}
	return false
}

// Stage names the stage that gave up, for a reason a user reads.
func (d DeadLetter) Stage() string {
	stage, _, _ := strings.Cut(d.Durable, "-")
	return stage
}

// WatchDeadLetters replays the dead letters and follows new ones, as Watch.
func (b *Bus) WatchDeadLetters(ctx context.Context, fn func(DeadLetter, Delivery) error) error {
	return b.watchMsgs(ctx, WatchConfig{Stream: StreamDead, Filters: []string{subjectDead + ".>"}}, func(msg jetstream.Msg, meta *jetstream.MsgMetadata) error {
		d := DeadLetter{
			Durable: strings.TrimPrefix(msg.Subject(), subjectDead+"."),
			Subject: msg.Headers().Get(headerDeadSubject),
			Reason:  msg.Headers().Get(headerDeadReason),
			Worker:  msg.Headers().Get(headerDeadWorker),
		}
		if rest, ok := strings.CutPrefix(d.Subject, "jetqa.job."); ok {
			id, _, _ := strings.Cut(rest, ".")
			d.Job, _ = strconv.ParseInt(id, 10, 64)
		}
		return fn(d, Delivery{Subject: msg.Subject(), Sequence: meta.Sequence.Stream, Pending: meta.NumPending, Stored: meta.Timestamp})
	})
}

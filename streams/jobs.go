package streams

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"jetqa/schemas"
)

// Headers of JetStream's optimistic concurrency control.
const (
	headerExpectedLastSubjectSeq        = "Nats-Expected-Last-Subject-Sequence"
	headerExpectedLastSubjectSeqSubject = "Nats-Expected-Last-Subject-Sequence-Subject"
)

// maxConflicts bounds how often one append re-reads and retries after other
// writers got in first.
const maxConflicts = 50

// A publish to the job stream is tried publishTries times, each waiting
// publishTryTimeout for the stream's answer: long enough for a loaded
// leader, short enough that a leader election costs one try.
const (
	publishTries      = 8
	publishTryTimeout = 5 * time.Second
)

// jobCache keeps, per job, the aggregate as of the last event this process
// read or wrote, so most appends need no read at all. It keeps jobs that
// are not final, and at most maxCachedJobs: an append to a job no longer
// kept reads the job's events first. Correctness never depends on it: the
// stream refuses an append decided on a stale aggregate.
type jobCache struct {
	mu   sync.Mutex
	jobs map[int64]*cachedJob
}

// maxCachedJobs bounds the jobs a process keeps aggregates of.
var maxCachedJobs = 4096

type cachedJob struct {
	mu  sync.Mutex // serializes this process's appends to one job
	agg *schemas.JobAggregate
}

func (c *jobCache) entry(job int64) *cachedJob {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.jobs == nil {
		c.jobs = map[int64]*cachedJob{}
	}
	e := c.jobs[job]
	if e == nil {
		for id := range c.jobs {
			if len(c.jobs) < maxCachedJobs {
				break
			}
			delete(c.jobs, id) // any: an append in work keeps its entry
		}
		e = &cachedJob{agg: &schemas.JobAggregate{ID: job}}
		c.jobs[job] = e
	}
	return e
}

func (c *jobCache) forget(job int64) {
	c.mu.Lock()
	delete(c.jobs, job)
	c.mu.Unlock()
}

// appendJobEvent appends an event to a job's history only if the job's
// aggregate accepts it, and only if no other writer appended to the job
// since the aggregate was read (expected last sequence on the job's
// subjects). A conflict re-reads the newer events and decides again; it
// never overwrites. The message id recognizes a resent publish whose first
// copy was stored (see publishDecision).
func (b *Bus) appendJobEvent(ctx context.Context, job int64, subj string, p schemas.Payload, o appendOpts) (uint64, error) {
	e := b.jobs.entry(job)
	e.mu.Lock()
	defer e.mu.Unlock()
	// The cached aggregate is usually current (this process wrote the last
	// event): decide on it and publish. Only a refusal or a conflict costs a
	// read of the newer events, after which the decision is made again.
	source := b.source
	if o.source != "" {
		source = o.source
	}
	decide := func() error {
		if o.check != nil {
			if err := o.check(e.agg); err != nil {
				return err
			}
		}
		return e.agg.Check(p)
	}
	fresh := false
	for range maxConflicts {
		if err := decide(); err != nil {
			if fresh {
				if seq, ok := b.storedWithID(ctx, job, o.msgID); ok {
					// A report sent again after its answer was lost.
					return seq, nil
				}
				return 0, err
			}
			if err := b.catchUp(ctx, job, e.agg); err != nil {
				return 0, err
			}
			fresh = true
			continue
		}
		ev, msg, err := b.eventMsgFrom(source, subj, job, p)
		if err != nil {
			return 0, err
		}
		msg.Header.Set(headerExpectedLastSubjectSeq, strconv.FormatUint(e.agg.Seq, 10))
		msg.Header.Set(headerExpectedLastSubjectSeqSubject, JobSubject(job)+".>")
		id := o.msgID
		if id == "" {
			id = appendID(job, e.agg.Seq, ev)
		}
		msg.Header.Set(nats.MsgIdHdr, id)
		seq, dup, err := b.publishDecision(ctx, job, e.agg.Seq, msg)
		if errors.Is(err, errOvertaken) {
			// Someone else appended first: catch up and decide again.
			if err := b.catchUp(ctx, job, e.agg); err != nil {
				return 0, err
			}
			fresh = true
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("append %s to job %d: %w", ev.Kind, job, err)
		}
		if dup {
			// A report sent again after its answer was lost: the stream kept
			// the first copy, which this process may not have folded.
			b.forgetJob(job)
			return seq, nil
		}
		if err := e.agg.Apply(seq, ev, p); err != nil {
			// Checked above; a failure here is a bug in the aggregate.
			b.forgetJob(job)
			return seq, fmt.Errorf("job %d: stored %s but cannot fold it: %w", job, ev.Kind, err)
		}
		if e.agg.Final() {
			// Its later events (deleted, files expired, restarted) are rare.
			b.forgetJob(job)
		}
		return seq, nil
	}
	return 0, fmt.Errorf("append to job %d: still conflicting after %d tries", job, maxConflicts)
}

func (b *Bus) forgetJob(job int64) { b.jobs.forget(job) }

// appendOpts are what the authority adds to an append it makes on a
// worker's behalf.
type appendOpts struct {
	source string // stamped as the event's source instead of the bus's
	msgID  string // the report's id: a report sent twice is stored once
	// check decides, on the same aggregate and under the same lock as the
	// transition check, whether the sender may say this about the job.
	check func(*schemas.JobAggregate) error
}

// errOvertaken says another writer appended to the job first.
var errOvertaken = errors.New("overtaken by another writer")

// publishDecision publishes one append. A publish whose acknowledgement got
// lost is sent again unchanged; if the first one was stored, the stream
// refuses the copy (its expected sequence no longer holds) and the stored
// message after the expected sequence carries this message's id: that is
// success, not a conflict.
//
// dup says the stream already held a message with this one's id (JetStream
// de-duplication): the first copy's sequence is returned.
func (b *Bus) publishDecision(ctx context.Context, job int64, after uint64, msg *nats.Msg) (seq uint64, dup bool, err error) {
	var ack *jetstream.PubAck
	// Each try waits a bounded time: a publish that reached a stream leader
	// as it went away is never answered, and the caller's deadline may be
	// minutes off. The message id makes a try sent twice stored once.
	for range publishTries {
		try, cancel := context.WithTimeout(ctx, publishTryTimeout)
		ack, err = b.JS.PublishMsg(try, msg, jetstream.WithRetryAttempts(8))
		cancel()
		if ctx.Err() != nil || !unanswered(err) {
			break
		}
	}
	if err == nil {
		return ack.Sequence, ack.Duplicate, nil
	}
	if !isWrongSequence(err) {
		return 0, false, err
	}
	s, serr := b.jobsStream(ctx)
	if serr != nil {
		return 0, false, serr
	}
	next, gerr := s.GetMsg(ctx, after+1, jetstream.WithGetMsgSubject(JobSubject(job)+".>"))
	if gerr == nil && next.Header.Get(nats.MsgIdHdr) == msg.Header.Get(nats.MsgIdHdr) {
		return next.Sequence, false, nil
	}
	return 0, false, errOvertaken
}

// unanswered reports a publish that got no answer from the stream, which a
// leader election or a reconnection causes: worth another try.
func unanswered(err error) bool {
	return errors.Is(err, nats.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse)
}

// appendID identifies one decision: the same payload appended on top of the
// same history. A publish retried after a lost acknowledgement is stored once.
func appendID(job int64, after uint64, ev schemas.Event) string {
	h := sha256.New()
	fmt.Fprintf(h, "%d/%d/%s/", job, after, ev.Kind)
	h.Write(ev.Data)
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// storedWithID finds the job's event stored with message id id, if any.
// It reads the job's whole history: only a refused report, rare, asks.
func (b *Bus) storedWithID(ctx context.Context, job int64, id string) (uint64, bool) {
	if id == "" {
		return 0, false
	}
	s, err := b.jobsStream(ctx)
	if err != nil {
		return 0, false
	}
	for seq := uint64(1); ; seq++ {
		raw, err := s.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(JobSubject(job)+".>"))
		if err != nil {
			return 0, false
		}
		if raw.Header.Get(nats.MsgIdHdr) == id {
			return raw.Sequence, true
		}
		seq = raw.Sequence
	}
}

// catchUp folds into agg the job's events stored after agg.Seq.
func (b *Bus) catchUp(ctx context.Context, job int64, agg *schemas.JobAggregate) error {
	s, err := b.jobsStream(ctx)
	if err != nil {
		return err
	}
	filter := JobSubject(job) + ".>"
	for {
		raw, err := s.GetMsg(ctx, agg.Seq+1, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read job %d: %w", job, err)
		}
		ev, p, err := decode(raw.Header.Get(HeaderKind), raw.Data)
		if err == nil {
			err = agg.Apply(raw.Sequence, ev, p)
		}
		if err != nil {
			// A stored event the aggregate cannot fold (written before a rule
			// existed, or by hand): skip it, but never append on top of an
			// older sequence.
			b.log.Warn("job event not folded", "job", job, "seq", raw.Sequence, "err", err)
			agg.Seq = raw.Sequence
		}
	}
}

// LoadJob reads a job's current aggregate from its events.
func (b *Bus) LoadJob(ctx context.Context, job int64) (*schemas.JobAggregate, error) {
	var agg *schemas.JobAggregate
	err := b.patiently(ctx, fmt.Sprintf("job %d", job), func(ctx context.Context) error {
		agg = &schemas.JobAggregate{ID: job}
		return b.catchUp(ctx, job, agg)
	})
	if err != nil {
		return nil, err
	}
	if agg.Seq == 0 {
		return nil, fmt.Errorf("job %d: %w", job, ErrNoJob)
	}
	return agg, nil
}

// LoadJobAt is LoadJob for a handler of the event stored at seq: the job
// as of that event at least. A consumer may deliver an event from a
// replica that stored it before the stream's leader (which LoadJob reads)
// has applied it; read that way, an assignment looks absent and its job
// would be skipped for good. It reads again for a while, then fails, and
// the handler's message is delivered again.
func (b *Bus) LoadJobAt(ctx context.Context, job int64, seq uint64) (*schemas.JobAggregate, error) {
	wait := 10 * time.Millisecond
	for {
		agg, err := b.LoadJob(ctx, job)
		if err != nil && !errors.Is(err, ErrNoJob) {
			return nil, err
		}
		if err == nil && agg.Seq >= seq {
			return agg, nil
		}
		if wait > 2*time.Second {
			return nil, fmt.Errorf("job %d: the stream's leader has not applied event %d yet", job, seq)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// ErrNoJob is returned for a job id that has no events.
var ErrNoJob = errors.New("no such job")

func (b *Bus) jobsStream(ctx context.Context) (jetstream.Stream, error) {
	b.streamMu.Lock()
	defer b.streamMu.Unlock()
	if b.jobsStreamHandle == nil {
		s, err := b.JS.Stream(ctx, StreamJobs)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", StreamJobs, err)
		}
		b.jobsStreamHandle = s
	}
	return b.jobsStreamHandle, nil
}

// Restart clones a finished job: the clone is created first, then the
// original is pointed at it, so no job ever names a clone that does not
// exist. The scheduler holds a clone until its original names it; a clone
// whose original went to another restart meanwhile is ended obsoleted and
// ErrTransition returned. by says who restarted it (a user, or "auto"):
// a user's clone is theirs, an automatic clone keeps the original's owner.
func (b *Bus) Restart(ctx context.Context, agg *schemas.JobAggregate, by string, retry int) (int64, error) {
	clone, err := b.NextJobID(ctx)
	if err != nil {
		return 0, err
	}
	owner := by
	if by == "auto" {
		owner = agg.Owner
	}
	if _, err := b.Append(ctx, clone, schemas.JobCreated{Settings: agg.Settings, CloneOf: agg.ID, Retry: retry, After: agg.After, Owner: owner}); err != nil {
		return 0, fmt.Errorf("clone of job %d: %w", agg.ID, err)
	}
	_, err = b.Append(ctx, agg.ID, schemas.JobRestarted{Clone: clone, By: by})
	if err == nil {
		return clone, nil
	}
	// The clone is held and never runs; end it so it does not wait forever.
	reason := fmt.Sprintf("job %d was not restarted as this job: %v", agg.ID, err)
	if _, ferr := b.Append(context.WithoutCancel(ctx), clone, schemas.JobFinished{Result: schemas.ResultObsoleted, Reason: reason}); ferr != nil {
		b.log.Error("a clone that never runs was not ended", "job", clone, "err", ferr)
	}
	return 0, fmt.Errorf("restart job %d: %w", agg.ID, err)
}

// PurgeJob removes every event of a job from the job stream: the end of
// its retention, once it was deleted.
func (b *Bus) PurgeJob(ctx context.Context, job int64) error {
	s, err := b.jobsStream(ctx)
	if err != nil {
		return err
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSubject(JobSubject(job)+".>")); err != nil {
		return fmt.Errorf("purge job %d: %w", job, err)
	}
	b.forgetJob(job)
	return nil
}

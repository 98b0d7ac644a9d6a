package streams

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"jetqa/schemas"
)

// HeaderKind carries the event kind, so consumers and tools can filter
// without decoding the payload.
const HeaderKind = "Jetqa-Kind"

// Append publishes an event about job (0 for events that are not about a
// job) and returns its stream sequence. It waits for the stream's
// acknowledgement: once Append returns, the fact is stored.
//
// Events of a job are appended only if the job's aggregate accepts them
// (schemas.ErrTransition otherwise), with optimistic concurrency: see
// appendJobEvent.
func (b *Bus) Append(ctx context.Context, job int64, p schemas.Payload) (uint64, error) {
	subj, err := subject(job, p)
	if err != nil {
		return 0, err
	}
	if _, isJobEvent := jobEventTokens[p.Kind()]; isJobEvent {
		if b.worker != nil {
			return b.report(ctx, job, p)
		}
		return b.appendJobEvent(ctx, job, subj, p, appendOpts{})
	}
	return b.publish(ctx, subj, job, p)
}

// eventMsg wraps a payload in an envelope and a message for subj, with the
// kind header every consumer decodes by.
func (b *Bus) eventMsg(subj string, job int64, p schemas.Payload) (schemas.Event, *nats.Msg, error) {
	return b.eventMsgFrom(b.source, subj, job, p)
}

// eventMsgFrom is eventMsg with the source given.
func (b *Bus) eventMsgFrom(source, subj string, job int64, p schemas.Payload) (schemas.Event, *nats.Msg, error) {
	ev, err := schemas.NewEvent(job, source, p)
	if err != nil {
		return ev, nil, err
	}
	data, err := ev.Marshal()
	if err != nil {
		return ev, nil, err
	}
	msg := nats.NewMsg(subj)
	msg.Data = data
	msg.Header.Set(HeaderKind, ev.Kind)
	return ev, msg, nil
}

// publishTry bounds one try of a JetStream publish. Its acknowledgement
// is lost with a server killed before it sent it, and a publish whose
// context has no deadline (a job's) would then wait for good: a worker's
// match request did, until its job's end.
const publishTry = 10 * time.Second

// publish appends an event that is not a job's lifecycle event, sending it
// again while the server does not acknowledge it, for up to reportWait;
// every try has the same message ID, so the stream stores it once.
func (b *Bus) publish(ctx context.Context, subj string, job int64, p schemas.Payload, opts ...jetstream.PublishOpt) (uint64, error) {
	ev, msg, err := b.eventMsg(subj, job, p)
	if err != nil {
		return 0, err
	}
	msg.Header.Set(nats.MsgIdHdr, newReportID())
	var ack *jetstream.PubAck
	// A timeout is an acknowledgement lost; no responders is a stream
	// without a leader, as while a cluster elects a new one after losing a
	// node (a match request failed on it once): both are sent again. No
	// responders where no stream takes the subject does not pass.
	again := func(err error) bool {
		if !unanswered(err) {
			return false
		}
		if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
			lookup, cancel := context.WithTimeout(ctx, publishTry)
			defer cancel()
			if _, err := b.JS.StreamNameBySubject(lookup, subj); errors.Is(err, jetstream.ErrStreamNotFound) {
				return false
			}
		}
		return true
	}
	err = b.untilAnswered(ctx, subj, "jetqa server did not acknowledge, sending again", again, func(try context.Context) (err error) {
		ack, err = b.JS.PublishMsg(try, msg, opts...)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("append %s to %s: %w", ev.Kind, subj, err)
	}
	return ack.Sequence, nil
}

// ResolveMatch answers a match request on the requesting worker's subject.
func (b *Bus) ResolveMatch(ctx context.Context, to schemas.WorkerRef, job int64, res schemas.MatchResolved) error {
	_, err := b.publish(ctx, MatchResolvedFor(to), job, res)
	return err
}

// NextJobID allocates the next integer job id from the counters bucket.
// Concurrent callers never get the same id: the update is a compare-and-set.
func (b *Bus) NextJobID(ctx context.Context) (int64, error) {
	kv, err := b.JS.KeyValue(ctx, BucketCounters)
	if err != nil {
		return 0, fmt.Errorf("counters bucket: %w", err)
	}
	for {
		entry, err := kv.Get(ctx, "job")
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			if _, err := kv.Create(ctx, "job", []byte("1")); err == nil {
				return 1, nil
			} else if !errors.Is(err, jetstream.ErrKeyExists) && !isWrongSequence(err) {
				return 0, fmt.Errorf("allocate job id: %w", err)
			}
		case err != nil:
			return 0, fmt.Errorf("allocate job id: %w", err)
		default:
			last, err := strconv.ParseInt(string(entry.Value()), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("job id counter holds %q: %w", entry.Value(), err)
			}
			next := last + 1
			if _, err := kv.Update(ctx, "job", []byte(strconv.FormatInt(next, 10)), entry.Revision()); err == nil {
				return next, nil
			} else if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) && !isWrongSequence(err) {
				return 0, fmt.Errorf("allocate job id: %w", err)
			}
		}
		if err := ctx.Err(); err != nil {
			return 0, err
		}
	}
}

// isWrongSequence recognizes a failed expected-sequence check. A stream
// with one replica answers 10071 ("wrong last sequence: N"); a replicated
// stream answers 10164 ("wrong last sequence"), without the number.
func isWrongSequence(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// Delivery is what a handler learns about the message besides the event.
type Delivery struct {
	Subject    string
	Sequence   uint64 // stream sequence
	Pending    uint64 // messages after this one the consumer has not delivered yet
	Redelivery uint64 // 0 on first delivery
	// Stored is when the stream stored the event, by the NATS server's
	// clock: judge liveness by it, never by the sender's Event.Time.
	Stored time.Time
}

// Handler processes one event. Returning nil acknowledges it; an error
// wrapping ErrGiveUp dead-letters it; any other error retries it later.
type Handler func(ctx context.Context, ev schemas.Event, p schemas.Payload, d Delivery) error

// ErrGiveUp marks a handler error after which retrying cannot help.
var ErrGiveUp = errors.New("giving up")

// ConsumerConfig describes a durable consumer of a stage.
type ConsumerConfig struct {
	Stream  string
	Durable string
	Filters []string
	// AckWait is how long a message may be worked on without a heartbeat;
	// Consume heartbeats long handlers every third of it.
	AckWait time.Duration
	// MaxDeliver bounds retries; default 5.
	MaxDeliver int
	// DeliverNew starts a new durable at the end of the stream instead of the
	// beginning.
	DeliverNew bool
	// MaxAckPending is how many messages may be in work at once across all
	// processes sharing the durable; default 1 (one job at a time).
	MaxAckPending int
	// AckUnconfirmed acknowledges a handled message without waiting for the
	// server to confirm it: a round trip less per message, for work that
	// may run twice without harm (an ack lost with the connection brings
	// the message back after AckWait).
	AckUnconfirmed bool
	// Replicas is how many copies of the consumer's state the cluster
	// keeps; 0 takes the stream's. A consumer with one replica is no Raft
	// group: what a fleet of worker hosts can afford (docs/scale.md).
	Replicas int
	// ResumeAt is the stream sequence a consumer created again, after its
	// node was lost, starts at; 0 starts at the beginning.
	ResumeAt uint64
	// Unanswered: the worker asks again for a consumer that has stopped
	// answering it.
	Unanswered bool
}

// Consume runs a durable pull consumer, one message at a time, until ctx
// ends. Malformed events and unknown kinds are dead-lettered with a log line.
func (b *Bus) Consume(ctx context.Context, cfg ConsumerConfig, h Handler) error {
	cfg = cfg.withDefaults()
	var done settled
	for {
		var cons jetstream.Consumer
		var err error
		if b.useOnly {
			cons, err = b.bindConsumer(ctx, cfg)
		} else {
			cons, err = b.createConsumer(ctx, cfg)
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if b.worker == nil || !unanswered(err) {
				return err
			}
			// A worker waits for its server however long it is away, as
			// its NATS connection does.
			b.log.Warn("jetqa server did not answer for the consumer; asking again", "durable", cfg.Durable, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(2 * time.Second):
			}
			continue
		}
		cfg.Unanswered = false
		err = b.each(ctx, cons, "consumer "+cfg.Durable, func(msg jetstream.Msg) error {
			done.note(b.handle(ctx, cfg, msg, h))
			return nil
		}, b.consumerLost(cons, &cfg), jetstream.PullMaxMessages(1), jetstream.PullExpiry(b.pullExpiry()))
		if errors.Is(err, context.Canceled) {
			return nil
		}
		if !errors.Is(err, errConsumerLost) {
			return err
		}
		// A worker's consumer has one replica: when its node is gone for
		// good, the server makes it again on another, from where this
		// process got to.
		cfg.ResumeAt = done.resumeAt()
		b.log.Warn("consumer lost with its node; asking for it again", "durable", cfg.Durable, "from sequence", cfg.ResumeAt)
	}
}

// pullExpiry is how long a pull request waits for a message. Workers' idle
// consumers, a few per host, pull and are sent heartbeats at that pace.
func (b *Bus) pullExpiry() time.Duration {
	if b.worker != nil {
		return 20 * time.Second
	}
	return 5 * time.Second
}

// errConsumerLost ends a worker's consumer whose only replica is offline,
// or has not answered for a while.
var errConsumerLost = errors.New("consumer offline")

// consumerLost is asked about each error of a consumer's messages: for a
// worker's consumer missing its heartbeats, is it offline (its node gone)
// or deleted? Then it ends with errConsumerLost. A node killed, not shut
// down, counts as offline only minutes later (nats-server marks a silent
// server gone after 150 s): a consumer that has not answered twice in a
// row, with the connection up, is reported lost too, and the server
// checks for itself before making it again.
func (b *Bus) consumerLost(cons jetstream.Consumer, cfg *ConsumerConfig) func(error) error {
	silent := 0
	return func(err error) error {
		if b.worker == nil || !errors.Is(err, jetstream.ErrNoHeartbeat) && !errors.Is(err, jetstream.ErrConsumerDeleted) {
			return nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = cons.Info(ctx)
		switch {
		case isConsumerOffline(err) || errors.Is(err, jetstream.ErrConsumerNotFound):
			return errConsumerLost
		case err == nil:
			silent = 0
		case b.NC.IsConnected():
			silent++
			b.log.Warn("consumer does not answer", "durable", cfg.Durable, "times", silent, "err", err)
			if silent >= 2 {
				cfg.Unanswered = true
				return errConsumerLost
			}
		}
		return nil
	}
}

// isConsumerOffline says whether err is JetStream's "consumer is offline":
// no server holding a replica of it is up.
func isConsumerOffline(err error) bool {
	var api *jetstream.APIError
	return errors.As(err, &api) && (api.ErrorCode == jsConsumerOffline || api.ErrorCode == jsConsumerOfflineReason)
}

// JetStream's error codes for an offline consumer.
const (
	jsConsumerOffline       jetstream.ErrorCode = 10119
	jsConsumerOfflineReason jetstream.ErrorCode = 10195
)

// settled follows which messages of a consumer this process is done with,
// so that a consumer made again resumes after them: the lowest one left to
// retry, or the one after the last handled.
type settled struct {
	last  uint64
	retry map[uint64]bool
}

func (s *settled) note(seq uint64, retry bool) {
	if seq == 0 {
		return
	}
	s.last = max(s.last, seq)
	if retry {
		if s.retry == nil {
			s.retry = map[uint64]bool{}
		}
		s.retry[seq] = true
	} else {
		delete(s.retry, seq)
	}
}

func (s *settled) resumeAt() uint64 {
	if len(s.retry) > 0 {
		return slices.Min(slices.Collect(maps.Keys(s.retry)))
	}
	if s.last == 0 {
		return 0
	}
	return s.last + 1
}

func (cfg ConsumerConfig) withDefaults() ConsumerConfig {
	if cfg.AckWait == 0 {
		cfg.AckWait = 30 * time.Second
	}
	if cfg.MaxDeliver == 0 {
		cfg.MaxDeliver = 5
	}
	if cfg.MaxAckPending == 0 {
		cfg.MaxAckPending = 1
	}
	return cfg
}

// createConsumer creates or updates a durable consumer.
func (b *Bus) createConsumer(ctx context.Context, cfg ConsumerConfig) (jetstream.Consumer, error) {
	deliver := jetstream.DeliverAllPolicy
	switch {
	case cfg.ResumeAt > 0:
		deliver = jetstream.DeliverByStartSequencePolicy
	case cfg.DeliverNew:
		deliver = jetstream.DeliverNewPolicy
	}
	cons, err := b.JS.CreateOrUpdateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
		Durable:        cfg.Durable,
		FilterSubjects: cfg.Filters,
		AckPolicy:      jetstream.AckExplicitPolicy,
		AckWait:        cfg.AckWait,
		MaxDeliver:     cfg.MaxDeliver,
		MaxAckPending:  cfg.MaxAckPending,
		DeliverPolicy:  deliver,
		OptStartSeq:    cfg.ResumeAt,
		Replicas:       cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, cfg.Stream, err)
	}
	return cons, nil
}

// Waiting is how many pull requests wait on a durable consumer: for a work
// queue consumed one message at a time, how many of its consumers are idle.
func (b *Bus) Waiting(ctx context.Context, stream, durable string) (int, error) {
	cons, err := b.JS.Consumer(ctx, stream, durable)
	if err != nil {
		return 0, fmt.Errorf("consumer %s on %s: %w", durable, stream, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("consumer %s on %s: %w", durable, stream, err)
	}
	return info.NumWaiting, nil
}

// each hands the consumer's messages to fn, one at a time, until ctx ends
// (returning ctx's error) or fn returns an error.
// An error of the messages themselves is logged and waited out, unless
// onErr (if any) turns it into the end.
func (b *Bus) each(ctx context.Context, cons jetstream.Consumer, what string, fn func(jetstream.Msg) error, onErr func(error) error, opts ...jetstream.PullMessagesOpt) error {
	it, err := cons.Messages(opts...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		msg, err := it.Next()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				return ctx.Err()
			}
			b.log.Warn(what, "err", err)
			if onErr != nil {
				if err := onErr(err); err != nil {
					return err
				}
			}
			continue
		}
		if err := fn(msg); err != nil {
			return err
		}
	}
}

// retryDelay spaces the retries of a message whose handler failed: 1 s,
// 5 s, then 30 s (at most the ack wait). It is not the consumer's BackOff:
// the server takes BackOff's first step as the ack wait of every delivery,
// which would redeliver a message still being worked on after 1 s.
func retryDelay(delivery uint64, ackWait time.Duration) time.Duration {
	steps := []time.Duration{time.Second, 5 * time.Second, 30 * time.Second}
	d := steps[min(int(delivery), len(steps))-1]
	return min(d, ackWait)
}

// handle runs h on one message and settles it. It returns the message's
// stream sequence, and whether it is to be delivered again.
func (b *Bus) handle(ctx context.Context, cfg ConsumerConfig, msg jetstream.Msg, h Handler) (seq uint64, retry bool) {
	meta, err := msg.Metadata()
	if err != nil {
		b.log.Error("message without metadata", "durable", cfg.Durable, "err", err)
		_ = msg.Term()
		return 0, false
	}
	d := Delivery{Subject: msg.Subject(), Sequence: meta.Sequence.Stream, Pending: meta.NumPending, Redelivery: meta.NumDelivered - 1, Stored: meta.Timestamp}
	ev, p, err := decode(msg.Headers().Get(HeaderKind), msg.Data())
	if err == nil {
		err = onItsSubject(d.Subject, ev, p)
	}
	if err != nil {
		b.deadLetter(ctx, cfg.Durable, msg, err)
		return d.Sequence, false
	}
	hbCtx, stopHeartbeat := context.WithCancel(ctx)
	go heartbeat(hbCtx, msg, cfg.AckWait/3)
	err = h(ctx, ev, p, d)
	stopHeartbeat()
	switch {
	case err == nil:
		// Acknowledge what was done even when the stage is stopping.
		var err error
		if cfg.AckUnconfirmed {
			err = msg.Ack()
		} else {
			ackCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			err = msg.DoubleAck(ackCtx)
			cancel()
		}
		if err != nil {
			b.log.Warn("ack", "durable", cfg.Durable, "subject", d.Subject, "err", err)
		}
	case errors.Is(err, ErrGiveUp) || int(meta.NumDelivered) >= cfg.MaxDeliver:
		b.deadLetter(ctx, cfg.Durable, msg, err)
	default:
		b.log.Warn("handler failed, will retry", "durable", cfg.Durable, "subject", d.Subject, "delivery", meta.NumDelivered, "err", err)
		_ = msg.NakWithDelay(retryDelay(meta.NumDelivered, cfg.AckWait))
		return d.Sequence, true
	}
	return d.Sequence, false
}

func heartbeat(ctx context.Context, msg jetstream.Msg, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			_ = msg.InProgress()
		}
	}
}

// onItsSubject checks that an event was published where its content says
// it belongs. Credentials bind subjects to senders (a worker may publish
// only on subjects naming its own host), so an event whose subject and
// content disagree claims to come from someone else.
func onItsSubject(subj string, ev schemas.Event, p schemas.Payload) error {
	want, err := subject(ev.Job, p)
	if err != nil {
		return nil // a kind whose subject is chosen by its sender (answers)
	}
	if want != subj {
		return fmt.Errorf("%s of job %d was published on %s; it belongs on %s", ev.Kind, ev.Job, subj, want)
	}
	return nil
}

// decode reads a message body. Messages carry their kind in a header, which
// lets the body be decoded in one pass; without it (a message published by
// hand) the envelope is read first.
func decode(kind string, data []byte) (schemas.Event, schemas.Payload, error) {
	if kind != "" {
		return schemas.DecodeAs(kind, data)
	}
	ev, err := schemas.Unmarshal(data)
	if err != nil {
		return ev, nil, err
	}
	p, err := ev.Decode()
	return ev, p, err
}

// deadLetter moves a message to jetqa.dead.<durable> with the reason, and
// terminates it so it is never redelivered.
func (b *Bus) deadLetter(ctx context.Context, durable string, msg jetstream.Msg, reason error) {
	b.log.Error("dead-lettering message", "durable", durable, "subject", msg.Subject(), "err", reason)
	dead := nats.NewMsg(subjectDead + "." + Token(durable))
	dead.Data = msg.Data()
	dead.Header.Set(headerDeadSubject, msg.Subject())
	dead.Header.Set(headerDeadReason, reason.Error())
	// Kept even when the stage is stopping: the message is terminated.
	keep, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, err := b.JS.PublishMsg(keep, dead); err != nil {
		b.log.Error("dead letter not stored", "durable", durable, "err", err)
	}
	_ = msg.Term()
}

// WatchConfig describes a replay of events through an ordered consumer.
type WatchConfig struct {
	Stream  string
	Filters []string
	// From is the first stream sequence to deliver; 0 means the beginning.
	From uint64
	// New starts at the end of the stream: only events appended from now on.
	New bool
	// Since starts at the first event the stream stored at or after it.
	Since time.Time
	// Decoders, when over 1, decode events in that many goroutines, a
	// batch each, while fn is still handed them one by one in order: a
	// replay of a long stream (the API's read model) is bound by JSON
	// decoding otherwise.
	Decoders int
	// Undecoded are kinds of job events handed to fn without decoding
	// their bodies: the payload is an *Undecoded, the event has its kind
	// and job only. A rebuild that most often finds such an event
	// replaced by a later one decodes it only when it is not.
	Undecoded []string
}

// Undecoded is a job event a watch handed on without decoding its body
// (WatchConfig.Undecoded).
type Undecoded struct {
	kind, subject string
	data          []byte
}

func (u *Undecoded) Kind() string { return u.kind }

// Decode reads the event, checked as a watch checks the events it decodes.
func (u *Undecoded) Decode() (schemas.Event, schemas.Payload, error) {
	ev, p, err := decode(u.kind, u.data)
	if err == nil {
		err = onItsSubject(u.subject, ev, p)
	}
	return ev, p, err
}

// undecoded is the message as an *Undecoded event when cfg asks for its
// kind to be, and its subject names its job.
func undecoded(cfg *WatchConfig, msg jetstream.Msg) (schemas.Event, *Undecoded, bool) {
	if len(cfg.Undecoded) == 0 {
		return schemas.Event{}, nil, false
	}
	kind := msg.Headers().Get(HeaderKind)
	if !slices.Contains(cfg.Undecoded, kind) {
		return schemas.Event{}, nil, false
	}
	rest, ok := strings.CutPrefix(msg.Subject(), "jetqa.job.")
	id, _, _ := strings.Cut(rest, ".")
	job, err := strconv.ParseInt(id, 10, 64)
	if !ok || err != nil || job <= 0 {
		return schemas.Event{}, nil, false
	}
	return schemas.Event{Kind: kind, Job: job}, &Undecoded{kind: kind, subject: msg.Subject(), data: msg.Data()}, true
}

// Watch replays the matching events in order and then follows new ones
// until ctx ends or fn returns an error (ErrStopWatch ends it cleanly). It
// keeps no state on the server; an unreadable event is logged and skipped.
func (b *Bus) Watch(ctx context.Context, cfg WatchConfig, fn func(ev schemas.Event, p schemas.Payload, d Delivery) error) error {
	if cfg.Decoders > 1 {
		return b.watchDecoding(ctx, cfg, fn)
	}
	return b.watchMsgs(ctx, cfg, func(msg jetstream.Msg, meta *jetstream.MsgMetadata) error {
		var w watched
		w.decode(&cfg, msg, meta)
		return b.hand(w, fn)
	})
}

// watched is a message of a watch and what it decodes to.
type watched struct {
	ev  schemas.Event
	p   schemas.Payload
	d   Delivery
	err error
}

func (w *watched) decode(cfg *WatchConfig, msg jetstream.Msg, meta *jetstream.MsgMetadata) {
	w.d = Delivery{Subject: msg.Subject(), Sequence: meta.Sequence.Stream, Pending: meta.NumPending, Stored: meta.Timestamp}
	if ev, u, ok := undecoded(cfg, msg); ok {
		w.ev, w.p, w.err = ev, u, nil
		return
	}
	w.ev, w.p, w.err = decode(msg.Headers().Get(HeaderKind), msg.Data())
	if w.err == nil {
		w.err = onItsSubject(w.d.Subject, w.ev, w.p)
	}
}

// hand gives fn a decoded event, skipping an unreadable one with a log line.
func (b *Bus) hand(w watched, fn func(ev schemas.Event, p schemas.Payload, d Delivery) error) error {
	if w.err != nil {
		b.log.Warn("skipping unreadable event", "subject", w.d.Subject, "seq", w.d.Sequence, "err", w.err)
		return nil
	}
	return fn(w.ev, w.p, w.d)
}

// watchBatch is how many messages one decoder of watchDecoding takes at
// once; a batch is handed on early when no more messages wait.
const watchBatch = 256

// watchDecoding is Watch with cfg.Decoders goroutines decoding batches of
// messages while one hands the events to fn in stream order. The batches
// are used again once handed: fresh ones for each would cost a rebuild
// of the read model page faults and collections of their own.
func (b *Bus) watchDecoding(ctx context.Context, cfg WatchConfig, fn func(ev schemas.Event, p schemas.Payload, d Delivery) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	type batch struct {
		msgs  []jetstream.Msg
		metas []*jetstream.MsgMetadata
		out   []watched
		ready chan struct{} // a token once out is decoded
	}
	// Batches being decoded, waiting to be handed, and one being filled.
	inUse := 3*cfg.Decoders + 1
	free := make(chan *batch, inUse)
	for range inUse {
		free <- &batch{msgs: make([]jetstream.Msg, 0, watchBatch), metas: make([]*jetstream.MsgMetadata, 0, watchBatch),
			out: make([]watched, watchBatch), ready: make(chan struct{}, 1)}
	}
	work := make(chan *batch, inUse)
	ordered := make(chan *batch, inUse)
	var decoders sync.WaitGroup
	for range cfg.Decoders {
		decoders.Go(func() {
			for bt := range work {
				for i, msg := range bt.msgs {
					bt.out[i].decode(&cfg, msg, bt.metas[i])
				}
				bt.ready <- struct{}{}
			}
		})
	}
	var stopped error // why fn stopped the watch
	handed := make(chan struct{})
	go func() {
		defer close(handed)
		for bt := range ordered {
			select {
			case <-bt.ready:
			case <-ctx.Done():
				return
			}
			for _, w := range bt.out[:len(bt.msgs)] {
				if err := b.hand(w, fn); err != nil {
					stopped = err
					cancel(err)
					return
				}
			}
			clear(bt.out)
			clear(bt.msgs)
			clear(bt.metas)
			bt.msgs, bt.metas = bt.msgs[:0], bt.metas[:0]
			free <- bt
		}
	}()
	cur := <-free
	err := b.watchMsgs(ctx, cfg, func(msg jetstream.Msg, meta *jetstream.MsgMetadata) error {
		cur.msgs, cur.metas = append(cur.msgs, msg), append(cur.metas, meta)
		if len(cur.msgs) < watchBatch && meta.NumPending > 0 {
			return nil
		}
		for _, ch := range []chan *batch{ordered, work} {
			select {
			case ch <- cur:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		select {
		case cur = <-free:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		return nil
	})
	close(work)
	close(ordered)
	decoders.Wait()
	<-handed
	switch {
	case errors.Is(stopped, ErrStopWatch):
		return nil
	case stopped != nil:
		return stopped
	}
	return err
}

// watchMsgs is Watch for the messages themselves.
func (b *Bus) watchMsgs(ctx context.Context, cfg WatchConfig, fn func(msg jetstream.Msg, meta *jetstream.MsgMetadata) error) error {
	occ := jetstream.OrderedConsumerConfig{FilterSubjects: cfg.Filters}
	switch {
	case cfg.New:
		occ.DeliverPolicy = jetstream.DeliverNewPolicy
	case cfg.From > 0:
		occ.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		occ.OptStartSeq = cfg.From
	case !cfg.Since.IsZero():
		occ.DeliverPolicy = jetstream.DeliverByStartTimePolicy
		occ.OptStartTime = &cfg.Since
	}
	cons, err := b.JS.OrderedConsumer(ctx, cfg.Stream, occ)
	if err != nil {
		return fmt.Errorf("watch %s %v: %w", cfg.Stream, cfg.Filters, err)
	}
	err = b.each(ctx, cons, "watch "+cfg.Stream, func(msg jetstream.Msg) error {
		meta, err := msg.Metadata()
		if err != nil {
			return nil
		}
		return fn(msg, meta)
	}, nil)
	if errors.Is(err, ErrStopWatch) {
		return nil
	}
	return err
}

// Replay hands fn, in order, the matching events stored when it is
// called, and returns: a scan of the stream as it is now, for the server's
// periodic work (retention). An unreadable event is logged and skipped.
func (b *Bus) Replay(ctx context.Context, cfg WatchConfig, fn func(ev schemas.Event, p schemas.Payload, d Delivery) error) error {
	cons, err := b.JS.CreateConsumer(ctx, cfg.Stream, jetstream.ConsumerConfig{
		FilterSubjects: cfg.Filters, AckPolicy: jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute, MemoryStorage: true,
	})
	if err != nil {
		return fmt.Errorf("replay %s %v: %w", cfg.Stream, cfg.Filters, err)
	}
	defer func() {
		_ = b.JS.DeleteConsumer(context.WithoutCancel(ctx), cfg.Stream, cons.CachedInfo().Name)
	}()
	left := cons.CachedInfo().NumPending
	for left > 0 {
		batch, err := cons.Fetch(int(min(left, 256)), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return fmt.Errorf("replay %s: %w", cfg.Stream, err)
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			meta, err := msg.Metadata()
			if err != nil {
				continue
			}
			left = meta.NumPending
			ev, p, err := decode(msg.Headers().Get(HeaderKind), msg.Data())
			if err == nil {
				err = onItsSubject(msg.Subject(), ev, p)
			}
			if err != nil {
				b.log.Warn("skipping unreadable event", "subject", msg.Subject(), "seq", meta.Sequence.Stream, "err", err)
				continue
			}
			if err := fn(ev, p, Delivery{Subject: msg.Subject(), Sequence: meta.Sequence.Stream, Pending: meta.NumPending, Stored: meta.Timestamp}); err != nil {
				if errors.Is(err, ErrStopWatch) {
					return nil
				}
				return err
			}
		}
		if err := batch.Error(); err != nil {
			return fmt.Errorf("replay %s: %w", cfg.Stream, err)
		}
		if got == 0 {
			return fmt.Errorf("replay %s: %d events left, none delivered", cfg.Stream, left)
		}
	}
	return nil
}

// ErrStopWatch, returned by a Watch callback, ends the watch without error.
var ErrStopWatch = errors.New("stop watching")

// LastSequence is the current last sequence of a stream: a watcher that
// has seen it has caught up with everything appended before the call.
func (b *Bus) LastSequence(ctx context.Context, stream string) (last uint64, err error) {
	err = b.patiently(ctx, "stream "+stream, func(ctx context.Context) error {
		last, err = b.lastSequence(ctx, stream)
		return err
	})
	return last, err
}

func (b *Bus) lastSequence(ctx context.Context, stream string) (uint64, error) {
	s, err := b.JS.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	return info.State.LastSeq, nil
}

// JobSettings reads the settings a job was created with.
func (b *Bus) JobSettings(ctx context.Context, job int64) (map[string]string, error) {
	s, err := b.JS.Stream(ctx, StreamJobs)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", StreamJobs, err)
	}
	raw, err := s.GetLastMsgForSubject(ctx, JobSubject(job)+".created")
	if err != nil {
		return nil, fmt.Errorf("job %d: created event: %w", job, err)
	}
	_, p, err := decode(raw.Header.Get(HeaderKind), raw.Data)
	if err != nil {
		return nil, fmt.Errorf("job %d: %w", job, err)
	}
	created, ok := p.(*schemas.JobCreated)
	if !ok {
		return nil, fmt.Errorf("job %d: created subject holds %s", job, p.Kind())
	}
	return created.Settings, nil
}

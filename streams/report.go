package streams

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"jetqa/schemas"
)

// Workers never write the job stream. What a worker has to say about a job
// it runs (an asset is ready, a module finished, the tests ended) it sends
// as a report on jetqa.report.<host>.<instance>, a subject only its own
// credentials may publish on; the server's authority checks the report
// against the job and appends the event, or refuses it. The same goes for
// the durable consumers a worker reads from: it asks on
// jetqa.setup.<host>.<instance>, and the server creates the one consumer
// that identity may have.
const (
	subjectReport = "jetqa.report"
	subjectSetup  = "jetqa.setup"
	// SubjectReports and SubjectSetups are what the authority serves.
	SubjectReports = subjectReport + ".>"
	SubjectSetups  = subjectSetup + ".>"
	// headerReportID identifies a report across its retries.
	headerReportID = "Jetqa-Report-Id"
)

// ReportSubject is where a worker instance sends its reports; instance 0
// is the host's own stages (fetch, upload).
func ReportSubject(w schemas.WorkerRef) string { return subjectReport + "." + WorkerToken(w) }

// SetupSubject is where a worker instance asks for its consumers.
func SetupSubject(w schemas.WorkerRef) string { return subjectSetup + "." + WorkerToken(w) }

// ErrRefused marks a report or request the server refused because the
// sender may not say or ask it: it is not retried.
var ErrRefused = errors.New("refused")

// AsWorker makes the bus speak for a worker instance (instance 0: the
// host's own stages): job events it appends become reports the server
// decides on, and its durable consumers are created by the server.
func (b *Bus) AsWorker(w schemas.WorkerRef) {
	b.worker = &w
	b.useOnly = true
}

// UseOnly makes the bus use streams and consumers without ever creating or
// changing them: those of a matcher, whose consumer the server creates.
func (b *Bus) UseOnly() { b.useOnly = true }

// reportReply is the authority's answer to a report or a setup request.
type reportReply struct {
	Seq uint64 `json:"seq,omitempty"`
	// Refused is "transition" (the job's state does not allow it),
	// "refused" (the sender may not say it) or "" with Error set (a failure
	// on the server's side: try again).
	Refused string `json:"refused,omitempty"`
	Error   string `json:"error,omitempty"`
}

const (
	refusedTransition = "transition"
	refusedIdentity   = "refused"
)

// reportWait bounds how long a report keeps being sent while the server
// does not answer; the caller's consumer retries after that.
const reportWait = time.Minute

// report sends a job event as a report and waits for the server's decision.
func (b *Bus) report(ctx context.Context, job int64, p schemas.Payload) (uint64, error) {
	ev, msg, err := b.eventMsg(ReportSubject(*b.worker), job, p)
	if err != nil {
		return 0, err
	}
	msg.Header.Set(headerReportID, newReportID())
	seq, err := b.ask(ctx, msg)
	if err != nil {
		return 0, fmt.Errorf("report %s of job %d: %w", ev.Kind, job, err)
	}
	return seq, nil
}

// ask sends msg to the authority until it answers or reportWait passes.
func (b *Bus) ask(ctx context.Context, msg *nats.Msg) (uint64, error) {
	var resp *nats.Msg
	err := b.untilAnswered(ctx, msg.Subject, "jetqa server did not answer, sending again", func(error) bool { return true },
		func(try context.Context) (err error) {
			resp, err = b.NC.RequestMsgWithContext(try, msg)
			return err
		})
	if err != nil {
		return 0, fmt.Errorf("no answer from the jetqa server (is it running?): %w", err)
	}
	return decodeReply(resp.Data)
}

// untilAnswered calls send, each try bounded to publishTry, until it
// succeeds, fails in a way again does not retry, or reportWait passes;
// between tries it logs warn and waits a second. It returns the last
// try's error.
func (b *Bus) untilAnswered(ctx context.Context, subject, warn string, again func(error) bool, send func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, reportWait)
	defer cancel()
	for {
		try, cancelTry := context.WithTimeout(ctx, publishTry)
		err := send(try)
		cancelTry()
		if err == nil || !again(err) || ctx.Err() != nil {
			return err
		}
		b.log.Warn(warn, "subject", subject, "err", err)
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Second):
		}
	}
}

func decodeReply(data []byte) (uint64, error) {
	var r reportReply
	if err := json.Unmarshal(data, &r); err != nil {
		return 0, fmt.Errorf("unreadable answer from the jetqa server: %w", err)
	}
	switch {
	case r.Refused == refusedTransition:
		return 0, fmt.Errorf("%w: %s", schemas.ErrTransition, r.Error)
	case r.Refused != "":
		return 0, fmt.Errorf("%w: %s", ErrRefused, strings.TrimPrefix(r.Error, ErrRefused.Error()+": "))
	case r.Error != "":
		return 0, errors.New(r.Error)
	}
	return r.Seq, nil
}

func newReportID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// requestConsumer asks the server for a durable consumer of this worker.
func (b *Bus) requestConsumer(ctx context.Context, cfg ConsumerConfig) error {
	data, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	msg := nats.NewMsg(SetupSubject(*b.worker))
	msg.Data = data
	if _, err := b.ask(ctx, msg); err != nil {
		return fmt.Errorf("consumer %s: %w", cfg.Durable, err)
	}
	return nil
}

// Report is a worker's report as the authority sees it: who sent it (from
// the subject, which only that worker's credentials may publish on), the
// event it proposes, and the report's id.
type Report struct {
	From    ReportSender
	Event   schemas.Event
	Payload schemas.Payload
	ID      string
}

// ReportSender is a worker instance as its subject names it: the host as a
// subject token (Token of the host name) and the instance, 0 for the
// host's own stages.
type ReportSender struct {
	Host     string
	Instance int
}

func (s ReportSender) String() string {
	if s.Instance == 0 {
		return s.Host
	}
	return s.Host + ":" + strconv.Itoa(s.Instance)
}

// Is says whether w is this sender: the same host and, for an instance's
// own reports, the same instance.
func (s ReportSender) Is(w schemas.WorkerRef) bool {
	return Token(w.Host) == s.Host && (s.Instance == 0 || s.Instance == w.Instance)
}

// parseSender reads the sender from <prefix>.<host>.<instance>.
func parseSender(subject, prefix string) (ReportSender, error) {
	rest, ok := strings.CutPrefix(subject, prefix+".")
	host, inst, ok2 := strings.Cut(rest, ".")
	n, err := strconv.Atoi(inst)
	if !ok || !ok2 || err != nil || n < 0 || host == "" {
		return ReportSender{}, fmt.Errorf("%w: subject %s does not name a worker as %s.<host>.<instance>", ErrRefused, subject, prefix)
	}
	return ReportSender{Host: host, Instance: n}, nil
}

// AuthorityConfig is what the server's authority runs with.
type AuthorityConfig struct {
	// Decide checks a report; the event is appended only if it returns nil.
	// Its error wraps ErrRefused when the sender may not say it.
	Decide func(context.Context, *schemas.JobAggregate, Report) error
	// Workers is how many reports are decided at once.
	Workers int
}

// ServeReports decides workers' reports and consumer requests until ctx
// ends. Every process serving them shares one queue group, so each report
// is decided once.
func (b *Bus) ServeReports(ctx context.Context, cfg AuthorityConfig) error {
	if cfg.Workers < 1 {
		cfg.Workers = 1
	}
	msgs := make(chan *nats.Msg, 1024)
	var subs []*nats.Subscription
	for _, subj := range []string{SubjectReports, SubjectSetups, SubjectStores} {
		sub, err := b.NC.ChanQueueSubscribe(subj, "jetqa-authority", msgs)
		if err != nil {
			return fmt.Errorf("serve %s: %w", subj, err)
		}
		subs = append(subs, sub)
	}
	done := make(chan struct{})
	for range cfg.Workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for {
				select {
				case <-ctx.Done():
					return
				case msg := <-msgs:
					b.answer(ctx, cfg, msg)
				}
			}
		}()
	}
	<-ctx.Done()
	for _, sub := range subs {
		_ = sub.Unsubscribe()
	}
	for range cfg.Workers {
		<-done
	}
	return nil
}

// answer decides one report or consumer request and replies.
func (b *Bus) answer(ctx context.Context, cfg AuthorityConfig, msg *nats.Msg) {
	var seq uint64
	var err error
	var from ReportSender
	if strings.HasPrefix(msg.Subject, subjectSetup+".") {
		if from, err = parseSender(msg.Subject, subjectSetup); err == nil {
			err = b.createWorkerConsumer(ctx, from, msg.Data)
		}
	} else if strings.HasPrefix(msg.Subject, subjectStore+".") {
		if from, err = parseSender(msg.Subject, subjectStore); err == nil {
			seq, err = b.storeBlob(ctx, from, msg.Data)
		}
	} else if from, err = parseSender(msg.Subject, subjectReport); err == nil {
		seq, err = b.decideReport(ctx, cfg, from, msg)
	}
	var r reportReply
	switch {
	case err == nil:
		r.Seq = seq
	case errors.Is(err, schemas.ErrTransition):
		r.Refused, r.Error = refusedTransition, err.Error()
	case errors.Is(err, ErrRefused):
		r.Refused, r.Error = refusedIdentity, err.Error()
	default:
		r.Error = err.Error()
	}
	if r.Refused != "" {
		b.refuse(ctx, from, msg, err)
	}
	data, _ := json.Marshal(r)
	if err := msg.Respond(data); err != nil {
		b.log.Warn("answer to a worker not sent", "worker", from.String(), "err", err)
	}
}

// refuse logs a refused report with its sender and keeps it in the dead
// letter stream with the reason.
func (b *Bus) refuse(ctx context.Context, from ReportSender, msg *nats.Msg, reason error) {
	b.log.Warn("report refused", "worker", from.String(), "subject", msg.Subject, "kind", msg.Header.Get(HeaderKind), "why", reason)
	dead := nats.NewMsg(subjectDead + ".authority")
	dead.Data = msg.Data
	dead.Header.Set(headerDeadSubject, msg.Subject)
	dead.Header.Set(headerDeadReason, reason.Error())
	dead.Header.Set(headerDeadWorker, from.String())
	if _, err := b.JS.PublishMsg(ctx, dead); err != nil {
		b.log.Error("dead letter not stored", "durable", "authority", "err", err)
	}
}

// decideReport appends a report's event if cfg.Decide and the job's
// aggregate accept it. The event's source names the sender as its subject
// does, whatever the report claims.
func (b *Bus) decideReport(ctx context.Context, cfg AuthorityConfig, from ReportSender, msg *nats.Msg) (uint64, error) {
	ev, p, err := decode(msg.Header.Get(HeaderKind), msg.Data)
	if err != nil {
		return 0, fmt.Errorf("%w: unreadable report: %v", ErrRefused, err)
	}
	if _, ok := jobEventTokens[ev.Kind]; !ok || ev.Job <= 0 {
		return 0, fmt.Errorf("%w: %s about job %d is not a job event", ErrRefused, ev.Kind, ev.Job)
	}
	subj, err := subject(ev.Job, p)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	stage, _, _ := strings.Cut(ev.Source, "@")
	r := Report{From: from, Event: ev, Payload: p, ID: msg.Header.Get(headerReportID)}
	return b.appendJobEvent(ctx, ev.Job, subj, p, appendOpts{
		source: Token(stage) + "@" + from.String(),
		msgID:  r.ID,
		check:  func(agg *schemas.JobAggregate) error { return cfg.Decide(ctx, agg, r) },
	})
}

// streamAnswers says whether a stream's leader answers.
func (b *Bus) streamAnswers(ctx context.Context, stream string) bool {
	s, err := b.JS.Stream(ctx, stream)
	if err != nil {
		return false
	}
	_, err = s.Info(ctx)
	return err == nil
}

// createWorkerConsumer creates the durable consumer a worker asked for if
// it is one of that worker's own (WorkerConsumer): its stream and filters
// come from the sender's identity, never from the request.
func (b *Bus) createWorkerConsumer(ctx context.Context, from ReportSender, data []byte) error {
	var req ConsumerConfig
	if err := json.Unmarshal(data, &req); err != nil {
		return fmt.Errorf("%w: unreadable consumer request: %v", ErrRefused, err)
	}
	want, ok := WorkerConsumer(from, req.Durable)
	if !ok || want.Stream != req.Stream || strings.Join(want.Filters, " ") != strings.Join(req.Filters, " ") {
		return fmt.Errorf("%w: worker %s may not have consumer %s on %s for %v", ErrRefused, from, req.Durable, req.Stream, req.Filters)
	}
	// The tuning is the stage's own, within bounds.
	want.AckWait = min(max(req.AckWait, time.Second), 10*time.Minute)
	want.MaxDeliver = min(max(req.MaxDeliver, 1), 10)
	want.MaxAckPending = min(max(req.MaxAckPending, 1), 64)
	_, err := b.JS.Consumer(ctx, want.Stream, want.Durable)
	if err != nil && req.Unanswered && !isConsumerOffline(err) && !errors.Is(err, jetstream.ErrConsumerNotFound) && b.streamAnswers(ctx, want.Stream) {
		// Its node was killed and is not yet known to be gone: the stream
		// answers (a live majority), its consumer does not, neither to the
		// worker nor here.
		err = errConsumerLost
	}
	switch {
	case err == nil:
		// It exists: the worker's tuning may have changed, its start not.
		_, err = b.createConsumer(ctx, want)
		return err
	case isConsumerOffline(err) || errors.Is(err, errConsumerLost):
		// Its one replica is on a node that is gone: delete it (the meta
		// leader can) and make it again where the worker got to. What it
		// had delivered and not had acknowledged comes again; the stages
		// skip work that is no longer current.
		b.log.Warn("worker consumer offline; making it again", "worker", from.String(), "durable", want.Durable, "from sequence", req.ResumeAt)
		if err := b.JS.DeleteConsumer(ctx, want.Stream, want.Durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("consumer %s on %s is offline and cannot be deleted: %w", want.Durable, want.Stream, err)
		}
		want.ResumeAt = req.ResumeAt
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		want.ResumeAt = req.ResumeAt
	default:
		return fmt.Errorf("consumer %s on %s: %w", want.Durable, want.Stream, err)
	}
	_, err = b.createConsumer(ctx, want)
	return err
}

// WorkerConsumer is the durable consumer named durable if a worker sender
// may have it: its host's assignments, prefetches, finished tests, or its
// instance's ready jobs. The stream and filters are the contract.
func WorkerConsumer(from ReportSender, durable string) (ConsumerConfig, bool) {
	host := schemas.WorkerRef{Host: from.Host}
	var c ConsumerConfig
	switch {
	case from.Instance == 0 && durable == FetchDurable(from.Host):
		c = ConsumerConfig{Stream: StreamJobs, Filters: []string{AssignedTo(from.Host)}}
	case from.Instance == 0 && durable == UploadDurable(from.Host):
		c = ConsumerConfig{Stream: StreamJobs, Filters: []string{TestsFinishedOn(from.Host)}}
	case from.Instance == 0 && durable == PrefetchDurable(from.Host):
		c = ConsumerConfig{Stream: StreamWorkers, Filters: []string{PrefetchFor(host.Host)}}
	case from.Instance > 0 && durable == BootDurable(schemas.WorkerRef{Host: from.Host, Instance: from.Instance}):
		c = ConsumerConfig{Stream: StreamJobs, Filters: []string{ReadyFor(schemas.WorkerRef{Host: from.Host, Instance: from.Instance})}}
	default:
		return ConsumerConfig{}, false
	}
	c.Durable = durable
	// One replica: a consumer of three is a Raft group of its own, and a
	// fleet has a few per host. If its node is lost for good, the worker
	// asks again and gets it on another (Consume, createWorkerConsumer).
	c.Replicas = 1
	return c, true
}

// The durable consumers of a worker host's stages.
func FetchDurable(host string) string        { return "fetch-" + Token(host) }
func UploadDurable(host string) string       { return "upload-" + Token(host) }
func PrefetchDurable(host string) string     { return "prefetch-" + Token(host) }
func BootDurable(w schemas.WorkerRef) string { return "boot-" + Token(w.String()) }

// bindConsumer finds a consumer the server created.
func (b *Bus) bindConsumer(ctx context.Context, cfg ConsumerConfig) (jetstream.Consumer, error) {
	if b.worker != nil {
		if err := b.requestConsumer(ctx, cfg); err != nil {
			return nil, err
		}
	}
	var cons jetstream.Consumer
	err := b.patiently(ctx, "consumer "+cfg.Durable, func(ctx context.Context) (err error) {
		cons, err = b.JS.Consumer(ctx, cfg.Stream, cfg.Durable)
		return err
	})
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("consumer %s on %s does not exist: the jetqa server creates it; is `jetqa server` running on this NATS? %w", cfg.Durable, cfg.Stream, err)
	}
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, cfg.Stream, err)
	}
	return cons, nil
}

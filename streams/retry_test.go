package streams

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"jetqa/schemas"
)

// TestLostAcknowledgementIsNotAConflict sends an append whose first copy
// was stored but whose acknowledgement never arrived: sending it again must
// report the stored sequence, not a conflict, and store nothing more.
func TestLostAcknowledgementIsNotAConflict(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b := testBus(ctx, t)
	created, err := b.Append(ctx, 1, schemas.JobCreated{})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := schemas.NewEvent(1, "test", schemas.JobAssigned{Worker: schemas.WorkerRef{Host: "h", Instance: 1}})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := ev.Marshal()
	msg := nats.NewMsg("jetqa.job.1.assigned.h.1")
	msg.Data = data
	msg.Header.Set(HeaderKind, ev.Kind)
	msg.Header.Set(headerExpectedLastSubjectSeq, strconv.FormatUint(created, 10))
	msg.Header.Set(headerExpectedLastSubjectSeqSubject, "jetqa.job.1.>")
	msg.Header.Set(nats.MsgIdHdr, appendID(1, created, ev))
	first, err := b.JS.PublishMsg(ctx, msg) // its ack "gets lost"
	if err != nil {
		t.Fatal(err)
	}
	seq, _, err := b.publishDecision(ctx, 1, created, msg)
	if err != nil || seq != first.Sequence {
		t.Fatalf("resending the stored append: seq %d, %v; want %d, nil", seq, err, first.Sequence)
	}
	// Another writer's decision on the same history is a conflict.
	other, _ := schemas.NewEvent(1, "other", schemas.JobAssigned{Worker: schemas.WorkerRef{Host: "h", Instance: 2}})
	data, _ = other.Marshal()
	msg2 := nats.NewMsg("jetqa.job.1.assigned.h.2")
	msg2.Data = data
	for k, v := range msg.Header {
		msg2.Header[k] = v
	}
	msg2.Header.Set(nats.MsgIdHdr, appendID(1, created, other))
	if _, _, err := b.publishDecision(ctx, 1, created, msg2); err != errOvertaken {
		t.Errorf("a different decision on the same history: %v, want errOvertaken", err)
	}
	if last, _ := b.LastSequence(ctx, StreamJobs); last != first.Sequence {
		t.Errorf("stream ends at %d, want %d", last, first.Sequence)
	}
}

func TestBothConflictCodesAreConflicts(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence, Description: "wrong last sequence: 7"}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant, Description: "wrong last sequence"}, true},
		{fmt.Errorf("publish: %w", &jetstream.APIError{ErrorCode: jetstream.JSErrCodeStreamWrongLastSequenceConstant}), true},
		{&jetstream.APIError{Code: 503, ErrorCode: jetstream.JSErrCodeJetStreamNotEnabled}, false},
		{errors.New("wrong last sequence"), false},
		{nil, false},
	} {
		if got := isWrongSequence(tc.err); got != tc.want {
			t.Errorf("isWrongSequence(%v) = %v", tc.err, got)
		}
	}
}

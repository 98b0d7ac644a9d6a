package streams_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams/natstest"
)

// LoadJobAt gives the job as of a delivered event at least, and fails
// (for the handler to be retried) rather than answer with an older state:
// read older, an assignment looks absent and its job is skipped for good.
func TestLoadJobAtNeverAnswersOlderThanTheEvent(t *testing.T) {
	bus := natstest.Start(t).Bus("test")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := bus.Append(ctx, 1, schemas.JobCreated{}); err != nil {
		t.Fatal(err)
	}
	seq, err := bus.Append(ctx, 1, schemas.JobAssigned{Worker: schemas.WorkerRef{Host: "h", Instance: 1}})
	if err != nil {
		t.Fatal(err)
	}
	agg, err := bus.LoadJobAt(ctx, 1, seq)
	if err != nil || agg.Worker == nil || agg.Seq != seq {
		t.Fatalf("as of the assignment: %+v, %v", agg, err)
	}
	// An event the leader has not applied: a later sequence.
	agg, err = bus.LoadJobAt(ctx, 1, seq+5)
	if err == nil || !strings.Contains(err.Error(), "not applied event") {
		t.Fatalf("as of a sequence not stored yet: %+v, %v; want an error", agg, err)
	}
}

package streams_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams/natstest"
)

// A restart creates the clone before the original names it, so no job
// names a clone that does not exist; of two restarts at once, one wins and
// the loser's clone ends obsoleted, never to run.
func TestRestartCreatesTheCloneFirst(t *testing.T) {
	bus := natstest.Start(t).Bus("test")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if id, err := bus.NextJobID(ctx); err != nil || id != 1 {
		t.Fatalf("job id %d, %v", id, err)
	}
	if _, err := bus.Append(ctx, 1, schemas.JobCreated{Settings: map[string]string{"TEST": "t"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := bus.Append(ctx, 1, schemas.JobFinished{Result: schemas.ResultFailed}); err != nil {
		t.Fatal(err)
	}
	orig, err := bus.LoadJob(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	clone, err := bus.Restart(ctx, orig, "test", 0)
	if err != nil {
		t.Fatal(err)
	}
	after, err := bus.LoadJob(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	c, err := bus.LoadJob(ctx, clone)
	if err != nil {
		t.Fatal(err)
	}
	if after.Clone != clone || c.CloneOf != 1 || c.Seq >= after.Seq || c.Settings["TEST"] != "t" {
		t.Fatalf("original %+v, clone %+v: want the clone created first, named by the original", after, c)
	}
	// A second restart from the same (now stale) read of the original.
	lost, err := bus.Restart(ctx, orig, "test", 0)
	if !errors.Is(err, schemas.ErrTransition) || lost != 0 {
		t.Fatalf("a second restart: clone %d, %v; want refused", lost, err)
	}
	last, err := bus.NextJobID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	orphan, err := bus.LoadJob(ctx, last-1)
	if err != nil {
		t.Fatal(err)
	}
	if orphan.CloneOf != 1 || !orphan.Final() || orphan.Result != schemas.ResultObsoleted {
		t.Fatalf("the losing restart's clone: %+v; want it ended obsoleted", orphan)
	}
	if again, _ := bus.LoadJob(ctx, 1); again.Clone != clone {
		t.Fatalf("the original names %d, want %d", again.Clone, clone)
	}
}

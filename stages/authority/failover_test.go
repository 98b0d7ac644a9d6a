package authority_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/stages/authority"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// A worker's consumers have one replica each (a fleet cannot afford a Raft
// group per consumer). When the node holding one is gone for good, the
// worker asks again, the server makes it on another node from where the
// worker got to, and the work goes on: the next assignment arrives, the
// one already handled does not come again.
func TestAWorkerConsumerOutlivesItsNode(t *testing.T) {
	srv, urls := natstest.StartCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	log := natstest.Logger(t)
	connect := func(name string) *streams.Bus {
		bus, err := streams.Connect(ctx, strings.Join(urls, ","), name, log)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(bus.Close)
		return bus
	}
	server := connect("authority@server")
	run, stop := context.WithCancel(ctx)
	stopped := make(chan error, 2)
	go func() { stopped <- authority.New(authority.Config{Workers: 2}, server, log).Run(run) }()

	fetch := connect("fetch@h1")
	fetch.AsWorker(schemas.WorkerRef{Host: "h1"})
	handled := make(chan int64, 16)
	go func() {
		stopped <- fetch.Consume(run, streams.ConsumerConfig{
			Stream:  streams.StreamJobs,
			Durable: streams.FetchDurable("h1"),
			Filters: []string{streams.AssignedTo("h1")},
		}, func(_ context.Context, ev schemas.Event, p schemas.Payload, _ streams.Delivery) error {
			if _, ok := p.(*schemas.JobAssigned); ok {
				handled <- ev.Job
			}
			return nil
		})
	}()
	defer func() {
		stop()
		for range 2 {
			if err := <-stopped; err != nil {
				t.Error(err)
			}
		}
	}()
	assign := func(job int64) {
		t.Helper()
		if _, err := server.Append(ctx, job, schemas.JobCreated{Settings: map[string]string{"TEST": "t"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := server.Append(ctx, job, schemas.JobAssigned{Worker: schemas.WorkerRef{Host: "h1", Instance: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(job int64) {
		t.Helper()
		select {
		case got := <-handled:
			if got != job {
				t.Fatalf("handled job %d, want %d", got, job)
			}
		case <-ctx.Done():
			t.Fatalf("job %d's assignment never reached the worker", job)
		}
	}
	assign(1)
	expect(1)

	cons, err := server.JS.Consumer(ctx, streams.StreamJobs, streams.FetchDurable("h1"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.Cluster == nil || len(info.Cluster.Replicas) != 0 {
		t.Fatalf("the worker's consumer has replicas %+v, want one copy", info.Cluster)
	}
	var victim *streams.Embedded
	for _, n := range srv.Nodes {
		if n.Name() == info.Cluster.Leader {
			victim = n
		}
	}
	if victim == nil {
		t.Fatalf("no node %q", info.Cluster.Leader)
	}
	t.Logf("stopping %s, which holds the consumer", victim.Name())
	victim.Shutdown()
	victim.WaitForShutdown()

	assign(2)
	expect(2)
	select {
	case job := <-handled:
		t.Fatalf("job %d came again", job)
	default:
	}
}

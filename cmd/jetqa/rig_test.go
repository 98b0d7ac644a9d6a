package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"jetqa/internal/fleetsim"
	"jetqa/schemas"
	"jetqa/streams"
)

// loadRig is what the load and fault tests run: `jetqa server` without
// matchers, two `jetqa matcher` processes of one core each, and a fleet
// of simulated worker hosts (internal/fleetsim) with credentials of their
// own, each job asking the matchers once; the job stream is watched into
// a record from the moment the fleet is up.
type loadRig struct {
	t        *testing.T
	ctx      context.Context
	natsURL  string
	data     string
	ports    []int // NATS, API, then the server's, m1's and m2's --debug-listen
	server   *process
	bus      *streams.Bus // the operator's
	admin    streams.Dial
	s        *system
	matchers [2]*exec.Cmd
	stops    [2]func() // of the matchers
	fleet    *fleetsim.Fleet
	fleetUp  time.Time
	from     uint64 // the job stream's end before the first job
	rec      *fleetsim.Record
	watched  chan error
	settings url.Values
	posted   atomic.Int64
}

// rigConfig sizes a rig.
type rigConfig struct {
	hosts         int
	workerTimeout time.Duration // of the server; 0: its default
	heartbeat     time.Duration // of the hosts; 0: fleetsim's
}

func startRig(t *testing.T, ctx context.Context, c rigConfig) *loadRig {
	t.Helper()
	log := slog.New(slog.NewTextHandler(systemLog(t), &slog.HandlerOptions{Level: slog.LevelWarn}))
	r := &loadRig{t: t, ctx: ctx, ports: freePorts(t, 5), data: t.TempDir(), watched: make(chan error, 1)}
	r.natsURL = fmt.Sprintf("nats://127.0.0.1:%d", r.ports[0])
	r.startServer(c.workerTimeout)
	id, err := streams.LoadIdentity(filepath.Join(r.data, adminCreds))
	if err != nil {
		t.Fatal(err)
	}
	r.admin = streams.Dial{URLs: r.natsURL, Identity: &id}
	if r.bus, err = streams.ConnectTo(ctx, r.admin, "rig", log); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.bus.Close)
	r.s = &system{api: fmt.Sprintf("http://127.0.0.1:%d", r.ports[1]), bus: r.bus}
	r.s.key = addAPIKey(t, r.bus, r.s.api, filepath.Join(t.TempDir(), clientConf))

	// The matchers have the testos needles; each job asks for them on a
	// real screen full of kernel messages, near their places.
	refs := publishTestosNeedles(t, ctx, r.bus)
	for i := range r.matchers {
		r.startMatcher(i)
	}

	credsDir := t.TempDir()
	for i := range c.hosts {
		name := fmt.Sprintf("w%04d", i+1)
		if err := issueCredentials(ctx, r.bus, r.admin, streams.RoleWorker, name, 1, filepath.Join(credsDir, name+".creds")); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	r.fleet = fleetsim.Start(ctx, t, fleetsim.Config{Hosts: c.hosts, Log: log, Heartbeat: c.heartbeat,
		Match: &schemas.MatchRequested{Screen: kernelMessages(t), Needles: refs, Ratio: 0.02, Threshold: 0.96},
		Dial: func(ctx context.Context, i int, stage string, w schemas.WorkerRef) (*streams.Bus, error) {
			id, err := streams.LoadIdentity(filepath.Join(credsDir, w.Host+".creds"))
			if err != nil {
				return nil, err
			}
			return streams.ConnectTo(ctx, streams.Dial{URLs: r.natsURL, Identity: &id}, stage+"@"+w.String(), log)
		}}, r.bus)
	r.fleetUp = time.Now()
	t.Logf("%d simulated worker hosts up in %v", c.hosts, r.fleetUp.Sub(start).Round(time.Millisecond))

	if r.from, err = r.bus.LastSequence(ctx, streams.StreamJobs); err != nil {
		t.Fatal(err)
	}
	r.rec = fleetsim.NewRecord(2 * c.hosts)
	watchCtx, stopWatch := context.WithCancel(ctx)
	go func() {
		r.watched <- r.bus.Watch(watchCtx, streams.WatchConfig{Stream: streams.StreamJobs, From: r.from + 1, Filters: []string{streams.SubjectJobs}},
			func(ev schemas.Event, p schemas.Payload, _ streams.Delivery) error {
				r.rec.See(ev, p)
				return nil
			})
	}()
	t.Cleanup(func() {
		stopWatch()
		<-r.watched
	})
	r.settings = url.Values{}
	for k, v := range map[string]string{
		"DISTRI": "opensuse", "VERSION": "Tumbleweed", "FLAVOR": "DVD", "ARCH": "x86_64", "BUILD": "20261207",
		"MACHINE": "64bit", "TEST": "textmode", "WORKER_CLASS": fleetsim.Class, "HDDSIZEGB": "20", "QEMURAM": "2048",
	} {
		r.settings.Set(k, v)
	}
	return r
}

// startServer starts `jetqa server` on the rig's ports and data, and
// waits until it is up.
func (r *loadRig) startServer(workerTimeout time.Duration) {
	r.t.Helper()
	args := []string{"server", "--data", r.data, "--listen", fmt.Sprintf("127.0.0.1:%d", r.ports[1]),
		"--nats-port", fmt.Sprint(r.ports[0]), "--matchers", "0", "--log-level", "warn", "--debug-listen", r.debug(0)}
	if workerTimeout > 0 {
		args = append(args, "--worker-timeout", workerTimeout.String())
	}
	r.server = startProcess(r.t, "server", args...)
	r.server.waitLine(r.t, 3*time.Minute, "jetqa server is up")
}

// startMatcher starts matcher i (m1, m2) with credentials of its own,
// issued the first time.
func (r *loadRig) startMatcher(i int) {
	r.t.Helper()
	name := fmt.Sprintf("m%d", i+1)
	creds := filepath.Join(r.data, name+".creds")
	if _, err := os.Stat(creds); err != nil {
		if err := issueCredentials(r.ctx, r.bus, r.admin, streams.RoleMatcher, name, 1, creds); err != nil {
			r.t.Fatal(err)
		}
	}
	r.matchers[i], r.stops[i] = startMatcherProcess(r.t, r.natsURL, name, "--creds", creds, "--debug-listen", r.debug(i+1))
}

// debug is the --debug-listen address of the server (0) or matcher i-1.
func (r *loadRig) debug(i int) string { return fmt.Sprintf("127.0.0.1:%d", r.ports[2+i]) }

// processes are the rig's jetqa processes, with their profiles.
func (r *loadRig) processes() []loadProcess {
	return []loadProcess{{"server", r.server.cmd.Process, r.debug(0)},
		{"matcher m1", r.matchers[0].Process, r.debug(1)}, {"matcher m2", r.matchers[1].Process, r.debug(2)}}
}

// post posts n jobs through the API, four at a time, keeping at most two
// per host unfinished. patient posts again what was refused or not
// answered (a server killed), for up to 3 minutes. It may run outside
// the test's goroutine: it fails nothing itself.
func (r *loadRig) post(n int, patient bool) error {
	todo := make(chan struct{})
	posters, postCtx := errgroup.WithContext(r.ctx)
	for range 4 {
		posters.Go(func() error {
			for range todo {
				giveUp := time.Now().Add(3 * time.Minute)
				for {
					err := postJob(postCtx, r.s, r.settings)
					if err == nil {
						break
					}
					if !patient || time.Now().After(giveUp) || postCtx.Err() != nil {
						return err
					}
					wait := time.NewTimer(500 * time.Millisecond)
					select {
					case <-wait.C:
					case <-postCtx.Done():
						wait.Stop()
					}
				}
				r.posted.Add(1)
			}
			return nil
		})
	}
	var err error
	for range n {
		select {
		case r.rec.Slots <- struct{}{}:
		case werr := <-r.watched:
			err = fmt.Errorf("watching the job stream: %v", werr)
		case <-postCtx.Done():
		}
		if err != nil || postCtx.Err() != nil {
			break
		}
		select {
		case todo <- struct{}{}:
		case <-postCtx.Done():
		}
	}
	close(todo)
	if perr := posters.Wait(); perr != nil && err == nil {
		err = fmt.Errorf("posting jobs: %w", perr)
	}
	return err
}

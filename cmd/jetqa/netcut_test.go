package main

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// blackhole is a TCP proxy between a worker and NATS whose link can be
// cut: while cut, the bytes of every connection wait, as on a network
// whose packets vanish (nobody is told, nothing is reset), and flow again
// when it is mended.
type blackhole struct {
	ln net.Listener
	to string

	mu   sync.Mutex
	open chan struct{} // closed while the link is up
}

func newBlackhole(t *testing.T, to string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, to: to, open: make(chan struct{})}
	close(b.open)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go b.serve(c)
		}
	}()
	return b
}

func (b *blackhole) url() string { return "nats://" + b.ln.Addr().String() }

func (b *blackhole) serve(c net.Conn) {
	defer c.Close()
	up, err := net.Dial("tcp", b.to)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { b.pipe(up, c); done <- struct{}{} }()
	go func() { b.pipe(c, up); done <- struct{}{} }()
	<-done
}

// pipe copies from src to dst, holding each piece while the link is cut.
func (b *blackhole) pipe(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			b.mu.Lock()
			open := b.open
			b.mu.Unlock()
			<-open
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// cut stops the link for d, then mends it.
func (b *blackhole) cut(t *testing.T, d time.Duration) {
	t.Helper()
	b.mu.Lock()
	b.open = make(chan struct{})
	open := b.open
	b.mu.Unlock()
	t.Logf("network of the worker cut for %s", d)
	time.AfterFunc(d, func() {
		close(open)
		t.Logf("network of the worker mended")
	})
}

// auditJob reads a job's events and checks the promises of a fault: one
// final result with a reason, each module started and finished once, no
// event after the end but the ones that may come then.
func auditJob(t *testing.T, s *system, id int64) schemas.JobFinished {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	last, err := s.bus.LastSequence(ctx, streams.StreamJobs)
	if err != nil {
		t.Fatal(err)
	}
	var (
		fin      []schemas.JobFinished
		started  = map[string]int{}
		finished = map[string]int{}
		afterEnd []string
	)
	err = s.bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.JobSubject(id) + ".>"}},
		func(_ schemas.Event, p schemas.Payload, d streams.Delivery) error {
			switch p := p.(type) {
			case *schemas.JobFinished:
				fin = append(fin, *p)
			case *schemas.ModuleStarted:
				started[p.Module]++
			case *schemas.ModuleFinished:
				finished[p.Name]++
			case *schemas.JobRestarted, *schemas.JobFilesExpired, *schemas.JobDeleted:
			default:
				if len(fin) > 0 {
					afterEnd = append(afterEnd, p.Kind())
				}
			}
			if d.Sequence >= last || d.Pending == 0 {
				return streams.ErrStopWatch
			}
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if len(fin) != 1 || fin[0].Reason == "" && fin[0].Result != schemas.ResultPassed {
		t.Fatalf("job %d ended %d times: %+v", id, len(fin), fin)
	}
	for m, n := range started {
		if n != 1 || finished[m] > 1 {
			t.Errorf("job %d: module %s started %d times, finished %d times", id, m, n, finished[m])
		}
	}
	if len(afterEnd) > 0 {
		t.Errorf("job %d: events after its end: %v", id, afterEnd)
	}
	return fin[0]
}

// A worker's network is cut, silently, for less than the worker timeout
// (5 s here) while its job runs: nothing is lost or doubled, and the job
// passes. Cut for longer, the worker is offline: the job ends incomplete
// and is cloned once, the worker stops its VM when it is back, and runs
// the clone to passed.
func TestAWorkersNetworkIsCut(t *testing.T) {
	testos := testosDir(t)
	s := startServer(t)
	hole := newBlackhole(t, strings.TrimPrefix(s.nats, "nats://"))
	creds := s.issue(t, streams.RoleWorker, "cut")
	w := startJetqa(t, "cut", "worker", "--nats", hole.url(), "--creds", creds, "--host", "cut", "--data", t.TempDir(), "--accel", "tcg", "--heartbeat", "500ms", "--asset-paths", testosPath())

	t.Run("shorter than the worker timeout", func(t *testing.T) {
		id := s.post(t, demoSettings(testos))
		s.waitFor(t, id, 2*time.Minute, "a module started", isKind[*schemas.ModuleStarted])
		hole.cut(t, 3*time.Second)
		s.finish(t, id, 5*time.Minute)
		if fin := auditJob(t, s, id); fin.Result != schemas.ResultPassed {
			t.Fatalf("job %d: %s (%s)", id, fin.Result, fin.Reason)
		}
	})

	t.Run("longer than the worker timeout", func(t *testing.T) {
		id := s.post(t, demoSettings(testos))
		s.waitFor(t, id, 2*time.Minute, "a module started", isKind[*schemas.ModuleStarted])
		hole.cut(t, 15*time.Second)
		s.finish(t, id, time.Minute)
		fin := auditJob(t, s, id)
		if fin.Result != schemas.ResultIncomplete || !strings.Contains(fin.Reason, "went offline") {
			t.Fatalf("job %d: %s (%s), want incomplete: went offline", id, fin.Result, fin.Reason)
		}
		restarted := s.waitFor(t, id, time.Minute, "cloned", isKind[*schemas.JobRestarted]).(*schemas.JobRestarted)
		clone := s.finish(t, restarted.Clone, 5*time.Minute)
		if clone.Result != schemas.ResultPassed {
			t.Fatalf("clone %d: %s (%s)", restarted.Clone, clone.Result, clone.Reason)
		}
		auditJob(t, s, restarted.Clone)
		if vms := childrenNamed(w.Process.Pid, "qemu-system"); len(vms) != 0 {
			t.Errorf("the worker still runs QEMU %v after its jobs ended", vms)
		}
	})
}

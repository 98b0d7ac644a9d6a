package streams_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// smallDisk mounts a tmpfs of size under the test's directory: a disk the
// test may fill. It needs root (CAP_SYS_ADMIN), as make test has on a
// CI machine; without, the test is skipped and says so.
func smallDisk(t *testing.T, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "disk")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("SKIPPED, not checked: mounting a small disk needs root (CAP_SYS_ADMIN): %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// fill writes a file on dir's disk until the disk is full.
func fill(t *testing.T, dir string) (remove func()) {
	t.Helper()
	name := filepath.Join(dir, "filler")
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if !strings.Contains(err.Error(), "no space left") {
				t.Fatal(err)
			}
			break
		}
	}
	_ = f.Close()
	return func() {
		if err := os.Remove(name); err != nil {
			t.Fatal(err)
		}
	}
}

// logLines hands each log message to a channel, and to the test's log.
type logLines struct {
	slog.Handler
	lines chan string
}

func (h logLines) Handle(ctx context.Context, r slog.Record) error {
	select {
	case h.lines <- r.Message:
	default:
	}
	return h.Handler.Handle(ctx, r)
}

func waitLine(ctx context.Context, t *testing.T, lines <-chan string, want string) {
	t.Helper()
	for {
		select {
		case l := <-lines:
			if strings.Contains(l, want) {
				return
			}
		case <-ctx.Done():
			t.Fatalf("no log line with %q", want)
		}
	}
}

// The server's disk fills up: jetqa's log says so, naming the directory,
// instead of only NATS's own log file; once there is room again, the
// server stores events again without a restart, and keeps what it had.
func TestAFullServerDiskIsToldAndOutlived(t *testing.T) {
	dir := smallDisk(t, "128m")
	lines := make(chan string, 1024)
	log := slog.New(logLines{natstest.Logger(t).Handler(), lines})
	ns, err := streams.StartServer(streams.ServerConfig{Port: -1, DataDir: dir, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	bus, err := streams.Connect(ctx, ns.ClientURL(), "test", natstest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer bus.Close()
	if err := bus.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	created := schemas.JobCreated{Settings: map[string]string{"TEST": "before"}}
	if _, err := bus.Append(ctx, 1, created); err != nil {
		t.Fatal(err)
	}

	// Jobs are created until the full disk refuses one.
	free := fill(t, dir)
	acked := []int64{1}
	for id := int64(2); ; id++ {
		try, stop := context.WithTimeout(ctx, 3*time.Second)
		_, err = bus.Append(try, id, created)
		stop()
		if err != nil {
			t.Logf("job %d refused: %v", id, err)
			break
		}
		acked = append(acked, id)
		if id > 1000 {
			t.Fatal("a thousand events were stored on a full disk")
		}
	}
	waitLine(ctx, t, lines, "the disk of the jetqa server is full")

	free()
	waitLine(ctx, t, lines, "JetStream started again")
	next := acked[len(acked)-1] + 1
	for {
		try, stop := context.WithTimeout(ctx, 3*time.Second)
		_, err = bus.Append(try, next, created)
		stop()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("no event stored after the disk had room again: %v", err)
		}
	}
	// Nothing the server acknowledged was lost.
	for _, id := range acked {
		agg, err := bus.LoadJob(ctx, id)
		if err != nil || agg.Settings["TEST"] != "before" {
			t.Errorf("job %d, stored before or while the disk was full: %+v, %v", id, agg, err)
		}
	}
}

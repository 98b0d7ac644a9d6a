package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// TestMain lets a test run the jetqa command itself in a child process:
// with JETQA_RUN_MAIN set, or run by QEMU as the guest bridge of a job's
// worker in this process, the test binary is jetqa.
func TestMain(m *testing.M) {
	if os.Getenv("JETQA_RUN_MAIN") == "1" || len(os.Args) > 1 && os.Args[1] == guestBridgeCommand {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// childrenNamed lists the processes whose parent is pid and whose command
// name starts with prefix.
func childrenNamed(pid int, prefix string) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(stat)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < 0 {
			continue
		}
		fields := strings.Fields(s[close+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(pid) && strings.HasPrefix(s[open+1:close], prefix) {
			out = append(out, child)
		}
	}
	return out
}

// TestSIGTERMStopsEverythingWithTheVM runs `jetqa up` as a process, starts
// a job, and sends SIGTERM while its VM runs: jetqa exits 0 and its QEMU is
// gone.
func TestSIGTERMStopsEverythingWithTheVM(t *testing.T) {
	testos := testosDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	data := t.TempDir()
	cmd := exec.CommandContext(ctx, os.Args[0], "up", "--data", data, "--listen", "127.0.0.1:0", "--nats-port", "-1", "--accel", "tcg", "--matchers", "1", "--asset-paths", testosPath())
	cmd.Env = append(os.Environ(), "JETQA_RUN_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(stderr)
	var api, natsURL string
	for api == "" && lines.Scan() {
		line := lines.Text()
		t.Log(line)
		if strings.HasPrefix(line, "jetqa is up:") {
			_, _ = fmt.Sscanf(line, "jetqa is up: API %s NATS %s", &api, &natsURL)
			api, natsURL = strings.TrimSuffix(api, ","), strings.TrimSuffix(natsURL, ",")
		}
	}
	if api == "" {
		t.Fatal("jetqa up did not say where it listens")
	}
	logDone := make(chan struct{})
	go func() {
		defer close(logDone)
		for lines.Scan() {
			t.Log(lines.Text())
		}
	}()

	s := &system{api: api}
	s.key = localKey(t, data, api)
	id := s.post(t, demoSettings(testos))
	admin, err := streams.LoadIdentity(filepath.Join(data, adminCreds))
	if err != nil {
		t.Fatal(err)
	}
	bus, err := streams.ConnectTo(ctx, streams.Dial{URLs: natsURL, Identity: &admin}, "shutdown-test", nil)
	if err != nil {
		t.Fatal(err)
	}
	err = bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.JobSubject(id) + ".module"}},
		func(_ schemas.Event, p schemas.Payload, _ streams.Delivery) error {
			if _, ok := p.(*schemas.ModuleStarted); ok {
				return streams.ErrStopWatch
			}
			return nil
		})
	bus.Close()
	if err != nil {
		t.Fatalf("job %d never started a module: %v", id, err)
	}
	vms := childrenNamed(cmd.Process.Pid, "qemu-system")
	if len(vms) != 1 {
		t.Fatalf("jetqa runs %d QEMU processes, want 1", len(vms))
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	<-logDone
	if err := cmd.Wait(); err != nil {
		t.Fatalf("jetqa up after SIGTERM: %v", err)
	}
	if err := syscall.Kill(vms[0], 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("QEMU (pid %d) outlived jetqa: kill 0 says %v", vms[0], err)
	}
}

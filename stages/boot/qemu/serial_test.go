package qemu_test

import (
	"context"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"jetqa/stages/boot/qemu"
)

// feed writes chunks to log from another goroutine, the way the VM's
// serial reader does.
func feed(log *qemu.SerialLog, chunks ...string) {
	go func() {
		for _, c := range chunks {
			log.Write([]byte(c))
		}
	}()
}

func TestWaitForMatchesOutputThatArrivesLater(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []string
		re     string
		from   int64
		match  string
		end    int64
	}{
		{"one write", []string{"login: "}, `login: $`, 0, "login: ", 7},
		{"pattern across writes", []string{"lo", "g", "in: "}, `login: `, 0, "login: ", 7},
		{"regexp groups", []string{"exit code: 17\n"}, `exit code: \d+`, 0, "exit code: 17", 13},
		{"output before from cannot match", []string{"login: ", "Password: ", "login: "}, `login: `, 7, "login: ", 24},
		{"from past the end waits for more", []string{"ab", "cab"}, `ab`, 3, "ab", 5},
		{"negative from means the start", []string{"ok"}, `ok`, -5, "ok", 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			log := qemu.NewSerialLog()
			feed(log, tc.chunks...)
			match, end, err := log.WaitFor(ctx, regexp.MustCompile(tc.re), tc.from)
			if err != nil {
				t.Fatal(err)
			}
			if match != tc.match || end != tc.end {
				t.Errorf("WaitFor = %q, %d; want %q, %d", match, end, tc.match, tc.end)
			}
		})
	}
}

func TestWaitForsContinueFromEachOthersEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	log := qemu.NewSerialLog()
	feed(log, "# ", "echo 1\n1\n# ", "echo 2\n2\n# ")
	prompt := regexp.MustCompile(`# `)
	var end int64
	for i := range 3 {
		_, e, err := log.WaitFor(ctx, prompt, end)
		if err != nil {
			t.Fatalf("prompt %d: %v", i+1, err)
		}
		end = e
	}
	if end != log.Len() {
		t.Errorf("third prompt ends at %d, log has %d bytes", end, log.Len())
	}
	if got := string(log.Bytes(end - 4)); got != "2\n# " {
		t.Errorf("Bytes(end-4) = %q, want the last answer and prompt", got)
	}
}

func TestWaitForDeadlineSaysWhatWasAwaited(t *testing.T) {
	log := qemu.NewSerialLog()
	log.Write([]byte(strings.Repeat("early noise ", 100) + "the last words"))
	ctx, cancel := context.WithDeadline(t.Context(), time.Now()) // already over
	defer cancel()
	_, _, err := log.WaitFor(ctx, regexp.MustCompile(`login: `), 0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	msg := err.Error()
	for _, want := range []string{"/login: /", "the last words"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not mention %q", msg, want)
		}
	}
	if len(msg) > 400 {
		t.Errorf("error is %d bytes; it should show only the latest output", len(msg))
	}
}

func TestWaitForEndsWhenTheLogCloses(t *testing.T) {
	log := qemu.NewSerialLog()
	log.Write([]byte("Power down.\n"))
	go log.CloseWithError(errors.New("qemu exited after shutdown (guest-shutdown)"))

	// No deadline: only the close can end this wait.
	_, _, err := log.WaitFor(t.Context(), regexp.MustCompile(`login: `), 0)
	if !errors.Is(err, qemu.ErrSerialClosed) || !strings.Contains(err.Error(), "guest-shutdown") {
		t.Fatalf("err = %v, want ErrSerialClosed with the reason", err)
	}
	// What came before the end still matches.
	if m, _, err := log.WaitFor(t.Context(), regexp.MustCompile(`Power down`), 0); err != nil || m != "Power down" {
		t.Errorf("WaitFor after close = %q, %v", m, err)
	}
	if _, err := log.Write([]byte("late")); !errors.Is(err, qemu.ErrSerialClosed) {
		t.Errorf("Write after close = %v, want ErrSerialClosed", err)
	}
}

func TestManyWaitersWakeOnOneWrite(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	log := qemu.NewSerialLog()
	errs := make(chan error)
	for range 10 {
		go func() {
			_, _, err := log.WaitFor(ctx, regexp.MustCompile(`ready`), 0)
			errs <- err
		}()
	}
	log.Write([]byte("ready"))
	for range 10 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

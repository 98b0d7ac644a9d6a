package qemu

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
)

// ErrSerialClosed says a SerialLog will not grow any more, usually because
// QEMU exited; WaitFor returns it (wrapped with the reason) instead of
// waiting for its deadline.
var ErrSerialClosed = errors.New("serial log closed")

// tailSize is how much of the latest output a failed WaitFor shows.
const tailSize = 200

// Finder is what WaitFor looks for: a *regexp.Regexp, or another engine's
// pattern (os-autoinst's tests use Perl's).
type Finder interface {
	FindIndex(b []byte) []int
	String() string
}

var _ Finder = (*regexp.Regexp)(nil)

// SerialLog is the append-only record of what a guest wrote to its serial
// port. Offsets are byte positions in that record: remember Len before
// typing a command, then WaitFor its answer from there, and output that
// came earlier cannot match by accident.
//
// A SerialLog is an io.Writer for whoever feeds it (the VM's reader of the
// serial socket); every method is safe for concurrent use.
type SerialLog struct {
	mu   sync.Mutex
	data []byte
	// grew is closed, and replaced, whenever data grows or the log
	// closes: a broadcast that waiters can select on with their context.
	grew   chan struct{}
	endErr error // non-nil once closed
}

// NewSerialLog returns an empty, open log.
func NewSerialLog() *SerialLog {
	return &SerialLog{grew: make(chan struct{})}
}

// Write appends p and wakes the waiters. It fails once the log is closed.
func (s *SerialLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.endErr != nil {
		return 0, s.endErr
	}
	if len(p) == 0 {
		return 0, nil
	}
	s.data = append(s.data, p...)
	close(s.grew)
	s.grew = make(chan struct{})
	return len(p), nil
}

// CloseWithError marks the end of the output; cause (may be nil) says why
// and ends up in the errors of WaitFor. Only the first call counts.
func (s *SerialLog) CloseWithError(cause error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.endErr != nil {
		return
	}
	s.endErr = ErrSerialClosed
	if cause != nil {
		s.endErr = fmt.Errorf("%w: %w", ErrSerialClosed, cause)
	}
	close(s.grew)
}

// Len is the number of bytes received so far: the offset the next byte
// will have.
func (s *SerialLog) Len() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(len(s.data))
}

// Bytes returns a copy of the output from offset from to the end.
func (s *SerialLog) Bytes(from int64) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	from = min(max(from, 0), int64(len(s.data)))
	return append([]byte(nil), s.data[from:]...)
}

// WaitFor waits until re matches the output after offset from and returns
// the match and the offset just past it, from which the next WaitFor can
// continue. It fails when ctx ends or the log closes first; the error says
// what was awaited and shows the latest output.
//
// Each wake-up matches re against all output after from again, so
// patterns can span writes; keep from recent to keep that cheap.
func (s *SerialLog) WaitFor(ctx context.Context, re Finder, from int64) (match string, end int64, err error) {
	from = max(from, 0)
	for {
		s.mu.Lock()
		// Bytes below len(data) never change, so the snapshot can be
		// searched without the lock while writers append.
		data, grew, endErr := s.data, s.grew, s.endErr
		s.mu.Unlock()

		if from < int64(len(data)) {
			if loc := re.FindIndex(data[from:]); loc != nil {
				return string(data[from+int64(loc[0]) : from+int64(loc[1])]), from + int64(loc[1]), nil
			}
		}
		if endErr != nil {
			return "", 0, s.waitError(re, from, data, endErr)
		}
		select {
		case <-grew:
		case <-ctx.Done():
			return "", 0, s.waitError(re, from, data, context.Cause(ctx))
		}
	}
}

func (s *SerialLog) waitError(re Finder, from int64, data []byte, cause error) error {
	tail := data[max(len(data)-tailSize, 0):]
	return fmt.Errorf("serial: waiting for /%s/ after offset %d of %d: %w; last output: %q", re, from, len(data), cause, tail)
}

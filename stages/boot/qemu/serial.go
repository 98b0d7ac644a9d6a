package qemu

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"
)

// ErrSerialClosed says a SerialLog will not grow any more, usually because
// QEMU exited; WaitFor returns it (wrapped with the reason) instead of
// waiting for its deadline.
var ErrSerialClosed = errors.New("serial log closed")

// tailSize is how much of the latest output a failed WaitFor shows.
const tailSize = 200

// keepSerial is how much of the latest output a SerialLog keeps in memory
// (QEMU writes all of it to the VM's serial log file): when it holds
// twice this, it drops the older half. A guest that floods its console
// costs bounded memory.
var keepSerial = 8 << 20

// A WaitFor that found nothing in more than rescanFrom bytes searches
// again only once a quarter more has arrived, or rescanAfter has passed:
// a flood costs searching a few times what arrives, not the square of it.
const (
	rescanFrom  = 64 << 10
	rescanAfter = 200 * time.Millisecond
)

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
// serial socket); every method is safe for concurrent use. It keeps the
// latest keepSerial to 2*keepSerial bytes: older output is gone from
// Bytes and WaitFor, which start where what is kept starts. So a guest
// that writes more than that between two searches of a WaitFor can pass
// output it never searched; the VM's serial log file keeps all of it.
type SerialLog struct {
	mu sync.Mutex
	// data is the output kept, from offset base on. Bytes of it never
	// change once written: dropping old output makes a new slice.
	data []byte
	base int64
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
	if len(s.data)+len(p) > 2*keepSerial {
		drop := min(len(s.data), len(s.data)+len(p)-keepSerial)
		kept := make([]byte, len(s.data)-drop, max(2*keepSerial, len(s.data)-drop+len(p)))
		copy(kept, s.data[drop:])
		s.data, s.base = kept, s.base+int64(drop)
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
	return s.base + int64(len(s.data))
}

// Bytes returns a copy of the output from offset from (or from the oldest
// kept) to the end.
func (s *SerialLog) Bytes(from int64) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := min(max(from-s.base, 0), int64(len(s.data)))
	return append([]byte(nil), s.data[i:]...)
}

// WaitFor waits until re matches the output after offset from and returns
// the match and the offset just past it, from which the next WaitFor can
// continue. It fails when ctx ends or the log closes first; the error says
// what was awaited and shows the latest output.
//
// Each search matches re against all kept output after from again, so
// patterns can span writes; keep from recent to keep that cheap.
func (s *SerialLog) WaitFor(ctx context.Context, re Finder, from int64) (match string, end int64, err error) {
	var (
		scanned int64 // how far the last search that found nothing went
		waited  *time.Timer
	)
	defer func() {
		if waited != nil {
			waited.Stop()
		}
	}()
	for {
		s.mu.Lock()
		// Bytes of data never change, so the snapshot can be searched
		// without the lock while writers append.
		data, base, grew, endErr := s.data, s.base, s.grew, s.endErr
		s.mu.Unlock()
		from = max(from, base)
		last := base + int64(len(data))

		if search := last - from; search > 0 && (endErr != nil || search <= rescanFrom || last-scanned >= (scanned-from)/4 || waited == nil) {
			if loc := re.FindIndex(data[from-base:]); loc != nil {
				return string(data[from-base+int64(loc[0]) : from-base+int64(loc[1])]), from + int64(loc[1]), nil
			}
			scanned = last
			if search > rescanFrom {
				if waited == nil {
					waited = time.NewTimer(rescanAfter)
				} else {
					waited.Reset(rescanAfter)
				}
			}
		}
		if endErr != nil {
			return "", 0, s.waitError(re, from, data, base, endErr)
		}
		var rescan <-chan time.Time
		if waited != nil {
			rescan = waited.C
		}
		select {
		case <-grew:
		case <-rescan:
			scanned = from // what arrived since is searched now
		case <-ctx.Done():
			return "", 0, s.waitError(re, from, data, base, context.Cause(ctx))
		}
	}
}

func (s *SerialLog) waitError(re Finder, from int64, data []byte, base int64, cause error) error {
	tail := data[max(len(data)-tailSize, 0):]
	return fmt.Errorf("serial: waiting for /%s/ after offset %d of %d: %w; last output: %q", re, from, base+int64(len(data)), cause, tail)
}

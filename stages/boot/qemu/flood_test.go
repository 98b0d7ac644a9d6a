package qemu

import (
	"bytes"
	"context"
	"regexp"
	"sync/atomic"
	"testing"
	"time"
)

// countingFinder counts the bytes searched.
type countingFinder struct {
	*regexp.Regexp
	searched atomic.Int64
}

func (f *countingFinder) FindIndex(b []byte) []int {
	f.searched.Add(int64(len(b)))
	return f.Regexp.FindIndex(b)
}

// A guest floods its serial console while a test waits for a line: the
// log keeps a bounded window of the latest output, and the wait searches
// a few times what arrives, not the square of it; the line is found.
func TestASerialFloodCostsBoundedMemoryAndSearching(t *testing.T) {
	defer func(was int) { keepSerial = was }(keepSerial)
	keepSerial = 1 << 20
	log := NewSerialLog()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	re := &countingFinder{Regexp: regexp.MustCompile(`login: done`)}
	type found struct {
		match string
		err   error
	}
	result := make(chan found, 1)
	go func() {
		m, _, err := log.WaitFor(ctx, re, 0)
		result <- found{m, err}
	}()
	chunk := bytes.Repeat([]byte("flood flood flood flood flood flood flood flood\n"), 85) // 4 KiB
	written := 0
	for written < 16<<20 {
		n, err := log.Write(chunk)
		if err != nil {
			t.Fatal(err)
		}
		written += n
		log.mu.Lock()
		kept := len(log.data)
		log.mu.Unlock()
		if kept > 2*keepSerial {
			t.Fatalf("%d bytes kept after %d written, bound %d", kept, written, 2*keepSerial)
		}
	}
	if _, err := log.Write([]byte("login: done\n")); err != nil {
		t.Fatal(err)
	}
	r := <-result
	if r.err != nil || r.match != "login: done" {
		t.Fatalf("WaitFor: %q, %v", r.match, r.err)
	}
	if got := log.Len(); got != int64(written)+12 {
		t.Errorf("Len %d, want %d", got, written+12)
	}
	if searched := re.searched.Load(); searched > 10*int64(written) {
		t.Errorf("searched %d MiB for %d MiB written", searched>>20, written>>20)
	} else {
		t.Logf("searched %d MiB for %d MiB written", searched>>20, written>>20)
	}
}

package boot

import (
	"context"
	"sync"
)

// Slot is one worker instance's VM, shared by the boot stages that take
// jobs for it from several servers (a worker host serving two jetqa
// servers, as openQA's HOST = a b): one job at a time, whichever server
// it comes from.
type Slot struct {
	mu     sync.Mutex
	holder *Stage
	free   chan struct{} // closed when the slot is let go
}

// NewSlot returns a free slot.
func NewSlot() *Slot { return &Slot{} }

// take waits until the slot is free and takes it for s.
func (sl *Slot) take(ctx context.Context, s *Stage) error {
	for {
		sl.mu.Lock()
		if sl.holder == nil {
			sl.holder, sl.free = s, make(chan struct{})
			sl.mu.Unlock()
			return nil
		}
		free := sl.free
		sl.mu.Unlock()
		select {
		case <-free:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release lets the slot go.
func (sl *Slot) release() {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	sl.holder = nil
	close(sl.free)
}

// heldByOther says whether another stage than s runs the instance's VM.
func (sl *Slot) heldByOther(s *Stage) bool {
	sl.mu.Lock()
	defer sl.mu.Unlock()
	return sl.holder != nil && sl.holder != s
}

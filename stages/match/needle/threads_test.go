package needle

import (
	"runtime"
	"testing"
)

func TestLimitThreads(t *testing.T) {
	defer LimitThreads(runtime.GOMAXPROCS(0))
	for _, n := range []int{1, 2} {
		LimitThreads(n)
		if got := threads(); got != n {
			t.Errorf("LimitThreads(%d): OpenCV uses %d threads", n, got)
		}
	}
	LimitThreads(0)
	if got := threads(); got != 1 {
		t.Errorf("LimitThreads(0): OpenCV uses %d threads, want 1", got)
	}
}

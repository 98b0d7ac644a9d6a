package needle

// #cgo CXXFLAGS: -std=c++11 -O2
// #cgo pkg-config: opencv4
// #include "threads.h"
import "C"

// LimitThreads makes OpenCV use at most n threads for one call; its
// default is one per CPU, whatever GOMAXPROCS says. A process that may use
// n cores (GOMAXPROCS) and searches areas in parallel itself gains nothing
// from more: a matcher confined to one core would take a second one for
// its DFTs, and the pool's goroutines would compete with OpenCV's threads.
func LimitThreads(n int) { C.jetqa_set_threads(C.int(max(1, n))) }

// threads is how many threads OpenCV uses for one call.
func threads() int { return int(C.jetqa_threads()) }

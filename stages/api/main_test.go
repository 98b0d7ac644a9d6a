package api

import (
	"testing"

	"jetqa/streams/natstest"
)

// TestMain lets BenchmarkRebuild's NATS server run in a process of its own.
func TestMain(m *testing.M) { natstest.Main(m) }

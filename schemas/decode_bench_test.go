package schemas_test

import (
	"testing"

	"jetqa/internal/benchdata"
	"jetqa/schemas"
)

// BenchmarkDecodeAs decodes the events of a job's life as the read
// model's rebuild does, one of each kind per op.
func BenchmarkDecodeAs(b *testing.B) {
	bodies := jobLifeBodies(b)
	b.ReportAllocs()
	for b.Loop() {
		for _, bd := range bodies {
			if _, _, err := schemas.DecodeAs(bd.kind, bd.data); err != nil {
				b.Fatal(err)
			}
		}
	}
}

type benchBody struct {
	kind string
	data []byte
}

func jobLifeBodies(b *testing.B) []benchBody {
	life := benchdata.Life(schemas.WorkerRef{Host: "worker-01.example", Instance: 3}, 1)
	var bodies []benchBody
	for _, p := range life {
		ev, err := schemas.NewEvent(7, "bench", p)
		if err != nil {
			b.Fatal(err)
		}
		data, err := ev.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		bodies = append(bodies, benchBody{ev.Kind, data})
	}
	return bodies
}

func BenchmarkDecodeAsKinds(b *testing.B) {
	for _, bd := range jobLifeBodies(b) {
		b.Run(bd.kind, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := schemas.DecodeAs(bd.kind, bd.data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package streams

import (
	"testing"

	"jetqa/schemas"
)

// FuzzDecodeAndFold feeds arbitrary message bodies through what every
// consumer does with one: decode the envelope and payload, then fold it into
// a job aggregate. Bad input must come out as an error (which Consume
// dead-letters), never as a panic.
func FuzzDecodeAndFold(f *testing.F) {
	for _, seed := range []string{
		`{"kind":"job.created.v1","job":1,"data":{"settings":{"TEST":"x"}}}`,
		`{"kind":"job.assigned.v1","job":1,"data":{"worker":{"host":"h","instance":1}}}`,
		`{"kind":"job.finished.v1","job":1,"data":{"result":"passed"}}`,
		`{"kind":"job.exploded.v9","job":1,"data":{}}`,
		`{"kind":"module.finished.v1","job":1,"data":{"name":"boot","details":[{"kind":"match"}]}}`,
		`{"kind":"job.created.v1","data":null}`,
		`not json`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, kind := range []string{"", "job.created.v1", "module.finished.v1", "job.exploded.v9"} {
			fold(t, kind, data)
		}
	})
}

// fold decodes a body as if its header named kind ("" for no header) and
// folds it.
func fold(t *testing.T, kind string, data []byte) {
	ev, p, err := decode(kind, data)
	if err != nil {
		return
	}
	if p.Kind() != ev.Kind {
		t.Errorf("event of kind %s decoded into %s", ev.Kind, p.Kind())
	}
	agg := &schemas.JobAggregate{}
	_ = agg.Check(p)
	_ = agg.Apply(1, ev, p)
}

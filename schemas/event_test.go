package schemas

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestEveryKindRoundTrips(t *testing.T) {
	for _, newPayload := range payloads {
		p := newPayload()
		kind := p.Kind()
		if !strings.HasSuffix(kind, ".v1") {
			t.Errorf("kind %q has no version suffix", kind)
		}
		ev, err := NewEvent(7, "test@host", p)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		wire, err := ev.Marshal()
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if !json.Valid(wire) {
			t.Fatalf("%s: not JSON: %s", kind, wire)
		}
		back, err := Unmarshal(wire)
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if back.Kind != kind || back.Job != 7 || back.Source != "test@host" {
			t.Errorf("%s: envelope came back as %+v", kind, back)
		}
		got, err := back.Decode()
		if err != nil {
			t.Fatalf("%s: %v", kind, err)
		}
		if reflect.TypeOf(got) != reflect.TypeOf(p) {
			t.Errorf("%s: decoded into %T, want %T", kind, got, p)
		}
	}
}

func TestDecodeKeepsFields(t *testing.T) {
	in := TestsFinished{
		Worker: WorkerRef{Host: "w1", Instance: 2}, Result: ResultFailed, Reason: "shell: boom",
		Modules:    []ModuleResult{{Name: "boot", Result: ResultPassed, Details: []Step{{Kind: "match", Needle: "prompt", Similarity: 0.99}}}},
		ResultsDir: "/r",
	}
	ev, err := NewEvent(3, "", in)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ev.Decode()
	if err != nil {
		t.Fatal(err)
	}
	if got := *p.(*TestsFinished); !reflect.DeepEqual(got, in) {
		t.Errorf("decoded %+v, want %+v", got, in)
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, wire string
		unknown    bool
	}{
		{"not json", `{"kind":`, false},
		{"no kind", `{"job":1,"data":{}}`, false},
		{"unknown kind", `{"kind":"job.exploded.v9","data":{}}`, true},
		{"payload of the wrong shape", `{"kind":"job.created.v1","data":{"settings":[1,2]}}`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ev, err := Unmarshal([]byte(tc.wire))
			if err == nil {
				_, err = ev.Decode()
			}
			if err == nil {
				t.Fatal("decoded without error")
			}
			if errors.Is(err, ErrUnknownKind) != tc.unknown {
				t.Errorf("ErrUnknownKind = %v for %v", !tc.unknown, err)
			}
		})
	}
}

func FuzzDecodeEvent(f *testing.F) {
	for _, newPayload := range payloads {
		ev, _ := NewEvent(1, "seed", newPayload())
		wire, _ := json.Marshal(ev)
		f.Add(wire)
	}
	f.Add([]byte(`{"kind":"job.created.v1","data":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := Unmarshal(data)
		if err != nil {
			return
		}
		_, _ = ev.Decode()
		// What was read is written back as JSON that reads the same.
		again, err := ev.Marshal()
		if err != nil {
			t.Fatalf("%q read, but not written: %v", data, err)
		}
		back, err := Unmarshal(again)
		if err != nil {
			t.Fatalf("%q written as %q, which does not read: %v", data, again, err)
		}
		if back.Kind != ev.Kind || back.Job != ev.Job || back.Source != ev.Source || !back.Time.Equal(ev.Time) {
			t.Fatalf("%q came back as %+v, want %+v", data, back, ev)
		}
	})
}

func TestJobName(t *testing.T) {
	c := JobCreated{Settings: map[string]string{"DISTRI": "testos", "VERSION": "1", "ARCH": "x86_64", "BUILD": "7", "TEST": "demo"}}
	if got, want := c.Name(), "testos-1-x86_64-Build7-demo"; got != want {
		t.Errorf("Name() = %q, want %q", got, want)
	}
}

func TestWorkerClasses(t *testing.T) {
	got := WorkerClasses(" qemu_x86_64, tap ,,")
	if !reflect.DeepEqual(got, []string{"qemu_x86_64", "tap"}) {
		t.Errorf("got %q", got)
	}
}

// An envelope read from the wire, its data as it came (spaces and all), is
// written back as JSON that reads the same.
func TestMarshalKeepsDataAsItCame(t *testing.T) {
	wire := []byte(`{"kind":"job.created.v1","job":4,"time":"2026-01-02T03:04:05Z","data": { "settings" : {"DISTRI": "x"} } }`)
	ev, err := Unmarshal(wire)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ev.Marshal()
	if err != nil || !json.Valid(again) {
		t.Fatalf("%s: %v", again, err)
	}
	back, err := Unmarshal(again)
	if err != nil {
		t.Fatal(err)
	}
	if back.Kind != ev.Kind || back.Job != 4 || !back.Time.Equal(ev.Time) || back.Source != "" {
		t.Errorf("envelope came back as %+v", back)
	}
	p, err := back.Decode()
	if err != nil || p.(*JobCreated).Settings["DISTRI"] != "x" {
		t.Errorf("data came back as %+v (%v)", p, err)
	}
	if _, err := (Event{Kind: "job.created.v1"}).Marshal(); err != nil {
		t.Errorf("an event without data: %v", err)
	}
}

package schemas

import (
	"testing"
	"time"
)

// BenchmarkDecodeAs decodes the events of a job's life as the read
// model's rebuild does, one of each kind per op.
func BenchmarkDecodeAs(b *testing.B) {
	bodies := jobLifeBodies(b)
	b.ReportAllocs()
	for b.Loop() {
		for _, bd := range bodies {
			if _, _, err := DecodeAs(bd.kind, bd.data); err != nil {
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
	settings := map[string]string{
		"DISTRI": "opensuse", "VERSION": "Tumbleweed", "FLAVOR": "DVD", "ARCH": "x86_64",
		"BUILD": "20250101", "TEST": "textmode", "MACHINE": "64bit", "WORKER_CLASS": "qemu_x86_64",
		"ISO":         "openSUSE-Tumbleweed-DVD-x86_64-Snapshot20250101-Media.iso",
		"CASEDIR":     "https://github.com/os-autoinst/os-autoinst-distri-opensuse.git#master",
		"NEEDLES_DIR": "https://github.com/os-autoinst/os-autoinst-needles-opensuse.git#master",
		"QEMURAM":     "2048", "HDDSIZEGB": "20",
	}
	w := WorkerRef{Host: "worker-01.example", Instance: 3}
	module := ModuleResult{Name: "boot_to_desktop", Result: ResultPassed, Duration: 42 * time.Second,
		Details: []Step{{Kind: "match", Result: "ok", Screenshot: "boot_to_desktop-1.png", Needle: "generic-desktop-20240101", Similarity: 0.97}}}
	life := []Payload{
		JobCreated{Settings: settings},
		JobAssigned{Worker: w},
		JobReady{Worker: w, Settings: settings, Assets: map[string]string{"ISO": "/var/lib/jetqa/cache/" + settings["ISO"]},
			CaseDir: "/var/lib/jetqa/tests/opensuse", NeedlesDir: "/var/lib/jetqa/tests/opensuse/products/opensuse/needles", JobDir: "/var/lib/jetqa/pool/3"},
		JobStarted{Worker: w, Accel: "kvm"},
		ModuleStarted{Module: module.Name},
		ModuleFinished{ModuleResult: module},
		TestsFinished{Worker: w, Result: ResultPassed, Modules: []ModuleResult{module}, ResultsDir: "/var/lib/jetqa/pool/3/results"},
		JobFinished{Result: ResultPassed, Modules: []ModuleResult{module}, Files: map[string]string{"autoinst-log.txt": "jobs/1/autoinst-log.txt"}},
	}
	var bodies []benchBody
	for _, p := range life {
		ev, err := NewEvent(7, "bench", p)
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
				if _, _, err := DecodeAs(bd.kind, bd.data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

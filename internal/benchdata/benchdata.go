// Package benchdata is the job the benchmarks of decoding, appending and
// rebuilding share: an openSUSE textmode job's settings and results, so
// each measures payloads of a realistic size.
package benchdata

import (
	"fmt"
	"time"

	"jetqa/schemas"
)

// Settings are the job's settings, a new map each call.
func Settings() map[string]string {
	return map[string]string{
		"DISTRI": "opensuse", "VERSION": "Tumbleweed", "FLAVOR": "DVD", "ARCH": "x86_64",
		"BUILD": "20250101", "TEST": "textmode", "MACHINE": "64bit", "WORKER_CLASS": "qemu_x86_64",
		"ISO":         "openSUSE-Tumbleweed-DVD-x86_64-Snapshot20250101-Media.iso",
		"CASEDIR":     "https://github.com/os-autoinst/os-autoinst-distri-opensuse.git#master",
		"NEEDLES_DIR": "https://github.com/os-autoinst/os-autoinst-needles-opensuse.git#master",
		"QEMURAM":     "2048", "HDDSIZEGB": "20",
	}
}

// Module is a passed module of one needle match, named name.
func Module(name string) schemas.ModuleResult {
	return schemas.ModuleResult{Name: name, Result: schemas.ResultPassed, Duration: 42 * time.Second,
		Details: []schemas.Step{{Kind: "match", Result: "ok", Screenshot: name + "-1.png", Needle: "generic-desktop-20240101", Similarity: 0.97}}}
}

// Life is the job's events from created to finished on worker w, with
// modules modules (boot_to_desktop, then boot_to_desktop_2 …).
func Life(w schemas.WorkerRef, modules int) []schemas.Payload {
	settings := Settings()
	life := []schemas.Payload{
		schemas.JobCreated{Settings: settings},
		schemas.JobAssigned{Worker: w},
		schemas.JobReady{Worker: w, Settings: settings, Assets: map[string]string{"ISO": "/var/lib/jetqa/cache/" + settings["ISO"]},
			CaseDir: "/var/lib/jetqa/tests/opensuse", NeedlesDir: "/var/lib/jetqa/tests/opensuse/products/opensuse/needles", JobDir: "/var/lib/jetqa/pool/7"},
		schemas.JobStarted{Worker: w, Accel: "kvm"},
	}
	results := make([]schemas.ModuleResult, modules)
	for i := range modules {
		name := "boot_to_desktop"
		if i > 0 {
			name = fmt.Sprintf("%s_%d", name, i+1)
		}
		results[i] = Module(name)
		life = append(life, schemas.ModuleStarted{Module: name}, schemas.ModuleFinished{ModuleResult: results[i]})
	}
	return append(life,
		schemas.TestsFinished{Worker: w, Result: schemas.ResultPassed, Modules: results, ResultsDir: "/var/lib/jetqa/pool/7/results"},
		schemas.JobFinished{Result: schemas.ResultPassed, Modules: results, Files: map[string]string{"autoinst-log.txt": "jobs/1/autoinst-log.txt"}})
}

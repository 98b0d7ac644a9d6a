package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWorkersINIFillsWhatFlagsDoNotSet(t *testing.T) {
	path := filepath.Join(t.TempDir(), "workers.ini")
	writeFile(t, path, `# as openQA's
[global]
HOST = tls://n1:4222,tls://n2:4222
WORKER_CLASS = qemu_x86_64
CACHEDIRECTORY = /var/lib/jetqa/cache
CACHELIMIT = 20.5
CACHEWORKERS = 3

[tls://n1:4222,tls://n2:4222]
CREDENTIALS = /etc/jetqa/w.creds
TLS_CA = /etc/jetqa/ca.pem

[2]
WORKER_CLASS = qemu_x86_64,tap
`)
	ini, err := readWorkersINI(path)
	if err != nil {
		t.Fatal(err)
	}
	var c workerConfig
	r := remote{nats: "nats://default:4222"}
	if err := ini.apply(&c, &r, map[string]bool{"cache-workers": true}); err != nil {
		t.Fatal(err)
	}
	if r.nats != "tls://n1:4222,tls://n2:4222" || r.creds != "/etc/jetqa/w.creds" || r.ca != "/etc/jetqa/ca.pem" {
		t.Errorf("server: %+v", r)
	}
	if c.CacheDir != "/var/lib/jetqa/cache" || c.CacheLimitGiB != 20.5 || c.CacheWorkers != 0 || c.WorkerClass != "qemu_x86_64" {
		t.Errorf("worker: %+v (a flag given on the command line must win)", c)
	}
	if c.ClassOf(2) != "qemu_x86_64,tap" || c.ClassOf(1) != "qemu_x86_64" {
		t.Errorf("instance classes: 1 %q, 2 %q", c.ClassOf(1), c.ClassOf(2))
	}
}

func TestWorkersINIErrorsSayWhatIsWrong(t *testing.T) {
	for content, want := range map[string]string{
		"[global]\nHOST\n":                     "neither a [section] nor KEY = VALUE",
		"[global]\nCACHELIMIT = lots\n":        "CACHELIMIT",
		"[global]\nHOST = nats://a nats://b\n": "one worker process serves one server",
	} {
		path := filepath.Join(t.TempDir(), "workers.ini")
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		ini, err := readWorkersINI(path)
		if err == nil {
			var c workerConfig
			var r remote
			err = ini.apply(&c, &r, map[string]bool{})
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error saying %q", content, err, want)
		}
	}
}

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
	servers, err := ini.apply(&c, r, map[string]bool{"cache-workers": true})
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 1 {
		t.Fatalf("%d servers, want 1", len(servers))
	}
	r = servers[0]
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
		"[global]\nHOST\n":                     "neither a [section] nor NAME = VALUE",
		"[global]\nCACHELIMIT = lots\n":        "CACHELIMIT",
		"[global]\nHOST = nats://a nats://b\n": "give each its own [nats://a] section",
	} {
		path := filepath.Join(t.TempDir(), "workers.ini")
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		ini, err := readWorkersINI(path)
		if err == nil {
			var c workerConfig
			var r remote
			_, err = ini.apply(&c, r, map[string]bool{})
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error saying %q", content, err, want)
		}
	}
}

func TestWorkersINIServesSeveralServers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "workers.ini")
	writeFile(t, path, "[global]\nHOST = tls://a:4222 tls://b1:4222,tls://b2:4222\n[tls://a:4222]\nCREDENTIALS = a.creds\nTLS_CA = a-ca.pem\n[tls://b1:4222,tls://b2:4222]\nCREDENTIALS = b.creds\n")
	ini, err := readWorkersINI(path)
	if err != nil {
		t.Fatal(err)
	}
	var c workerConfig
	servers, err := ini.apply(&c, remote{}, map[string]bool{})
	if err != nil {
		t.Fatal(err)
	}
	want := []remote{{nats: "tls://a:4222", creds: "a.creds", ca: "a-ca.pem"}, {nats: "tls://b1:4222,tls://b2:4222", creds: "b.creds"}}
	if len(servers) != 2 || servers[0] != want[0] || servers[1] != want[1] {
		t.Fatalf("servers %+v, want %+v", servers, want)
	}
}

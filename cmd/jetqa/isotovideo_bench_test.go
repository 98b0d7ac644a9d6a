package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/stages/api"
	"jetqa/stages/boot/qemu"
)

// BenchmarkDemoAgainstIsotovideo runs the testos demo (boot to the shell,
// type and check the screen, the serial port and commands' exit status)
// under os-autoinst's isotovideo from Debian's package, from its Perl
// port in deploy/testos/perl, and as a job of a running `jetqa up`, one
// after the other in each round, both on this machine's accelerator. It
// reports the medians of each's wall time and their ratio: isotovideo
// from its start to its end, jetqa from posting the job to its result
// (assets fetched, VM booted, modules, results stored).
func BenchmarkDemoAgainstIsotovideo(b *testing.B) {
	isotovideo, err := exec.LookPath("isotovideo")
	if err != nil {
		b.Skip("os-autoinst's isotovideo is not installed (make test-deps)")
	}
	testos := testosDir(b)
	perlDemo, err := filepath.Abs(filepath.Join("..", "..", "deploy", "testos", "perl"))
	if err != nil {
		b.Fatal(err)
	}
	apiURL, key := startUpProcess(b)
	settings := url.Values{}
	for k, v := range demoSettings(testos) {
		settings.Set(k, v)
	}
	var iso, jq []float64
	for b.Loop() {
		// isotovideo, in a pool directory of its own.
		pool := b.TempDir()
		vars := map[string]string{
			"DISTRI": "testos", "VERSION": "1", "FLAVOR": "demo", "ARCH": "x86_64", "TEST": "demo",
			"BACKEND": "qemu", "QEMURAM": "512", "QEMUCPUS": "1", "ISO": filepath.Join(testos, "testos.iso"),
			"CASEDIR": perlDemo, "PRODUCTDIR": perlDemo, "NEEDLES_DIR": filepath.Join(testos, "testos-tests", "needles"),
			// qemu-system-x86_64, not Debian's kvm, which always asks for KVM.
			"QEMU": "x86_64",
		}
		if !qemu.KVMUsable() {
			vars["QEMU_NO_KVM"] = "1" // os-autoinst enables KVM whenever /dev/kvm is there
		}
		data, _ := json.Marshal(vars)
		if err := os.WriteFile(filepath.Join(pool, "vars.json"), data, 0o644); err != nil {
			b.Fatal(err)
		}
		cmd := exec.Command(isotovideo)
		cmd.Dir = pool
		start := time.Now()
		out, err := cmd.CombinedOutput()
		took := time.Since(start)
		for _, m := range []string{"boot", "shell"} {
			var res struct{ Result string }
			data, rerr := os.ReadFile(filepath.Join(pool, "testresults", "result-"+m+".json"))
			if err != nil || rerr != nil || json.Unmarshal(data, &res) != nil || res.Result != "ok" {
				b.Fatalf("isotovideo: %v; module %s: %q %v\n%s", err, m, res.Result, rerr, tail(out, 3000))
			}
		}
		iso = append(iso, took.Seconds())

		// jetqa: the same demo, posted to the running server.
		start = time.Now()
		id := postSigned(b, apiURL, key, settings)
		var fin *schemas.JobFinished
		err = client{api: apiURL}.followEvents(context.Background(), id, 0, func(_ api.StreamedEvent, p schemas.Payload) {
			if f, ok := p.(*schemas.JobFinished); ok {
				fin = f
			}
		})
		if err != nil || fin == nil || fin.Result != "passed" {
			b.Fatalf("jetqa job %d: %v %+v", id, err, fin)
		}
		jq = append(jq, time.Since(start).Seconds())
		b.Logf("round %d: isotovideo %.1f s, jetqa %.1f s", len(iso), iso[len(iso)-1], jq[len(jq)-1])
	}
	mi, mj := median(iso), median(jq)
	b.ReportMetric(mi, "isotovideo-s")
	b.ReportMetric(mj, "jetqa-s")
	b.ReportMetric(mj/mi, "jetqa/isotovideo")
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// startUpProcess runs `jetqa up` as a child process on free ports and
// returns its API and the key it made for the local user.
func startUpProcess(b *testing.B) (string, apiCredential) {
	b.Helper()
	data := b.TempDir()
	apiURL := fmt.Sprintf("http://127.0.0.1:%d", freePorts(b, 1)[0])
	cmd := exec.Command(os.Args[0], "up", "--data", data, "--nats-port", "-1", "--listen", strings.TrimPrefix(apiURL, "http://"), "--asset-paths", testosPath())
	cmd.Env = append(os.Environ(), "JETQA_RUN_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	// `jetqa up` says it is up once its API key is written and its API
	// listens; requests wait in the listener until it serves.
	up := make(chan struct{})
	var log strings.Builder
	logged := make(chan struct{})
	go func() {
		defer close(logged)
		lines := bufio.NewScanner(stderr)
		for isUp := false; lines.Scan(); {
			switch {
			case !isUp && strings.HasPrefix(lines.Text(), "jetqa is up:"):
				isUp = true
				close(up)
			case !isUp:
				log.WriteString(lines.Text() + "\n")
			}
		}
	}()
	b.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		<-logged
		_ = cmd.Wait()
	})
	select {
	case <-up:
	case <-logged:
		b.Fatalf("jetqa up ended before it was up:\n%s", log.String())
	case <-time.After(time.Minute):
		b.Fatal("jetqa up was not up within a minute")
	}
	b.Setenv("JETQA_CLIENT_CONF", filepath.Join(data, clientConf))
	key, err := credentialFor(apiURL)
	if err != nil {
		b.Fatalf("jetqa up made no API key: %v", err)
	}
	return apiURL, key
}

func postSigned(b *testing.B, apiURL string, key apiCredential, form url.Values) int64 {
	b.Helper()
	resp := key.post(b, apiURL+"/api/v1/jobs", "application/x-www-form-urlencoded", []byte(form.Encode()))
	var out struct{ ID int64 }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.ID == 0 {
		b.Fatalf("post: %s %v", resp.Status, err)
	}
	return out.ID
}

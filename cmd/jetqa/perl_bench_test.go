package main

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-git/go-git/v5"

	"jetqa/schemas"
	"jetqa/stages/api"
)

// BenchmarkPerlJobAgainstStarlarkJob runs the testos demo's same steps
// (boot to the shell, type and check the screen, the serial port and
// commands' exit status) as a Starlark job (testos-tests) and as a Perl
// job (its os-autoinst port in deploy/testos/perl, run by os-autoinst's
// test side), one after the other on one `jetqa up`, and reports the
// medians of each's time from posting to its result and their ratio: what
// running a test in Perl costs over Starlark.
func BenchmarkPerlJobAgainstStarlarkJob(b *testing.B) {
	testos := testosDir(b)
	// The Perl port with the demo's needles, as a repository.
	dir := filepath.Join(b.TempDir(), "perl-demo")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join("..", "..", "deploy", "testos", "perl"))); err != nil {
		b.Fatal(err)
	}
	if err := os.CopyFS(filepath.Join(dir, "needles"), os.DirFS(filepath.Join(testos, "testos-tests", "needles"))); err != nil {
		b.Fatal(err)
	}
	repo, err := git.PlainInit(dir, false)
	if err != nil {
		b.Fatal(err)
	}
	commitAll(b, repo, "perl demo")

	apiURL, key := startUpProcess(b)
	run := func(settings map[string]string) float64 {
		form := url.Values{}
		for k, v := range settings {
			form.Set(k, v)
		}
		start := time.Now()
		id := postSigned(b, apiURL, key, form)
		var fin *schemas.JobFinished
		err := client{api: apiURL}.followEvents(context.Background(), id, 0, func(_ api.StreamedEvent, p schemas.Payload) {
			if f, ok := p.(*schemas.JobFinished); ok {
				fin = f
			}
		})
		if err != nil || fin == nil || fin.Result != schemas.ResultPassed {
			b.Fatalf("job %d (CASEDIR %s): %v %+v", id, settings["CASEDIR"], err, fin)
		}
		return time.Since(start).Seconds()
	}
	var star, perl []float64
	for b.Loop() {
		star = append(star, run(demoSettings(testos)))
		perl = append(perl, run(demoSettings(testos, "CASEDIR="+dir)))
		b.Logf("round %d: Starlark %.1f s, Perl %.1f s", len(star), star[len(star)-1], perl[len(perl)-1])
	}
	ms, mp := median(star), median(perl)
	b.ReportMetric(ms, "starlark-s")
	b.ReportMetric(mp, "perl-s")
	b.ReportMetric(mp/ms, "perl/starlark")
}

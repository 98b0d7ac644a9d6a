package api

import (
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"sync"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// BenchmarkListJobs serves GET /api/v1/jobs?limit=100 from a read model of
// 10 000 jobs, 20 000 requests on loopback from 8 clients at once, and the
// same number of requests to a plain net/http handler writing the same
// bytes, in the same run: requests/s and p99 of each, and their ratios.
// Run it once: -benchtime 1x.
func BenchmarkListJobs(b *testing.B) {
	const jobs, requests, clients = 10_000, 20_000, 8
	s := benchServer(jobs, nil)
	api := httptest.NewServer(s.Handler())
	defer api.Close()
	const path = "/api/v1/jobs?limit=100"
	plain, body := plainCopy(b, api.URL+path)
	defer plain.Close()

	for b.Loop() {
		refRate, refP99 := load(b, plain.URL+path, requests, clients)
		rate, p99 := load(b, api.URL+path, requests, clients)
		b.ReportMetric(rate, "req/s")
		b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
		b.ReportMetric(refRate, "ref-req/s")
		b.ReportMetric(float64(refP99.Microseconds())/1000, "ref-p99-ms")
		b.ReportMetric(refRate/rate, "x-ref-time")
		b.ReportMetric(float64(len(body))/1024, "KiB/response")
	}
}

// benchServer is an API whose read model holds jobs finished jobs, each
// with the modules given.
func benchServer(jobs int64, modules []schemas.ModuleResult) *Server {
	s := &Server{log: slog.New(slog.DiscardHandler), view: newProjection(), keys: NewKeys(nil),
		users: &uiUsers{users: map[string]streams.User{}, secret: []byte("a secret of the benchmark")},
		rows:  newHTMLCache(4096), modules: newHTMLCache(256)}
	if modules == nil {
		modules = []schemas.ModuleResult{{Name: "boot", Result: schemas.ResultPassed}}
	}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := int64(1); i <= jobs; i++ {
		settings := map[string]string{"DISTRI": "opensuse", "VERSION": "Tumbleweed", "FLAVOR": "DVD", "ARCH": "x86_64",
			"BUILD": fmt.Sprint(20260000 + i/100), "TEST": fmt.Sprintf("test%d", i%50), "MACHINE": "64bit"}
		start, fin := Time{t0}, Time{t0.Add(time.Duration(i) * time.Minute)}
		s.view.jobs[i] = &JobView{ID: i, Name: fmt.Sprintf("job-%d", i), State: schemas.StateDone, Result: schemas.ResultPassed,
			Settings: settings, Created: Time{t0}, Started: &start, Finished: &fin, Modules: modules}
	}
	return s
}

// plainCopy serves the bytes that url answers from a plain handler: the
// reference of the same run.
func plainCopy(b *testing.B, url string) (*httptest.Server, []byte) {
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("%s: %s %v", url, resp.Status, err)
	}
	ct := resp.Header.Get("Content-Type")
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", ct)
		_, _ = w.Write(body)
	})), body
}

// load sends requests GETs of url from clients at once and returns the
// requests per second and the 99th percentile of their latencies.
func load(b *testing.B, url string, requests, clients int) (perSecond float64, p99 time.Duration) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	lat := make([]time.Duration, requests)
	var next sync.Mutex
	n := 0
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for {
				next.Lock()
				i := n
				n++
				next.Unlock()
				if i >= requests {
					return
				}
				t := time.Now()
				resp, err := client.Get(url)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat[i] = time.Since(t)
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	sort.Slice(lat, func(a, c int) bool { return lat[a] < lat[c] })
	return float64(requests) / wall.Seconds(), lat[requests*99/100]
}

// BenchmarkUIPages serves the web UI's job list (50 jobs a page, newest
// first, with a filter that skips none) and a job page (8 modules of 12
// steps with screenshots, needle areas and candidates) from a read model
// of 100 000 jobs, 4 000 requests each from 8 clients at once, and the
// same bytes from a plain handler in the same run: p99 of each and their
// ratio. The goal is a p99 under 50 ms. Run it once: -benchtime 1x.
func BenchmarkUIPages(b *testing.B) {
	const jobs, requests, clients = 100_000, 4_000, 8
	var modules []schemas.ModuleResult
	for m := range 8 {
		mod := schemas.ModuleResult{Name: fmt.Sprintf("module%d", m), Result: schemas.ResultPassed, Duration: time.Minute}
		for st := range 12 {
			area := schemas.AreaMatch{X: 10, Y: 20, Width: 300, Height: 40, Similarity: 0.97, OK: true}
			mod.Details = append(mod.Details, schemas.Step{Kind: "match", Text: "assert_screen", Tags: []string{"desktop"}, Result: schemas.ResultPassed,
				Screenshot: fmt.Sprintf("module%d-%d.png", m, st), Needle: "desktop-20261201", NeedleHash: "ab12", Similarity: 0.97,
				Areas: []schemas.AreaMatch{area}, Candidates: []schemas.CandidateMatch{{Needle: "desktop-old", Hash: "cd34", Error: 0.2, Areas: []schemas.AreaMatch{area}}}})
		}
		modules = append(modules, mod)
	}
	s := benchServer(jobs, modules)
	api := httptest.NewServer(s.Handler())
	defer api.Close()
	for b.Loop() {
		for _, page := range []struct{ name, path string }{
			{"list", "/tests?result=passed,failed"},
			{"job", fmt.Sprintf("/tests/%d", jobs/2)},
		} {
			plain, body := plainCopy(b, api.URL+page.path)
			_, refP99 := load(b, plain.URL+page.path, requests, clients)
			_, p99 := load(b, api.URL+page.path, requests, clients)
			plain.Close()
			b.ReportMetric(float64(p99.Microseconds())/1000, page.name+"-p99-ms")
			b.ReportMetric(float64(refP99.Microseconds())/1000, page.name+"-ref-p99-ms")
			b.ReportMetric(float64(p99)/float64(refP99), page.name+"-x-ref-p99")
			b.ReportMetric(float64(len(body))/1024, page.name+"-KiB")
		}
	}
}

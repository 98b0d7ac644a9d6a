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
)

// BenchmarkListJobs serves GET /api/v1/jobs?limit=100 from a read model of
// 10 000 jobs, 20 000 requests on loopback from 8 clients at once, and the
// same number of requests to a plain net/http handler writing the same
// bytes, in the same run: requests/s and p99 of each, and their ratios.
// Run it once: -benchtime 1x.
func BenchmarkListJobs(b *testing.B) {
	const jobs, requests, clients = 10_000, 20_000, 8
	s := &Server{log: slog.New(slog.DiscardHandler), view: newProjection(), keys: NewKeys(nil)}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := int64(1); i <= jobs; i++ {
		settings := map[string]string{"DISTRI": "opensuse", "VERSION": "Tumbleweed", "FLAVOR": "DVD", "ARCH": "x86_64",
			"BUILD": fmt.Sprint(20260000 + i/100), "TEST": fmt.Sprintf("test%d", i%50), "MACHINE": "64bit"}
		start, fin := Time{t0}, Time{t0.Add(time.Duration(i) * time.Minute)}
		s.view.jobs[i] = &JobView{ID: i, Name: fmt.Sprintf("job-%d", i), State: schemas.StateDone, Result: schemas.ResultPassed,
			Settings: settings, Created: Time{t0}, Started: &start, Finished: &fin, Modules: []schemas.ModuleResult{{Name: "boot", Result: schemas.ResultPassed}}}
	}
	api := httptest.NewServer(s.Handler())
	defer api.Close()
	const path = "/api/v1/jobs?limit=100"
	resp, err := http.Get(api.URL + path)
	if err != nil {
		b.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 {
		b.Fatalf("%s: %s %v", path, resp.Status, err)
	}
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	}))
	defer plain.Close()

	run := func(url string) (perSecond float64, p99 time.Duration) {
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
		return requests / wall.Seconds(), lat[requests*99/100]
	}
	for b.Loop() {
		refRate, refP99 := run(plain.URL + path)
		rate, p99 := run(api.URL + path)
		b.ReportMetric(rate, "req/s")
		b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
		b.ReportMetric(refRate, "ref-req/s")
		b.ReportMetric(float64(refP99.Microseconds())/1000, "ref-p99-ms")
		b.ReportMetric(refRate/rate, "x-ref-time")
		b.ReportMetric(float64(len(body))/1024, "KiB/response")
	}
}

package api

import (
	"bytes"
	"cmp"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// The web UI: server-rendered pages (html/template) with a little
// JavaScript of its own for what changes while one looks — the job list,
// the test overview and a running job follow the events (Server-Sent
// Events), never a timer. Everything is in the binary: it works offline.
// Its paths are openQA's where openQA has the page (/tests, /tests/ID,
// /tests/overview, /admin/workers, /login, /api_keys).

//go:embed ui
var uiFiles embed.FS

// uiPages are the page templates, each with the layout, by file name.
var uiPages = func() map[string]*template.Template {
	pages := map[string]*template.Template{}
	names, err := fs.Glob(uiFiles, "ui/*.html")
	if err != nil {
		panic(err)
	}
	for _, name := range names {
		if name == "ui/layout.html" {
			continue
		}
		t := template.Must(template.New("layout.html").Funcs(uiFuncs).ParseFS(uiFiles, "ui/layout.html", "ui/parts.html", name))
		pages[strings.TrimPrefix(name, "ui/")] = t
	}
	return pages
}()

var uiFuncs = template.FuncMap{
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		d := time.Since(t).Round(time.Second)
		switch {
		case d < time.Minute:
			return fmt.Sprintf("%d s ago", int(d.Seconds()))
		case d < time.Hour:
			return fmt.Sprintf("%d min ago", int(d.Minutes()))
		case d < 48*time.Hour:
			return fmt.Sprintf("%d h ago", int(d.Hours()))
		}
		return fmt.Sprintf("%d days ago", int(d.Hours()/24))
	},
	"when": func(v any) string {
		var t time.Time
		switch v := v.(type) {
		case Time:
			t = v.Time
		case *Time:
			if v != nil {
				t = v.Time
			}
		case time.Time:
			t = v
		}
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format("2006-01-02 15:04:05")
	},
	"percent": func(f float64) string { return fmt.Sprintf("%.0f%%", 100*f) },
	"short":   func(s string) string { return s[:min(len(s), 10)] },
	"mib":     func(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) },
	"join":    strings.Join,
	// textual says whether a result file reads as text in the page.
	"textual": func(name string) bool {
		return slices.ContainsFunc([]string{".txt", ".log", ".json", ".xml", ".yaml"}, func(ext string) bool { return strings.HasSuffix(name, ext) })
	},
	"outcome": outcome,
	"duration": func(d time.Duration) string {
		if d <= 0 {
			return ""
		}
		return d.Round(100 * time.Millisecond).String()
	},
}

// outcome is the word and CSS class of a job's or module's state: the
// result once there is one, else the state.
func outcome(state, result string) string {
	if result != "" && result != schemas.ResultNone {
		return result
	}
	return state
}

// page is what every page's layout needs.
type page struct {
	Title string
	User  string // signed in, or ""
	Admin bool
	CSRF  string // the token forms send back
	Nav   string // the menu entry to mark
}

// render writes a page, or a plain error when its template fails (a
// defect: the templates are checked by the tests).
func (s *Server) render(w http.ResponseWriter, status int, name string, data any) {
	var b bytes.Buffer
	if err := uiPages[name].Execute(&b, data); err != nil {
		s.log.Error("page not rendered", "page", name, "err", err)
		http.Error(w, "the page could not be rendered: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}

// renderPart writes one named template of a page (a fragment the page's
// script swaps in), or "" when it fails.
func renderPart(pageName, part string, data any) (string, error) {
	var b bytes.Buffer
	if err := uiPages[pageName].ExecuteTemplate(&b, part, data); err != nil {
		return "", err
	}
	return b.String(), nil
}

// errorPage is a refusal or failure as a page.
type errorPage struct {
	page
	Status  int
	Message string
}

func (s *Server) uiError(w http.ResponseWriter, r *http.Request, status int, format string, args ...any) {
	p := errorPage{page: s.pageFor(w, r, http.StatusText(status)), Status: status, Message: fmt.Sprintf(format, args...)}
	s.render(w, status, "error.html", p)
}

// uiRoutes adds the web UI's pages to mux.
func (s *Server) uiRoutes(mux *http.ServeMux) {
	static, _ := fs.Sub(uiFiles, "ui/static")
	files := http.FileServer(http.FS(static))
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(w, r)
	})))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/tests", http.StatusFound) })
	mux.HandleFunc("GET /tests", s.jobsPage)
	mux.HandleFunc("GET /tests/stream", s.jobsStream)
	mux.HandleFunc("GET /tests/overview", s.overviewPage)
	mux.HandleFunc("GET /tests/{id}", s.jobPage)
	mux.HandleFunc("GET /tests/{id}/timeline", s.timelinePart)
	mux.HandleFunc("GET /tests/{id}/live", s.liveStream)
	mux.HandleFunc("GET /tests/{id}/needle/{hash}", s.needleImage)
	mux.HandleFunc("GET /tests/{id}/diff/{module}/{step}/{candidate}", s.diffImage)
	mux.HandleFunc("GET /admin/workers", s.workersPage)
	mux.HandleFunc("GET /login", s.loginPage)
	mux.HandleFunc("POST /login", s.form(s.login))
	mux.HandleFunc("POST /logout", s.form(s.logout))
	mux.HandleFunc("POST /tests/{id}/cancel", s.form(s.signedIn(s.cancelForm)))
	mux.HandleFunc("POST /tests/{id}/restart", s.form(s.signedIn(s.restartForm)))
	mux.HandleFunc("POST /tests/{id}/developer", s.form(s.signedIn(s.developerForm)))
	mux.HandleFunc("GET /api_keys", s.signedInPage(s.apiKeysPage))
	mux.HandleFunc("POST /api_keys", s.form(s.signedIn(s.createKeyForm)))
	mux.HandleFunc("POST /api_keys/{key}/revoke", s.form(s.signedIn(s.revokeKeyForm)))
}

// listFilters are the job list's filters, as query parameters.
var listFilters = []string{"state", "result", "distri", "version", "flavor", "build", "test", "worker"}

// jobsPage is the job list: openQA's /tests, with filters and pages.
type jobsPage struct {
	page
	Filters       []filterField
	Rows          []template.HTML
	Query         string // the filters, for the live stream
	Offset, Limit int
	Prev, Next    string
}

type filterField struct{ Name, Value string }

func (s *Server) jobsPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	keep, err := parseJobFilter(q)
	if err != nil {
		s.uiError(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	if q.Get("limit") == "" {
		q.Set("limit", "50")
		r.URL.RawQuery = q.Encode()
	}
	limit, offset, err := readPaging(q, 50, 500)
	if err != nil {
		s.uiError(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	jobs, more := s.view.page(keep, offset, limit)
	p := jobsPage{page: s.pageFor(w, r, "Jobs"), Offset: offset, Limit: limit}
	for _, j := range jobs {
		row, err := s.rows.get(j.ID, j.Seq, func() (string, error) { return renderPart("jobs.html", "job-row", j) })
		if err != nil {
			s.log.Error("job row not rendered", "job", j.ID, "err", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		p.Rows = append(p.Rows, row)
	}
	p.Nav = "tests"
	filters := url.Values{}
	for _, f := range listFilters {
		p.Filters = append(p.Filters, filterField{f, q.Get(f)})
		if v := q.Get(f); v != "" {
			filters.Set(f, v)
		}
	}
	p.Query = filters.Encode()
	if more {
		p.Next = nextPage(r.URL, offset, limit)
	}
	if offset > 0 {
		p.Prev = nextPage(r.URL, max(offset-2*limit, -limit), limit)
	}
	s.render(w, http.StatusOK, "jobs.html", p)
}

// overviewPage is openQA's test overview: the newest job of each test and
// machine of one build (DISTRI, VERSION, FLAVOR, BUILD), by default the
// newest build.
type overviewPage struct {
	page
	Query  string
	Groups []overviewGroup
}

type overviewGroup struct {
	Distri, Version, Flavor, Build string
	Machines                       []string
	Rows                           []overviewRow
}

type overviewRow struct {
	Test  string
	Cells []*JobView // by machine; nil where the test did not run there
}

func (s *Server) overviewPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if q.Get("distri") == "" && q.Get("version") == "" && q.Get("build") == "" && q.Get("flavor") == "" {
		// openQA's overview without a build shows the newest one.
		s.view.each(func(j *JobView) bool {
			for _, k := range []string{"DISTRI", "VERSION", "FLAVOR", "BUILD"} {
				if v := j.Settings[k]; v != "" {
					q.Set(strings.ToLower(k), v)
				}
			}
			return false
		})
	}
	keep, err := parseJobFilter(q)
	if err != nil {
		s.uiError(w, r, http.StatusBadRequest, "%v", err)
		return
	}
	p := overviewPage{page: s.pageFor(w, r, "Test overview"), Query: q.Encode()}
	p.Nav = "overview"
	p.Groups = s.overview(keep)
	if r.URL.Query().Get("part") == "1" {
		part, err := renderPart("overview.html", "overview-groups", p)
		if err != nil {
			s.log.Error("overview not rendered", "err", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(part))
		return
	}
	s.render(w, http.StatusOK, "overview.html", p)
}

// overview groups the newest job of each scenario that keep accepts.
func (s *Server) overview(keep func(*JobView) bool) []overviewGroup {
	type cellKey struct{ group, test, machine string }
	groups := map[string]*overviewGroup{}
	cells := map[cellKey]*JobView{}
	s.view.each(func(j *JobView) bool {
		if !keep(j) {
			return true
		}
		g := strings.Join([]string{j.Settings["DISTRI"], j.Settings["VERSION"], j.Settings["FLAVOR"], j.Settings["BUILD"]}, "\x00")
		machine := cmp.Or(j.Settings["MACHINE"], j.Settings["ARCH"], "-")
		k := cellKey{g, j.Settings["TEST"], machine}
		if cells[k] != nil {
			return true // newest first: a newer job of the scenario is there
		}
		v := *j
		cells[k] = &v
		if groups[g] == nil {
			groups[g] = &overviewGroup{Distri: j.Settings["DISTRI"], Version: j.Settings["VERSION"], Flavor: j.Settings["FLAVOR"], Build: j.Settings["BUILD"]}
		}
		return true
	})
	var out []overviewGroup
	for _, key := range slices.Sorted(maps.Keys(groups)) {
		g := groups[key]
		machines, tests := map[string]bool{}, map[string]bool{}
		for k := range cells {
			if k.group == key {
				machines[k.machine], tests[k.test] = true, true
			}
		}
		g.Machines = slices.Sorted(maps.Keys(machines))
		for _, t := range slices.Sorted(maps.Keys(tests)) {
			row := overviewRow{Test: t}
			for _, m := range g.Machines {
				row.Cells = append(row.Cells, cells[cellKey{key, t, m}])
			}
			g.Rows = append(g.Rows, row)
		}
		out = append(out, *g)
	}
	return out
}

// jobPage is one job: its state, modules with their steps, settings,
// logs, repositories and events.
type jobPage struct {
	page
	Job     JobView
	Final   bool
	Develop bool // the viewer may use developer mode
	// Modules is the modules with their steps, rendered: the same for
	// every viewer, and kept for a job's view (its sequence).
	Modules  template.HTML
	Settings []filterField
	Repos    []uiRepo
	Logs     []string
	ULogs    []string
}

type uiModule struct {
	schemas.ModuleResult
	Steps []uiStep
}

// uiStep is a step with the addresses of its images.
type uiStep struct {
	schemas.Step
	Number     int
	Screenshot string // URL
	NeedleURL  string
	Candidates []uiCandidate
}

type uiCandidate struct {
	schemas.CandidateMatch
	Similarity float64
	NeedleURL  string
	DiffURL    string
}

type uiRepo struct {
	schemas.RepoCheckedOut
	Link string // of the commit, when the host is known
}

func (s *Server) jobPage(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		s.uiError(w, r, http.StatusNotFound, "job %q: no such job; job ids are positive numbers", r.PathValue("id"))
		return
	}
	j, ok := s.view.get(id)
	if !ok {
		s.uiError(w, r, http.StatusNotFound, "job %d does not exist (or was deleted)", id)
		return
	}
	p := jobPage{page: s.pageFor(w, r, fmt.Sprintf("Job %d: %s", j.ID, j.Name)), Job: j}
	p.Final = j.State == schemas.StateDone || j.State == schemas.StateCancelled
	p.Develop = p.User != "" && (p.Admin || j.Owner == p.User)
	for _, k := range slices.Sorted(maps.Keys(j.Settings)) {
		p.Settings = append(p.Settings, filterField{k, j.Settings[k]})
	}
	for _, repo := range j.Repos {
		p.Repos = append(p.Repos, uiRepo{repo, commitLink(repo.URL, repo.Commit)})
	}
	for _, name := range slices.Sorted(maps.Keys(j.Files)) {
		if u, ok := strings.CutPrefix(name, schemas.ULogsDir+"/"); ok {
			p.ULogs = append(p.ULogs, u)
		} else if !strings.HasSuffix(name, ".png") && !strings.HasPrefix(name, ".") {
			p.Logs = append(p.Logs, name)
		}
	}
	p.Modules, err = s.modules.get(j.ID, j.Seq, func() (string, error) { return renderPart("job.html", "modules", uiModules(j)) })
	if err != nil {
		s.log.Error("modules not rendered", "job", j.ID, "err", err)
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	if r.URL.Query().Get("part") == "1" {
		part, err := renderPart("job.html", "job-status", p)
		if err != nil {
			s.log.Error("job status not rendered", "err", err)
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(part))
		return
	}
	s.render(w, http.StatusOK, "job.html", p)
}

// uiModules are the job's modules with the addresses of their images.
func uiModules(j JobView) []uiModule {
	var modules []uiModule
	for mi, m := range j.Modules {
		um := uiModule{ModuleResult: m}
		for si, st := range m.Details {
			us := uiStep{Step: st, Number: si + 1}
			if _, stored := j.Files[st.Screenshot]; stored && st.Screenshot != "" {
				// A running job's screenshots are stored with its results.
				us.Screenshot = fmt.Sprintf("/tests/%d/images/%s", j.ID, url.PathEscape(st.Screenshot))
			}
			if st.NeedleHash != "" {
				us.NeedleURL = fmt.Sprintf("/tests/%d/needle/%s", j.ID, st.NeedleHash)
			}
			for ci, c := range st.Candidates {
				uc := uiCandidate{CandidateMatch: c, Similarity: candidateSimilarity(c)}
				if c.Hash != "" {
					uc.NeedleURL = fmt.Sprintf("/tests/%d/needle/%s", j.ID, c.Hash)
					if us.Screenshot != "" {
						uc.DiffURL = fmt.Sprintf("/tests/%d/diff/%d/%d/%d", j.ID, mi, si, ci)
					}
				}
				us.Candidates = append(us.Candidates, uc)
			}
			um.Steps = append(um.Steps, us)
		}
		modules = append(modules, um)
	}
	return modules
}

// candidateSimilarity is a candidate's worst area's similarity, as openQA
// shows a candidate.
func candidateSimilarity(c schemas.CandidateMatch) float64 {
	if len(c.Areas) == 0 {
		return max(0, 1-c.Error)
	}
	sim := 1.0
	for _, a := range c.Areas {
		sim = min(sim, a.Similarity)
	}
	return sim
}

// commitLink is the web page of a commit on a known forge, or "".
func commitLink(repo, commit string) string {
	u, err := url.Parse(repo)
	if err != nil || commit == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return ""
	}
	base := strings.TrimSuffix(strings.TrimSuffix(u.String(), "/"), ".git")
	base, _, _ = strings.Cut(base, "#")
	switch {
	case u.Host == "github.com", strings.HasPrefix(u.Host, "gitea."), u.Host == "codeberg.org":
		return base + "/commit/" + commit
	case strings.Contains(u.Host, "gitlab"), strings.Contains(u.Host, "code.opensuse.org"):
		return base + "/-/commit/" + commit
	}
	return ""
}

// timelinePart is the job's events, oldest first: the replay of its
// life, loaded by the job page when it is opened.
func (s *Server) timelinePart(w http.ResponseWriter, r *http.Request) {
	id, ok := jobID(w, r)
	if !ok {
		return
	}
	type entry struct {
		Seq    uint64
		Time   string
		Kind   string
		Source string
		Text   string
	}
	var entries []entry
	last, err := s.bus.LastSequence(r.Context(), streams.StreamJobs)
	if err == nil && last > 0 {
		err = s.bus.Watch(r.Context(), streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.JobSubject(id) + ".>"}},
			func(ev schemas.Event, p schemas.Payload, d streams.Delivery) error {
				entries = append(entries, entry{Seq: d.Sequence, Time: ev.Time.UTC().Format("15:04:05.000"), Kind: ev.Kind, Source: ev.Source, Text: describeEvent(p)})
				if d.Pending == 0 || d.Sequence >= last {
					return streams.ErrStopWatch
				}
				return nil
			})
	}
	if err != nil {
		s.unavailable(w, "read the job's events", err)
		return
	}
	part, err := renderPart("job.html", "timeline", entries)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write([]byte(part))
}

// describeEvent is one line about an event for the timeline.
func describeEvent(p schemas.Payload) string {
	switch e := p.(type) {
	case *schemas.JobCreated:
		return "created: " + e.Name()
	case *schemas.JobAssigned:
		return "assigned to " + e.Worker.String()
	case *schemas.JobUnassigned:
		return "unassigned: " + e.Reason
	case *schemas.AssetFetched:
		how := "downloaded"
		if e.Cached {
			how = "from the cache"
		}
		return fmt.Sprintf("%s %s (%s)", e.Setting, e.Source, how)
	case *schemas.RepoCheckedOut:
		return fmt.Sprintf("%s %s at %s", e.Setting, e.URL, e.Commit)
	case *schemas.JobStarted:
		return "started on " + e.Worker.String() + " (" + e.Accel + ")"
	case *schemas.ModuleStarted:
		return "module " + e.Module
	case *schemas.ModuleFinished:
		return fmt.Sprintf("module %s: %s %s", e.Name, e.Result, e.Reason)
	case *schemas.JobPaused:
		return "paused: " + e.Reason
	case *schemas.DeveloperCommand:
		return "developer " + e.Action + " by " + e.By
	case *schemas.JobCancelRequested:
		return "cancel requested by " + e.By
	case *schemas.TestsFinished:
		return fmt.Sprintf("tests finished: %s %s", e.Result, e.Reason)
	case *schemas.JobFinished:
		return fmt.Sprintf("finished: %s %s", e.Result, e.Reason)
	case *schemas.JobRestarted:
		return fmt.Sprintf("restarted as job %d", e.Clone)
	}
	return ""
}

// workersPage is openQA's /admin/workers: every worker instance, and
// each host's asset cache.
type workersPage struct {
	page
	Workers []WorkerInfo
	Caches  []schemas.CacheStatus
}

func (s *Server) workersPage(w http.ResponseWriter, r *http.Request) {
	p := workersPage{page: s.pageFor(w, r, "Workers"), Workers: s.workerInfos()}
	p.Nav = "workers"
	s.view.mu.Lock()
	for _, host := range slices.Sorted(maps.Keys(s.view.caches)) {
		p.Caches = append(p.Caches, *s.view.caches[host])
	}
	s.view.mu.Unlock()
	s.render(w, http.StatusOK, "workers.html", p)
}

// htmlCache keeps rendered fragments of jobs by the sequence of the view
// they were rendered from: a job's view changes only with a new event.
type htmlCache struct {
	mu   sync.Mutex
	max  int
	html map[int64]cachedHTML
}

type cachedHTML struct {
	seq  uint64
	html template.HTML
}

func newHTMLCache(max int) *htmlCache {
	return &htmlCache{max: max, html: map[int64]cachedHTML{}}
}

// get returns the job's fragment for the view with sequence seq, made by
// render when it is not kept.
func (c *htmlCache) get(job int64, seq uint64, render func() (string, error)) (template.HTML, error) {
	c.mu.Lock()
	h, ok := c.html[job]
	c.mu.Unlock()
	if ok && h.seq == seq {
		return h.html, nil
	}
	out, err := render()
	if err != nil {
		return "", err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.html) >= c.max {
		for k := range c.html { // any one: the map's order is random
			delete(c.html, k)
			break
		}
	}
	c.html[job] = cachedHTML{seq, template.HTML(out)} // rendered by html/template
	return c.html[job].html, nil
}

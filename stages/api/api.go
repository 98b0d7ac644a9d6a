// Package api is the HTTP face of jetqa: it creates jobs (an
// openQA-compatible subset of its REST API) and answers from a read model
// that it folds from the job stream — a projection, never the truth.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/blobs"
)

// Config of the API.
type Config struct {
	// Listen is the address to serve on, e.g. 127.0.0.1:9526.
	Listen string
}

// Bus is what the API needs of the event streams and blob store.
type Bus interface {
	Append(ctx context.Context, job int64, p schemas.Payload) (uint64, error)
	Watch(ctx context.Context, cfg streams.WatchConfig, fn func(schemas.Event, schemas.Payload, streams.Delivery) error) error
	NextJobID(ctx context.Context) (int64, error)
	Restart(ctx context.Context, agg *schemas.JobAggregate, by string, retry int) (int64, error)
	LoadJob(ctx context.Context, job int64) (*schemas.JobAggregate, error)
	LastSequence(ctx context.Context, stream string) (uint64, error)
	Consume(ctx context.Context, cfg streams.ConsumerConfig, h streams.Handler) error
	GetView(ctx context.Context, job int64) ([]byte, uint64, error)
	PutView(ctx context.Context, job int64, data []byte, rev uint64) error
	DeleteView(ctx context.Context, job int64) error
	FollowViews(ctx context.Context, fn func(job int64, data []byte), ready func()) error
	GetBlob(ctx context.Context, bucket, key string) ([]byte, error)
	Results() blobs.Store
	PutBlob(ctx context.Context, bucket, key string, r io.Reader) error
	LiveView(ctx context.Context, w schemas.WorkerRef, job int64) (streams.Live, error)
	FollowAPIKeys(ctx context.Context, fn func(k streams.APIKey, seq uint64)) error
	UseNonce(ctx context.Context, key, nonce string) error
	FollowTemplates(ctx context.Context, fn func(streams.Templates) error) error
	FollowUsers(ctx context.Context, fn func(u streams.User, seq uint64)) error
	LastUserSequence(ctx context.Context) (uint64, error)
	LastAPIKeySequence(ctx context.Context) (uint64, error)
	SessionSecret(ctx context.Context) ([]byte, error)
	CreateAPIKey(ctx context.Context, user string, expires time.Time, scope schemas.KeyScope) (schemas.APIKeyCreated, error)
	RevokeAPIKey(ctx context.Context, key string) error
}

// Server is the API stage.
type Server struct {
	cfg  Config
	bus  Bus
	log  *slog.Logger
	view *projection
	keys *Keys
	ln   net.Listener
	// templates are the job templates last loaded, for POST /api/v1/isos.
	templates atomic.Pointer[loadedTemplates]
	// users may sign in to the web UI.
	users *uiUsers
	// rows and modules are the web UI's rendered job rows and modules.
	rows, modules *htmlCache
}

// New listens on cfg.Listen; serving starts with Run.
func New(cfg Config, bus Bus, log *slog.Logger) (*Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:9526"
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("api: listen on %s: %w", cfg.Listen, err)
	}
	return &Server{cfg: cfg, bus: bus, log: log, view: newProjection(), keys: NewKeys(bus.UseNonce), ln: ln,
		users: &uiUsers{users: map[string]streams.User{}}, rows: newHTMLCache(4096), modules: newHTMLCache(256)}, nil
}

// Addr is the address the API serves on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	srv := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errs := make(chan error, 8)
	ready := make(chan struct{})
	go func() { errs <- s.project(ctx) }()
	go func() { errs <- s.copyViews(ctx, ready) }()
	go func() { errs <- s.view.followWorkers(ctx, s.bus, 0) }()
	keysReady := make(chan struct{})
	go func() { errs <- s.followKeys(ctx, keysReady) }()
	templatesReady := make(chan struct{})
	go func() { errs <- s.followTemplates(ctx, templatesReady) }()
	usersReady := make(chan struct{})
	go func() { errs <- s.followUsers(ctx, usersReady) }()
	for _, c := range []chan struct{}{ready, keysReady, templatesReady, usersReady} {
		select {
		case <-c:
		case err := <-errs:
			return fmt.Errorf("api: read model: %w", err)
		case <-ctx.Done():
			return nil
		}
	}
	go func() { errs <- srv.Serve(s.ln) }()
	select {
	case <-ctx.Done():
	case err := <-errs:
		if ctx.Err() == nil && !errors.Is(err, http.ErrServerClosed) {
			cancel()
			_ = srv.Close()
			return fmt.Errorf("api: %w", err)
		}
	}
	shutdown, stop := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer stop()
	return srv.Shutdown(shutdown)
}

// followKeys keeps the API keys current, and closes ready once the keys
// stored before the start are known.
func (s *Server) followKeys(ctx context.Context, ready chan struct{}) error {
	last, err := s.bus.LastAPIKeySequence(ctx)
	if err != nil {
		return fmt.Errorf("api keys: %w", err)
	}
	markReady := sync.OnceFunc(func() {
		s.keys.ready.Store(true)
		close(ready)
	})
	if last == 0 {
		markReady()
	}
	err = s.bus.FollowAPIKeys(ctx, func(k streams.APIKey, seq uint64) {
		s.keys.Set(k)
		if seq >= last {
			markReady()
		}
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("api keys: %w", err)
	}
	return nil
}

// Handler routes the API. Reading is public, as in openQA; writing takes
// a request signed with an API key.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v1/jobs", s.keys.signed(s.log, s.postJob))
	mux.HandleFunc("GET /api/v1/jobs", s.listJobs)
	mux.HandleFunc("GET /api/v1/jobs/{id}", s.getJob)
	mux.HandleFunc("GET /api/v1/jobs/{id}/details", s.getJobDetails)
	mux.HandleFunc("GET /api/v1/jobs/{id}/file/{name}", s.getFile)
	mux.HandleFunc("GET /tests/{id}/file/{name}", s.getFile) // openQA's path
	mux.HandleFunc("GET /tests/{id}/images/{name}", s.getFile)
	mux.HandleFunc("GET /tests/{id}/images/thumb/{name}", s.getThumb)
	mux.HandleFunc("POST /api/v1/jobs/{id}/cancel", s.keys.signed(s.log, s.cancelJob))
	mux.HandleFunc("POST /api/v1/jobs/{id}/restart", s.keys.signed(s.log, s.restartJob))
	mux.HandleFunc("DELETE /api/v1/jobs/{id}", s.keys.signed(s.log, s.deleteJob))
	mux.HandleFunc("POST /api/v1/jobs/{id}/developer", s.keys.signed(s.log, s.developer))
	mux.HandleFunc("GET /api/v1/jobs/{id}/events", s.jobEvents)
	mux.HandleFunc("GET /api/v1/jobs/{id}/live", s.live)
	mux.HandleFunc("GET /api/v1/jobs/{id}/live/screen.png", s.liveScreen)
	mux.HandleFunc("GET /api/v1/workers", s.listWorkers)
	mux.HandleFunc("POST /api/v1/isos", s.keys.signed(s.log, s.postIsos))
	mux.HandleFunc("GET /api/v1/job_groups", s.listJobGroups)
	mux.HandleFunc("GET /api/v1/templates", s.getTemplates)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	s.uiRoutes(mux)
	return mux
}

// apiError is an error as openQA's API gives it.
type apiError struct {
	Error  string `json:"error"`
	Status int    `json:"error_status"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	// Compact, as openQA answers: openqa-cli --pretty indents.
	_ = enc.Encode(v)
}

// unavailable answers 503 for a failure of the event store or blob store:
// the details go to the log, not to the client.
func (s *Server) unavailable(w http.ResponseWriter, what string, err error) {
	status, err := s.failedStore(what, err)
	fail(w, status, "%v", err)
}

func fail(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, apiError{Error: fmt.Sprintf(format, args...), Status: status})
}

// postJob creates a job from settings given as form fields, query
// parameters (as openqa-cli sends them) or a JSON object.
func (s *Server) postJob(w http.ResponseWriter, r *http.Request) {
	settings, err := readSettings(r)
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	if len(settings) == 0 {
		fail(w, http.StatusBadRequest, "no job settings: give KEY=VALUE pairs such as DISTRI, TEST, ISO, CASEDIR")
		return
	}
	id, err := s.bus.NextJobID(r.Context())
	if err != nil {
		s.unavailable(w, "allocate a job id", err)
		return
	}
	user := callerOf(r.Context()).user
	seq, err := s.bus.Append(r.Context(), id, schemas.JobCreated{Settings: settings, Owner: user})
	if err != nil {
		s.unavailable(w, "store the job", err)
		return
	}
	wait, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	s.view.waitForJob(wait, id, seq)
	cancel()
	s.log.Info("job created", "job", id, "test", settings["TEST"])
	writeJSON(w, http.StatusOK, map[string]any{"id": id, "ids": []int64{id}})
}

const maxSettingsBytes = 1 << 20

func readSettings(r *http.Request) (map[string]string, error) {
	settings := map[string]string{}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	r.Body = http.MaxBytesReader(nil, r.Body, maxSettingsBytes)
	if ct == "application/json" {
		var m map[string]any
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			return nil, fmt.Errorf("job settings: not a JSON object of strings: %w", err)
		}
		for k, v := range m {
			switch v := v.(type) {
			case string:
				settings[k] = v
			case float64:
				settings[k] = strconv.FormatFloat(v, 'f', -1, 64)
			case bool:
				settings[k] = strconv.FormatBool(v)
			default:
				return nil, fmt.Errorf("job setting %s: want a string, got %T", k, v)
			}
		}
	} else if err := r.ParseForm(); err != nil {
		return nil, fmt.Errorf("job settings: %w", err)
	} else {
		for k, vs := range r.Form {
			settings[k] = vs[len(vs)-1]
		}
	}
	for k := range settings {
		if k == "" || strings.ContainsAny(k, " \t\n=") {
			return nil, fmt.Errorf("job setting %q: a name may not be empty or contain spaces or '='", k)
		}
	}
	return settings, nil
}

// paging reads limit (default 500, at most max) and offset, or answers
// 400 and returns false.
func paging(w http.ResponseWriter, r *http.Request, max int) (limit, offset int, ok bool) {
	limit, offset, err := readPaging(r.URL.Query(), 500, max)
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return 0, 0, false
	}
	return limit, offset, true
}

// readPaging reads limit (default def, at most most) and offset.
func readPaging(q url.Values, def, most int) (limit, offset int, err error) {
	limit = def
	for _, p := range []struct {
		name string
		v    *int
		max  int
	}{{"limit", &limit, most}, {"offset", &offset, 1 << 30}} {
		if v := q.Get(p.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > p.max {
				return 0, 0, fmt.Errorf("%s=%q: want a number from 0 to %d", p.name, v, p.max)
			}
			*p.v = n
		}
	}
	return limit, offset, nil
}

func jobID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		fail(w, http.StatusBadRequest, "job id %q: want a positive integer", r.PathValue("id"))
		return 0, false
	}
	return id, true
}

// jobFromPath answers for the job named by the {id} path value, or writes
// the error and returns false.
func (s *Server) jobFromPath(w http.ResponseWriter, r *http.Request) (JobView, bool) {
	id, ok := jobID(w, r)
	if !ok {
		return JobView{}, false
	}
	if v := r.URL.Query().Get("seq"); v != "" {
		// Read after an event the client saw: wait for the view to have it.
		seq, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			fail(w, http.StatusBadRequest, "seq=%q: want the stream sequence of an event of the job", v)
			return JobView{}, false
		}
		wait, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		s.view.waitForJob(wait, id, seq)
		cancel()
	}
	j, ok := s.view.get(id)
	if !ok {
		fail(w, http.StatusNotFound, "job %d does not exist", id)
	}
	return j, ok
}

func (s *Server) getJob(w http.ResponseWriter, r *http.Request) {
	j, ok := s.jobFromPath(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"job": s.openQAJob(j)})
}

// listJobs serves GET /api/v1/jobs with openQA's filters (see
// parseJobFilter), limit (default 500, at most 10 000) and offset; newest
// first, with a Link header to the next page when there is one.
func (s *Server) listJobs(w http.ResponseWriter, r *http.Request) {
	keep, err := parseJobFilter(r.URL.Query())
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	limit, offset, ok := paging(w, r, 10000)
	if !ok {
		return
	}
	jobs, more := s.view.page(keep, offset, limit)
	if more {
		w.Header().Add("Link", "<"+nextPage(r.URL, offset, limit)+">; rel=\"next\"")
	}
	if jobs == nil {
		jobs = []JobView{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"jobs": s.openQAJobs(jobs)})
}

// nextPage is the request URI of the page after the one at offset.
func nextPage(u *url.URL, offset, limit int) string {
	next := *u
	nq := next.Query()
	nq.Set("offset", strconv.Itoa(offset+limit))
	nq.Set("limit", strconv.Itoa(limit))
	next.RawQuery = nq.Encode()
	return next.RequestURI()
}

// parseJobFilter reads openQA's job filters: state and result
// (comma-separated lists), distri, version, flavor, arch, test, build,
// machine, worker, ids (comma-separated or repeated), latest=1 (the newest
// job of each scenario), since and until (RFC 3339). The filter it returns
// must see jobs newest first (latest=1 keeps state).
func parseJobFilter(q url.Values) (func(*JobView) bool, error) {
	var since, until time.Time
	for _, b := range []struct {
		param string
		t     *time.Time
	}{{"since", &since}, {"until", &until}} {
		if v := q.Get(b.param); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return nil, fmt.Errorf("%s=%q: give a time like 2026-11-27T10:00:00Z", b.param, v)
			}
			*b.t = t
		}
	}
	ids := map[int64]bool{}
	for _, v := range q["ids"] {
		for f := range strings.SplitSeq(v, ",") {
			if f = strings.TrimSpace(f); f == "" {
				continue
			}
			id, err := strconv.ParseInt(f, 10, 64)
			if err != nil || id <= 0 {
				return nil, fmt.Errorf("ids=%q: want job ids separated by commas", v)
			}
			ids[id] = true
		}
	}
	oneOf := func(param, value string) bool {
		want := q.Get(param)
		if want == "" {
			return true
		}
		for v := range strings.SplitSeq(want, ",") {
			if strings.TrimSpace(v) == value {
				return true
			}
		}
		return false
	}
	latest := q.Get("latest") == "1" || q.Get("latest") == "true"
	seen := map[string]bool{} // scenarios of latest=1
	return func(j *JobView) bool {
		if !since.IsZero() && j.Created.Before(since) || !until.IsZero() && j.Created.After(until) {
			return false
		}
		if len(ids) > 0 && !ids[j.ID] {
			return false
		}
		for _, f := range []struct{ param, value string }{
			{"state", j.State}, {"result", j.Result}, {"test", j.Settings["TEST"]},
			{"distri", j.Settings["DISTRI"]}, {"version", j.Settings["VERSION"]}, {"flavor", j.Settings["FLAVOR"]},
			{"arch", j.Settings["ARCH"]}, {"build", j.Settings["BUILD"]}, {"machine", j.Settings["MACHINE"]},
			{"worker", j.Worker},
		} {
			if !oneOf(f.param, f.value) {
				return false
			}
		}
		if latest {
			key := scenario(j)
			if seen[key] {
				return false
			}
			seen[key] = true
		}
		return true
	}, nil
}

// scenario names a job's scenario as openQA's latest=1 groups jobs.
func scenario(j *JobView) string {
	return strings.Join([]string{j.Settings["DISTRI"], j.Settings["VERSION"], j.Settings["FLAVOR"], j.Settings["ARCH"], j.Settings["TEST"], j.Settings["MACHINE"]}, "\x00")
}

func (s *Server) getFile(w http.ResponseWriter, r *http.Request) {
	j, ok := s.jobFromPath(w, r)
	if !ok {
		return
	}
	s.serveFile(w, r, j, r.PathValue("name"))
}

// getThumb serves a screenshot's thumbnail, at openQA's path.
func (s *Server) getThumb(w http.ResponseWriter, r *http.Request) {
	j, ok := s.jobFromPath(w, r)
	if !ok {
		return
	}
	s.serveFile(w, r, j, schemas.ThumbsDir+"/"+r.PathValue("name"))
}

// serveFile streams one of a job's result files from the results store.
func (s *Server) serveFile(w http.ResponseWriter, r *http.Request, j JobView, name string) {
	id := j.ID
	key, ok := j.Files[name]
	if !ok {
		// openQA serves the guest's uploads beside the other files.
		key, ok = j.Files[schemas.ULogsDir+"/"+name]
	}
	if !ok {
		fail(w, http.StatusNotFound, "job %d has no file %q", id, name)
		return
	}
	body, info, err := s.bus.Results().Open(r.Context(), key, 0)
	if errors.Is(err, blobs.ErrNotFound) {
		fail(w, http.StatusNotFound, "job %d's file %q is no longer stored (%s): retention removed it, or it was lost", id, name, key)
		return
	}
	if err != nil {
		s.unavailable(w, "read the file", err)
		return
	}
	defer body.Close()
	if ct := mime.TypeByExtension(path.Ext(name)); ct != "" {
		w.Header().Set("Content-Type", ct)
	}
	w.Header().Set("Content-Length", strconv.FormatInt(info.Size, 10))
	// Content-addressed: the bytes under this name never change.
	w.Header().Set("ETag", `"`+info.SHA256+`"`)
	if _, err := io.Copy(w, body); err != nil {
		s.log.Warn("file not served whole", "job", id, "file", name, "err", err)
	}
}

// loadJob reads the job named by the {id} path value from its events, or
// writes the error and returns nil.
func (s *Server) loadJob(w http.ResponseWriter, r *http.Request) *schemas.JobAggregate {
	id, ok := jobID(w, r)
	if !ok {
		return nil
	}
	agg, err := s.bus.LoadJob(r.Context(), id)
	switch {
	case errors.Is(err, streams.ErrNoJob):
		fail(w, http.StatusNotFound, "job %d does not exist", id)
		return nil
	case err != nil:
		s.unavailable(w, "read the job", err)
		return nil
	case agg.Deleted:
		fail(w, http.StatusNotFound, "job %d was deleted", id)
		return nil
	}
	return agg
}

// deleteJob removes a final job from the job lists, as openQA's DELETE
// /api/v1/jobs/ID: {"result": 1}. Its events stay in the stream.
func (s *Server) deleteJob(w http.ResponseWriter, r *http.Request) {
	agg := s.loadJob(w, r)
	if agg == nil {
		return
	}
	by := callerOf(r.Context())
	if status, err := by.mayChange(agg, "delete"); err != nil {
		fail(w, status, "%v", err)
		return
	}
	if !agg.Final() {
		fail(w, http.StatusConflict, "job %d is %s: cancel it first, then delete it", agg.ID, agg.State)
		return
	}
	user := by.user
	_, err := s.bus.Append(r.Context(), agg.ID, schemas.JobDeleted{By: user})
	switch {
	case errors.Is(err, schemas.ErrTransition):
		fail(w, http.StatusConflict, "%v", err)
		return
	case err != nil:
		s.unavailable(w, "delete the job", err)
		return
	}
	s.log.Info("job deleted", "job", agg.ID, "by", user)
	writeJSON(w, http.StatusOK, map[string]int{"result": 1})
}

// cancelJob stops a job: one that has not started ends at once, a running
// one's worker stops the VM and ends it user_cancelled.
func (s *Server) cancelJob(w http.ResponseWriter, r *http.Request) {
	agg := s.loadJob(w, r)
	if agg == nil {
		return
	}
	if status, err := s.cancel(r.Context(), agg, callerOf(r.Context())); err != nil {
		fail(w, status, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": agg.ID, "result": 1})
}

// cancel asks for the job's end for by, and waits (a little) for the
// read model to show it. A refusal comes with its HTTP status.
func (s *Server) cancel(ctx context.Context, agg *schemas.JobAggregate, by caller) (int, error) {
	if status, err := by.mayChange(agg, "cancel"); err != nil {
		return status, err
	}
	seq, err := s.bus.Append(ctx, agg.ID, schemas.JobCancelRequested{By: by.user})
	if errors.Is(err, schemas.ErrTransition) {
		return http.StatusConflict, fmt.Errorf("job %d cannot be cancelled: it is %s (%s)", agg.ID, agg.State, agg.Result)
	}
	if err != nil {
		return s.failedStore("cancel the job", err)
	}
	if !agg.Started {
		fin, err := s.bus.Append(ctx, agg.ID, schemas.JobFinished{Result: schemas.ResultUserCancelled, Reason: "cancelled by user before it started"})
		switch {
		case err == nil:
			seq = fin
		case errors.Is(err, schemas.ErrTransition):
			// It started meanwhile: its worker acts on the request.
		default:
			return s.failedStore("cancel the job", err)
		}
	}
	wait, cancel := context.WithTimeout(ctx, 5*time.Second)
	s.view.waitForJob(wait, agg.ID, seq)
	cancel()
	s.log.Info("job cancel requested", "job", agg.ID, "by", by.user)
	return http.StatusOK, nil
}

// failedStore is 503 for a failure of the event store: the details go to
// the log, not to the client.
func (s *Server) failedStore(what string, err error) (int, error) {
	s.log.Error("request failed", "what", what, "err", err)
	return http.StatusServiceUnavailable, fmt.Errorf("could not %s: jetqa's event store did not answer; try again", what)
}

// restartJob schedules a clone of a finished job, as openQA's restart does.
func (s *Server) restartJob(w http.ResponseWriter, r *http.Request) {
	agg := s.loadJob(w, r)
	if agg == nil {
		return
	}
	clone, status, err := s.restart(r.Context(), agg, callerOf(r.Context()))
	if err != nil {
		fail(w, status, "%v", err)
		return
	}
	old := strconv.FormatInt(agg.ID, 10)
	writeJSON(w, http.StatusOK, map[string]any{
		"id":       clone,
		"result":   []map[string]int64{{old: clone}},
		"test_url": []map[string]string{{old: fmt.Sprintf("/tests/%d", clone)}},
	})
}

// restart clones a final job for by and returns the clone's id, or the
// refusal with its HTTP status.
func (s *Server) restart(ctx context.Context, agg *schemas.JobAggregate, by caller) (int64, int, error) {
	if status, err := by.mayChange(agg, "restart"); err != nil {
		return 0, status, err
	}
	if !agg.Final() {
		return 0, http.StatusConflict, fmt.Errorf("job %d is %s: cancel it first, then restart it", agg.ID, agg.State)
	}
	if agg.Clone != 0 {
		return 0, http.StatusConflict, fmt.Errorf("job %d was already restarted as job %d: restart that one", agg.ID, agg.Clone)
	}
	clone, err := s.bus.Restart(ctx, agg, by.user, 0)
	switch {
	case errors.Is(err, schemas.ErrTransition):
		return 0, http.StatusConflict, fmt.Errorf("job %d: %w", agg.ID, err)
	case err != nil:
		status, err := s.failedStore("restart the job", err)
		return 0, status, err
	}
	// The clone has only its creation: any view of it is new enough.
	wait, cancel := context.WithTimeout(ctx, 5*time.Second)
	s.view.waitForJob(wait, clone, 1)
	cancel()
	s.log.Info("job restarted", "job", agg.ID, "clone", clone, "by", by.user)
	return clone, http.StatusOK, nil
}

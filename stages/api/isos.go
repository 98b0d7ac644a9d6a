package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"jetqa/schemas"
	"jetqa/stages/api/templates"
	"jetqa/streams"
)

// loadedTemplates is the job template set the API schedules products with.
type loadedTemplates struct {
	set  *templates.Set
	meta streams.Templates
	err  error // the load did not parse
}

// followTemplates keeps the last loaded templates parsed.
func (s *Server) followTemplates(ctx context.Context, ready chan struct{}) error {
	last, err := s.bus.LastSequence(ctx, streams.StreamTemplates)
	if err != nil {
		return fmt.Errorf("job templates: %w", err)
	}
	markReady := sync.OnceFunc(func() { close(ready) })
	if last == 0 {
		markReady()
	}
	err = s.bus.FollowTemplates(ctx, func(t streams.Templates) error {
		files := make(map[string][]byte, len(t.Files))
		for p, f := range t.Files {
			files[p] = []byte(f)
		}
		set, err := templates.Parse(files)
		if err != nil {
			s.log.Error("the loaded job templates do not parse", "url", t.URL, "commit", t.Commit, "err", err)
		} else {
			s.log.Info("job templates loaded", "url", t.URL, "commit", t.Commit, "templates", set.Summary())
		}
		s.templates.Store(&loadedTemplates{set: set, meta: t, err: err})
		if t.Seq >= last {
			markReady()
		}
		return nil
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("job templates: %w", err)
	}
	return nil
}

// isosAnswer is openQA's answer to POST /api/v1/isos.
type isosAnswer struct {
	Count  int                `json:"count"`
	IDs    []int64            `json:"ids"`
	Failed []templates.Failed `json:"failed"`
	Error  string             `json:"error,omitempty"`
	// Obsoleted are the older jobs of the product ended (_OBSOLETE=1).
	Obsoleted []int64 `json:"obsoleted,omitempty"`
}

// postIsos schedules a product, as openQA's POST /api/v1/isos: a job for
// every job template of DISTRI, VERSION, FLAVOR and ARCH, parents first.
func (s *Server) postIsos(w http.ResponseWriter, r *http.Request) {
	params, err := readSettings(r)
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	loaded := s.templates.Load()
	switch {
	case loaded == nil:
		fail(w, http.StatusNotFound, "no job templates are loaded: an operator loads them with `jetqa admin templates load GITURL#REF`")
		return
	case loaded.err != nil:
		fail(w, http.StatusInternalServerError, "the job templates loaded from %s at %s do not parse: %v; load a fixed commit", loaded.meta.URL, loaded.meta.Commit, loaded.err)
		return
	}
	plan, err := loaded.set.Schedule(params)
	if errors.Is(err, templates.ErrNoProduct) {
		// openQA answers this with status 200, unless _FAIL_IF_NO_JOBS.
		status := http.StatusOK
		if v := params["_FAIL_IF_NO_JOBS"]; v != "" && v != "0" {
			status = http.StatusBadRequest
		}
		writeJSON(w, status, isosAnswer{IDs: []int64{}, Failed: []templates.Failed{}, Error: err.Error()})
		return
	}
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	user := callerOf(r.Context()).user
	ctx := r.Context()
	ids := make([]int64, 0, len(plan.Jobs))
	var last uint64
	for _, j := range plan.Jobs {
		after := make([]int64, len(j.After))
		for i, p := range j.After {
			after[i] = ids[p]
		}
		id, err := s.bus.NextJobID(ctx)
		if err == nil {
			last, err = s.bus.Append(ctx, id, schemas.JobCreated{Settings: j.Settings, After: after, Owner: user})
		}
		if err != nil {
			s.abandon(ids, user)
			s.unavailable(w, "store the jobs", err)
			return
		}
		ids = append(ids, id)
	}
	answer := isosAnswer{Count: len(ids), IDs: ids, Failed: plan.Failed}
	if answer.Failed == nil {
		answer.Failed = []templates.Failed{}
	}
	if plan.Obsolete != nil {
		answer.Obsoleted = s.obsolete(ctx, plan.Obsolete, ids, user)
	}
	if len(ids) > 0 {
		wait, cancel := context.WithTimeout(ctx, 5*time.Second)
		s.view.waitForJob(wait, ids[len(ids)-1], last)
		cancel()
	}
	s.log.Info("product scheduled", "distri", params["DISTRI"], "version", params["VERSION"], "flavor", params["FLAVOR"],
		"arch", params["ARCH"], "build", params["BUILD"], "jobs", len(ids), "failed", len(plan.Failed), "by", user,
		"templates", loaded.meta.Commit)
	writeJSON(w, http.StatusOK, answer)
}

// abandon ends the jobs of a product whose scheduling failed half way, so
// a retried request does not leave them twice.
func (s *Server) abandon(ids []int64, user string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, id := range ids {
		if _, err := s.bus.Append(ctx, id, schemas.JobFinished{Result: schemas.ResultObsoleted, Reason: "the product's scheduling failed half way; schedule it again"}); err != nil {
			s.log.Warn("could not end a job of a failed scheduling", "job", id, "by", user, "err", err)
		}
	}
}

// obsolete ends the unfinished jobs of the product that the new ones
// replace, as openQA's _OBSOLETE=1: those not started end obsoleted, the
// running ones are cancelled.
func (s *Server) obsolete(ctx context.Context, match map[string]string, keep []int64, user string) []int64 {
	kept := map[int64]bool{}
	for _, id := range keep {
		kept[id] = true
	}
	var old []JobView
	s.view.each(func(j *JobView) bool {
		if kept[j.ID] || j.State == schemas.StateDone || j.State == schemas.StateCancelled {
			return true
		}
		for k, v := range match {
			if j.Settings[k] != v {
				return true
			}
		}
		old = append(old, *j)
		return true
	})
	var done []int64
	for _, j := range old {
		reason := "obsoleted by a newer build of the product"
		var err error
		if j.Started == nil {
			_, err = s.bus.Append(ctx, j.ID, schemas.JobFinished{Result: schemas.ResultObsoleted, Reason: reason})
		}
		if j.Started != nil || errors.Is(err, schemas.ErrTransition) {
			_, err = s.bus.Append(ctx, j.ID, schemas.JobCancelRequested{By: user, Reason: reason})
		}
		if err != nil {
			s.log.Warn("could not obsolete a job", "job", j.ID, "err", err)
			continue
		}
		done = append(done, j.ID)
	}
	return done
}

// getTemplates says which job templates are loaded: where from, when, by
// whom, and what they hold.
func (s *Server) getTemplates(w http.ResponseWriter, _ *http.Request) {
	loaded := s.templates.Load()
	if loaded == nil {
		fail(w, http.StatusNotFound, "no job templates are loaded: an operator loads them with `jetqa admin templates load GITURL#REF`")
		return
	}
	out := map[string]any{"url": loaded.meta.URL, "ref": loaded.meta.Ref, "commit": loaded.meta.Commit,
		"loaded": loaded.meta.Loaded, "by": loaded.meta.By}
	if loaded.err != nil {
		out["error"] = loaded.err.Error()
	} else {
		groups := make([]map[string]any, 0, len(loaded.set.Groups))
		for _, g := range loaded.set.Groups {
			groups = append(groups, map[string]any{"id": g.ID, "name": g.Name, "file": g.File, "templates": len(g.Templates)})
		}
		out["job_groups"] = groups
		out["machines"] = len(loaded.set.Machines)
		out["test_suites"] = len(loaded.set.TestSuites)
		out["warnings"] = loaded.set.Warnings
	}
	writeJSON(w, http.StatusOK, out)
}

// listJobGroups serves openQA's GET /api/v1/job_groups: id and name.
func (s *Server) listJobGroups(w http.ResponseWriter, _ *http.Request) {
	out := []map[string]any{}
	if loaded := s.templates.Load(); loaded != nil && loaded.set != nil {
		for _, g := range loaded.set.Groups {
			out = append(out, map[string]any{"id": g.ID, "name": g.Name, "parent_id": nil, "template": nil,
				"default_priority": 50, "description": "from " + g.File + " at " + shortCommit(loaded.meta.Commit)})
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

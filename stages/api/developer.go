package api

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// DeveloperRequest is the body of POST /api/v1/jobs/{id}/developer: one
// developer-mode command for the running job (schemas.DeveloperCommand).
type DeveloperRequest struct {
	Action     string   `json:"action"`
	Module     string   `json:"module,omitempty"`
	OnMismatch string   `json:"on_mismatch,omitempty"`
	Clear      bool     `json:"clear,omitempty"`
	Keys       []string `json:"keys,omitempty"`
	Text       string   `json:"text,omitempty"`
	// Needles are added to the job's for a retry.
	Needles []DeveloperNeedle `json:"needles,omitempty"`
}

// DeveloperNeedle is a needle sent with a retry: its JSON and PNG.
type DeveloperNeedle struct {
	Name string `json:"name"`
	JSON string `json:"json"`
	PNG  []byte `json:"png"` // base64 in the request
}

// maxDeveloperNeedles bounds the needles of one retry.
const maxDeveloperNeedles = 16

// developer passes a developer-mode command to the worker that runs the
// job, for the job's owner or an admin.
func (s *Server) developer(w http.ResponseWriter, r *http.Request) {
	agg := s.loadJob(w, r)
	if agg == nil {
		return
	}
	ctx := r.Context()
	by := callerOf(ctx)
	var req DeveloperRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxSignedBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		if status, err := mayDevelop(agg, by); err != nil {
			fail(w, status, "%v", err)
			return
		}
		fail(w, http.StatusBadRequest, "developer command: %v (send JSON such as {\"action\": \"pause\"})", err)
		return
	}
	seq, status, err := s.sendDeveloper(ctx, agg, by, req)
	if err != nil {
		fail(w, status, "%v", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": agg.ID, "result": 1, "seq": seq})
}

// mayDevelop refuses developer mode to whoever is neither the job's owner
// nor an admin.
func mayDevelop(agg *schemas.JobAggregate, by caller) (int, error) {
	if by.scope.Reaches(schemas.ScopeAdmin) || agg.Owner != "" && agg.Owner == by.user {
		return http.StatusOK, nil
	}
	owner := cmp.Or(agg.Owner, "nobody")
	return http.StatusForbidden, fmt.Errorf("job %d belongs to %s: only its owner or an admin may use developer mode on it", agg.ID, owner)
}

// sendDeveloper appends the developer command req of by to the running
// job, and returns its sequence, or the refusal with its HTTP status.
func (s *Server) sendDeveloper(ctx context.Context, agg *schemas.JobAggregate, by caller, req DeveloperRequest) (uint64, int, error) {
	user := by.user
	if status, err := mayDevelop(agg, by); err != nil {
		return 0, status, err
	}
	if agg.State != schemas.StateRunning {
		return 0, http.StatusConflict, fmt.Errorf("job %d is %s, not running: developer mode works on a running job", agg.ID, agg.State)
	}
	cmd := schemas.DeveloperCommand{By: user, Action: req.Action, Module: req.Module, OnMismatch: req.OnMismatch,
		Clear: req.Clear, Keys: req.Keys, Text: req.Text}
	if len(req.Needles) > 0 {
		if req.Action != schemas.DevRetry {
			return 0, http.StatusBadRequest, fmt.Errorf("needles go with a retry, not with %s", req.Action)
		}
		refs, err := s.storeNeedles(ctx, req.Needles)
		var bad *badNeedle
		switch {
		case errors.As(err, &bad):
			return 0, http.StatusBadRequest, err
		case err != nil:
			status, err := s.failedStore("store the needles", err)
			return 0, status, err
		}
		cmd.Needles = refs
	}
	seq, err := s.bus.Append(ctx, agg.ID, cmd)
	switch {
	case errors.Is(err, schemas.ErrTransition):
		return 0, http.StatusConflict, err
	case err != nil:
		status, err := s.failedStore("send the command", err)
		return 0, status, err
	}
	s.log.Info("developer command", "job", agg.ID, "by", user, "action", req.Action)
	return seq, http.StatusOK, nil
}

// badNeedle is a needle of a retry that cannot be used.
type badNeedle struct{ err error }

func (e *badNeedle) Error() string { return e.err.Error() }

// storeNeedles checks the needles as a job would read them and stores
// them where the worker and the matchers read needles.
func (s *Server) storeNeedles(ctx context.Context, needles []DeveloperNeedle) ([]schemas.NeedleRef, error) {
	if len(needles) > maxDeveloperNeedles {
		return nil, &badNeedle{fmt.Errorf("%d needles: send at most %d with one retry", len(needles), maxDeveloperNeedles)}
	}
	dir, err := os.MkdirTemp("", "jetqa-dev-needles-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	for _, n := range needles {
		if n.Name == "" || n.Name != filepath.Base(n.Name) || strings.HasPrefix(n.Name, ".") {
			return nil, &badNeedle{fmt.Errorf("needle name %q: give a file name without .json, such as login-prompt", n.Name)}
		}
		if err := os.WriteFile(filepath.Join(dir, n.Name+".json"), []byte(n.JSON), 0o644); err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, n.Name+".png"), n.PNG, 0o644); err != nil {
			return nil, err
		}
	}
	nd, err := schemas.ReadNeedleDir(dir)
	if err != nil {
		return nil, err
	}
	if errs := nd.Errors(); len(errs) > 0 {
		return nil, &badNeedle{fmt.Errorf("needle %w", errs[0])}
	}
	refs := make([]schemas.NeedleRef, 0, len(nd.Needles))
	for _, n := range nd.Needles {
		jsonKey, pngKey := streams.NeedleBlobKeys(n.Hash)
		for _, f := range []struct{ key, path string }{{jsonKey, n.JSONPath}, {pngKey, n.PNGPath}} {
			data, err := os.ReadFile(f.path)
			if err != nil {
				return nil, err
			}
			if err := s.bus.PutBlob(ctx, streams.BucketNeedles, f.key, bytes.NewReader(data)); err != nil {
				return nil, fmt.Errorf("needle %s: %w", n.Name, err)
			}
		}
		refs = append(refs, schemas.NeedleRef{Name: n.Name, Hash: n.Hash})
	}
	return refs, nil
}

// LiveView is the answer of GET /api/v1/jobs/{id}/live.
type LiveView struct {
	ID     int64              `json:"id"`
	Worker string             `json:"assigned_worker"`
	Module string             `json:"module,omitempty"`
	Paused *schemas.JobPaused `json:"developer_paused,omitempty"`
	Screen string             `json:"screen"` // the path of the screen's PNG
}

// liveView asks the worker that runs the job for its live view, or
// writes the error.
func (s *Server) liveView(w http.ResponseWriter, r *http.Request) (*schemas.JobAggregate, streams.Live, bool) {
	agg := s.loadJob(w, r)
	if agg == nil {
		return nil, streams.Live{}, false
	}
	if agg.State != schemas.StateRunning || agg.Worker == nil {
		fail(w, http.StatusConflict, "job %d is %s, not running: there is no live view", agg.ID, agg.State)
		return nil, streams.Live{}, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	live, err := s.bus.LiveView(ctx, *agg.Worker, agg.ID)
	switch {
	case errors.Is(err, streams.ErrNotRunning):
		fail(w, http.StatusConflict, "job %d: its worker %s is not running it (it is starting or ending)", agg.ID, agg.Worker)
		return nil, live, false
	case err != nil:
		s.unavailable(w, "reach the worker", err)
		return nil, live, false
	}
	return agg, live, true
}

func (s *Server) live(w http.ResponseWriter, r *http.Request) {
	agg, live, ok := s.liveView(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, LiveView{ID: agg.ID, Worker: agg.Worker.String(), Module: live.Module, Paused: live.Paused,
		Screen: fmt.Sprintf("/api/v1/jobs/%d/live/screen.png", agg.ID)})
}

func (s *Server) liveScreen(w http.ResponseWriter, r *http.Request) {
	_, live, ok := s.liveView(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(live.Screen)
}

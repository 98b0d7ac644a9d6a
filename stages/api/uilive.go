package api

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// sse is a Server-Sent Events response.
type sse struct {
	w http.ResponseWriter
	f http.Flusher
}

// startSSE begins an event stream, or answers 500 when the connection
// cannot stream.
func startSSE(w http.ResponseWriter) (*sse, bool) {
	f, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "this server cannot stream events", http.StatusInternalServerError)
		return nil, false
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = fmt.Fprint(w, ": jetqa\n\n")
	f.Flush()
	return &sse{w, f}, true
}

// send writes one event with v as its JSON data.
func (e *sse) send(event string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := fmt.Fprintf(e.w, "event: %s\ndata: %s\n\n", event, data); err != nil {
		return err
	}
	e.f.Flush()
	return nil
}

// keepAlive is how often an idle stream sends a comment, so proxies keep
// the connection.
const keepAlive = 25 * time.Second

// jobsStream follows the job list's filters: each job whose view changed
// comes as "job" (its row, rendered as the page renders it) while it
// passes the filters, or as "gone"; "reload" when the stream fell behind.
func (s *Server) jobsStream(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if _, err := parseJobFilter(q); err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	watcher, stop := s.view.watch()
	defer stop()
	out, ok := startSSE(w)
	if !ok {
		return
	}
	tick := time.NewTicker(keepAlive)
	defer tick.Stop()
	type row struct {
		ID   int64  `json:"id"`
		HTML string `json:"html,omitempty"`
	}
	for {
		var err error
		select {
		case <-r.Context().Done():
			return
		case <-watcher.lost:
			_ = out.send("reload", row{})
			return
		case <-tick.C:
			_, err = fmt.Fprint(w, ": still here\n\n")
			out.f.Flush()
		case id := <-watcher.changed:
			j, ok := s.view.get(id)
			keep, _ := parseJobFilter(q) // latest=1 keeps state: a fresh one per job
			if !ok || !keep(&j) {
				err = out.send("gone", row{ID: id})
				break
			}
			html, rerr := renderPart("jobs.html", "job-row", j)
			if rerr != nil {
				s.log.Error("job row not rendered", "err", rerr)
				return
			}
			err = out.send("job", row{ID: id, HTML: html})
		}
		if err != nil {
			return
		}
	}
}

// liveInterval is how often the live view asks the worker for its screen
// while someone watches.
const liveInterval = time.Second

// liveFrame is one "screen" event of the live view.
type liveFrame struct {
	Module string             `json:"module,omitempty"`
	Paused *schemas.JobPaused `json:"paused,omitempty"`
	// PNG is the screen as a data: URL.
	PNG string `json:"png,omitempty"`
}

// liveStream is the live view of a running job as events: "screen" when
// the screen, the module or a pause changed; "end" once the job no longer
// runs. The worker is asked over its own outbound NATS connection, and
// only while someone watches.
func (s *Server) liveStream(w http.ResponseWriter, r *http.Request) {
	id, ok := jobID(w, r)
	if !ok {
		return
	}
	if _, ok := s.view.get(id); !ok {
		fail(w, http.StatusNotFound, "job %d does not exist", id)
		return
	}
	out, ok := startSSE(w)
	if !ok {
		return
	}
	ctx := r.Context()
	tick := time.NewTicker(liveInterval)
	defer tick.Stop()
	var last [32]byte
	var lastMeta string
	for {
		j, ok := s.view.get(id)
		if !ok || j.State == schemas.StateDone || j.State == schemas.StateCancelled || j.State == schemas.StateUploading {
			_ = out.send("end", map[string]string{"state": j.State})
			return
		}
		if ref, ok := parseWorkerRef(j.Worker); ok && j.State == schemas.StateRunning {
			ask, cancel := context.WithTimeout(ctx, 5*time.Second)
			live, err := s.bus.LiveView(ask, ref, id)
			cancel()
			switch {
			case err == nil:
				sum := sha256.Sum256(live.Screen)
				meta, _ := json.Marshal([]any{live.Module, live.Paused})
				if sum != last || string(meta) != lastMeta {
					last, lastMeta = sum, string(meta)
					frame := liveFrame{Module: live.Module, Paused: live.Paused}
					if len(live.Screen) > 0 {
						frame.PNG = "data:image/png;base64," + base64.StdEncoding.EncodeToString(live.Screen)
					}
					if out.send("screen", frame) != nil {
						return
					}
				}
			case errors.Is(err, streams.ErrNotRunning):
				// Starting or ending: the next look tells.
			default:
				s.log.Warn("live view", "job", id, "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// parseWorkerRef reads "host:instance".
func parseWorkerRef(s string) (schemas.WorkerRef, bool) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return schemas.WorkerRef{}, false
	}
	n, err := strconv.Atoi(s[i+1:])
	if err != nil || n < 1 {
		return schemas.WorkerRef{}, false
	}
	return schemas.WorkerRef{Host: s[:i], Instance: n}, true
}

package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// StreamedEvent is one event of GET /api/v1/jobs/{id}/events: the
// envelope with its payload, and its stream sequence (the SSE id, which a
// client resumes from with Last-Event-ID or ?after=).
type StreamedEvent struct {
	Seq    uint64          `json:"seq,omitempty"`
	Kind   string          `json:"kind"`
	Job    int64           `json:"job,omitempty"`
	Time   time.Time       `json:"time"`
	Source string          `json:"source,omitempty"`
	Data   schemas.Payload `json:"data"`
}

// jobEvents streams a job's events as Server-Sent Events, from its first
// (or after the one a client saw last) until it finishes, with the
// downloads of its assets as they progress (asset.progress.v1, no id:
// progress is not kept). Clients follow a job over HTTP alone.
func (s *Server) jobEvents(w http.ResponseWriter, r *http.Request) {
	id, ok := jobID(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	agg, err := s.bus.LoadJob(ctx, id)
	if errors.Is(err, streams.ErrNoJob) {
		fail(w, http.StatusNotFound, "job %d does not exist", id)
		return
	} else if err != nil {
		s.unavailable(w, "read the job", err)
		return
	}
	var from uint64
	for _, v := range []string{r.Header.Get("Last-Event-ID"), r.URL.Query().Get("after")} {
		if v == "" {
			continue
		}
		after, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			fail(w, http.StatusBadRequest, "after=%q: give the sequence of the last event seen", v)
			return
		}
		from = after + 1
	}
	if agg.Final() && from > agg.Seq {
		// The client saw the end already.
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		fail(w, http.StatusInternalServerError, "this server cannot stream")
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()

	var mu sync.Mutex
	send := func(seq uint64, ev schemas.Event, p schemas.Payload) error {
		data, err := json.Marshal(StreamedEvent{Seq: seq, Kind: ev.Kind, Job: ev.Job, Time: ev.Time, Source: ev.Source, Data: p})
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if seq > 0 {
			fmt.Fprintf(w, "id: %d\n", seq)
		}
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.Kind, data); err != nil {
			return err
		}
		flusher.Flush()
		return nil
	}
	progressCtx, stopProgress := context.WithCancel(ctx)
	defer stopProgress()
	go func() {
		_ = s.bus.Watch(progressCtx, streams.WatchConfig{Stream: streams.StreamWorkers, Filters: []string{"jetqa.worker.*.*.progress"}, New: true},
			func(ev schemas.Event, p schemas.Payload, _ streams.Delivery) error {
				if e, ok := p.(*schemas.AssetProgress); ok && e.Job == id {
					return send(0, ev, p)
				}
				return nil
			})
	}()
	err = s.bus.Watch(ctx, streams.WatchConfig{Stream: streams.StreamJobs, Filters: []string{streams.JobSubject(id) + ".>"}, From: from},
		func(ev schemas.Event, p schemas.Payload, d streams.Delivery) error {
			if err := send(d.Sequence, ev, p); err != nil {
				return err
			}
			if _, ok := p.(*schemas.JobFinished); ok {
				return streams.ErrStopWatch
			}
			return nil
		})
	if err != nil && ctx.Err() == nil {
		s.log.Warn("job event stream ended", "job", id, "err", err)
	}
}

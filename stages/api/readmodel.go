package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// The read model lives in the key-value bucket streams.BucketJobViews, one
// view per job. The durable consumer "projection" folds every job event into
// its job's view with compare-and-set, so any number of API processes may
// share it, and a restarted API resumes where the durable left off instead
// of replaying the whole stream. Each API keeps an in-memory copy of the
// bucket for its queries. The stream stays the truth: `jetqa admin rebuild`
// folds it from scratch and rewrites any view that differs.

// ProjectionDurable is the consumer that keeps the read model.
const ProjectionDurable = "projection"

// project runs the projection consumer until ctx ends.
func (s *Server) project(ctx context.Context) error {
	return s.bus.Consume(ctx, streams.ConsumerConfig{
		Stream:     streams.StreamJobs,
		Durable:    ProjectionDurable,
		Filters:    []string{streams.SubjectJobs},
		AckWait:    30 * time.Second,
		MaxDeliver: 10,
	}, func(ctx context.Context, ev schemas.Event, pl schemas.Payload, d streams.Delivery) error {
		return projectEvent(ctx, s.bus, ev, pl, d.Sequence)
	})
}

// projectEvent folds one event into its job's view in the bucket. An event
// the view already has (a redelivery) changes nothing.
func projectEvent(ctx context.Context, bus Bus, ev schemas.Event, pl schemas.Payload, seq uint64) error {
	if _, ok := pl.(*schemas.JobDeleted); ok {
		return bus.DeleteView(ctx, ev.Job)
	}
	for {
		data, rev, err := bus.GetView(ctx, ev.Job)
		if err != nil {
			return err
		}
		jobs := map[int64]*JobView{}
		if data != nil {
			var v JobView
			if err := json.Unmarshal(data, &v); err != nil {
				return fmt.Errorf("view of job %d: %w", ev.Job, err)
			}
			if v.Seq >= seq {
				return nil
			}
			jobs[ev.Job] = &v
		}
		fold(jobs, ev, pl)
		j := jobs[ev.Job]
		if j == nil {
			return nil // an event of a job whose creation is not in the stream
		}
		j.Seq = seq
		out, err := json.Marshal(j)
		if err != nil {
			return err
		}
		err = bus.PutView(ctx, ev.Job, out, rev)
		if !errors.Is(err, streams.ErrViewConflict) {
			return err
		}
	}
}

// copyViews keeps the in-memory copy of the bucket; ready is closed once
// the copy holds every view the bucket had when it started.
func (s *Server) copyViews(ctx context.Context, ready chan<- struct{}) error {
	once := false
	return s.bus.FollowViews(ctx, func(job int64, data []byte) {
		if data == nil {
			s.view.set(job, nil)
			return
		}
		var v JobView
		if err := json.Unmarshal(data, &v); err != nil {
			s.log.Error("unreadable view", "job", job, "err", err)
			return
		}
		s.view.set(job, &v)
	}, func() {
		if !once {
			once = true
			close(ready)
		}
	})
}

// Repair makes the read model equal the views rebuilt from the stream:
// views that differ are rewritten (unless the live one has already folded
// newer events), views of jobs without events are removed. It returns how
// many views it changed.
func Repair(ctx context.Context, bus Bus, rebuilt []JobView, live []JobView) (int, error) {
	want := make(map[int64]JobView, len(rebuilt))
	for _, j := range rebuilt {
		want[j.ID] = j
	}
	changed := 0
	for _, j := range live {
		if _, ok := want[j.ID]; !ok {
			if err := bus.DeleteView(ctx, j.ID); err != nil {
				return changed, err
			}
			changed++
		}
	}
	for _, j := range rebuilt {
		for {
			data, rev, err := bus.GetView(ctx, j.ID)
			if err != nil {
				return changed, err
			}
			if data != nil {
				var have JobView
				if json.Unmarshal(data, &have) == nil && (have.Seq > j.Seq || reflect.DeepEqual(normal(have), normal(j))) {
					break
				}
			}
			out, err := json.Marshal(j)
			if err != nil {
				return changed, err
			}
			err = bus.PutView(ctx, j.ID, out, rev)
			if errors.Is(err, streams.ErrViewConflict) {
				continue
			}
			if err != nil {
				return changed, err
			}
			changed++
			break
		}
	}
	return changed, nil
}

// normal drops what a view computes at read time, for comparisons.
func normal(j JobView) JobView {
	j.Waiting = ""
	return j
}

// LiveViews reads every view of the read model bucket.
func LiveViews(ctx context.Context, bus Bus) ([]JobView, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var views []JobView
	var bad error
	err := bus.FollowViews(ctx, func(job int64, data []byte) {
		if data == nil {
			return
		}
		var v JobView
		if err := json.Unmarshal(data, &v); err != nil {
			bad = fmt.Errorf("view of job %d: %w", job, err)
			return
		}
		views = append(views, v)
	}, cancel)
	if err != nil && !errors.Is(err, context.Canceled) {
		return nil, err
	}
	return views, bad
}

package streams

import (
	"context"
	"errors"
	"fmt"
	"time"

	"jetqa/schemas"
)

// Job templates are events on JETQA_TEMPLATES: each load replaces the
// set; the last loads are kept, to see what was loaded when and by whom.
const (
	StreamTemplates  = "JETQA_TEMPLATES"
	subjectTemplates = "jetqa.templates"
	// MaxTemplatesBytes bounds a load's files: one message holds them.
	MaxTemplatesBytes = MaxPayload / 2
)

// Templates is a load of job templates as the stream holds it.
type Templates struct {
	schemas.TemplatesLoaded
	Loaded time.Time `json:"loaded"`
	Seq    uint64    `json:"seq"`
}

// ErrNoTemplates says no templates were ever loaded.
var ErrNoTemplates = errors.New("no job templates loaded (jetqa admin templates load GITURL#REF)")

// LoadTemplates stores a new set of job templates.
func (b *Bus) LoadTemplates(ctx context.Context, t schemas.TemplatesLoaded) (uint64, error) {
	size := 0
	for p, f := range t.Files {
		size += len(p) + len(f)
	}
	if size > MaxTemplatesBytes {
		return 0, fmt.Errorf("the templates' files hold %d bytes, more than the %d one load may: keep only the job groups, machines and test suites in the repository", size, MaxTemplatesBytes)
	}
	return b.publish(ctx, subjectTemplates, 0, t)
}

// LatestTemplates reads the last load.
func (b *Bus) LatestTemplates(ctx context.Context) (Templates, error) {
	var last Templates
	end, err := b.LastSequence(ctx, StreamTemplates)
	if err != nil {
		return last, err
	}
	if end == 0 {
		return last, ErrNoTemplates
	}
	err = b.FollowTemplates(ctx, func(t Templates) error {
		last = t
		if t.Seq >= end {
			return ErrStopWatch
		}
		return nil
	})
	return last, err
}

// FollowTemplates calls fn with every load, the oldest kept first, then
// each new one, until ctx ends or fn returns an error.
func (b *Bus) FollowTemplates(ctx context.Context, fn func(Templates) error) error {
	return b.Watch(ctx, WatchConfig{Stream: StreamTemplates, Filters: []string{subjectTemplates}}, func(ev schemas.Event, p schemas.Payload, d Delivery) error {
		if t, ok := p.(*schemas.TemplatesLoaded); ok {
			return fn(Templates{TemplatesLoaded: *t, Loaded: ev.Time, Seq: d.Sequence})
		}
		return nil
	})
}

package streams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
)

// A service is a request the server answers for the operator's command
// line, on a subject of its own (jetqa.retention.plan): the answer is a
// JSON result or an error.

// serviceReply is the answer of a server service: a result or an error.
type serviceReply struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// Serve answers requests on subject with answer, one at a time, in one
// queue group across the server's processes. The caller unsubscribes.
func (b *Bus) Serve(subject string, answer func(ctx context.Context, data []byte) ([]byte, error)) (*nats.Subscription, error) {
	return b.NC.QueueSubscribe(subject, "jetqa-service", func(m *nats.Msg) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		var r serviceReply
		out, err := answer(ctx, m.Data)
		if err != nil {
			r.Error = err.Error()
		} else {
			r.Result = out
		}
		data, _ := json.Marshal(r)
		if err := m.Respond(data); err != nil {
			b.log.Warn("answer not sent", "subject", subject, "err", err)
		}
	})
}

// Ask sends a request to a server service and returns its result.
func (b *Bus) Ask(ctx context.Context, subject string, data []byte) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
	}
	msg, err := b.NC.RequestWithContext(ctx, subject, data)
	if errors.Is(err, nats.ErrNoResponders) {
		return nil, fmt.Errorf("%s: no jetqa server offers it: %w", subject, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", subject, err)
	}
	var r serviceReply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		return nil, fmt.Errorf("%s: unreadable answer: %w", subject, err)
	}
	if r.Error != "" {
		return nil, errors.New(r.Error)
	}
	return r.Result, nil
}

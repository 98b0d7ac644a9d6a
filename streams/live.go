package streams

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"

	"jetqa/schemas"
)

// The live view of a running job is a request to the worker instance that
// runs it, over the connection the worker opened: the worker answers on
// jetqa.live.<host>.<instance> with its screen, so a developer watches a
// worker behind NAT without the worker opening a port. It is a view, not
// a fact, so it is never stored.
const subjectLive = "jetqa.live"

// LiveSubject is where a worker instance answers live view requests.
func LiveSubject(w schemas.WorkerRef) string { return subjectLive + "." + WorkerToken(w) }

// Live is what a worker instance shows of the job it runs.
type Live struct {
	Job    int64              `json:"job"`
	Module string             `json:"module,omitempty"`
	Paused *schemas.JobPaused `json:"paused,omitempty"`
	// Screen is the VM's screen as PNG; it travels as the message body.
	Screen []byte `json:"-"`
}

// ErrNotRunning is the answer of an instance that runs no job (or another).
var ErrNotRunning = errors.New("the worker runs no such job")

// ServeLive answers live view requests for the instance w until ctx ends;
// show is called for each, with the job asked for.
func (b *Bus) ServeLive(ctx context.Context, w schemas.WorkerRef, show func(ctx context.Context, job int64) (Live, error)) error {
	sub, err := b.NC.Subscribe(LiveSubject(w), func(m *nats.Msg) {
		reply := nats.NewMsg(m.Reply)
		job, _ := strconv.ParseInt(string(m.Data), 10, 64)
		live, err := show(ctx, job)
		if err != nil {
			reply.Header.Set("Jetqa-Error", err.Error())
		} else {
			meta, _ := json.Marshal(live)
			reply.Header.Set("Jetqa-Live", string(meta))
			reply.Data = live.Screen
		}
		if err := m.RespondMsg(reply); err != nil {
			b.log.Warn("live view not sent", "err", err)
		}
	})
	if err != nil {
		return fmt.Errorf("serve the live view of %s: %w", w, err)
	}
	<-ctx.Done()
	_ = sub.Unsubscribe()
	return nil
}

// LiveView asks the instance w for the live view of job.
func (b *Bus) LiveView(ctx context.Context, w schemas.WorkerRef, job int64) (Live, error) {
	m, err := b.NC.RequestWithContext(ctx, LiveSubject(w), []byte(strconv.FormatInt(job, 10)))
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return Live{}, fmt.Errorf("worker %s is not connected: %w", w, ErrNotRunning)
		}
		return Live{}, fmt.Errorf("live view of %s: %w", w, err)
	}
	if e := m.Header.Get("Jetqa-Error"); e != "" {
		if e == ErrNotRunning.Error() {
			return Live{}, ErrNotRunning
		}
		return Live{}, fmt.Errorf("worker %s: %s", w, e)
	}
	var live Live
	if err := json.Unmarshal([]byte(m.Header.Get("Jetqa-Live")), &live); err != nil {
		return Live{}, fmt.Errorf("live view of %s: unreadable answer: %w", w, err)
	}
	live.Screen = m.Data
	return live, nil
}

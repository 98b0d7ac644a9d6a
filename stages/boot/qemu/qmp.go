package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"
)

// qmpConn is a client of the QEMU Machine Protocol on one connection.
//
// QMP is a stream of JSON objects. QEMU first greets ({"QMP": ...}); the
// client answers with qmp_capabilities, and from then on every command
// {"execute", "arguments", "id"} gets exactly one reply carrying the same
// id: {"return": ...} or {"error": {"class", "desc"}}. Events
// ({"event", "data"}) can arrive between replies at any time, so one reader
// goroutine routes each reply to the command waiting for it.
type qmpConn struct {
	conn    net.Conn
	log     *slog.Logger
	onEvent func(qmpEvent) // called on the reader goroutine

	writeMu sync.Mutex

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan qmpMessage
	readErr error // why the reader stopped; set before stopped closes

	stopped chan struct{}
}

// qmpMessage is anything QEMU sends; which fields are set says what it is.
type qmpMessage struct {
	QMP    json.RawMessage `json:"QMP"`
	ID     *uint64         `json:"id"`
	Return json.RawMessage `json:"return"`
	Error  *qmpError       `json:"error"`
	Event  string          `json:"event"`
	Data   json.RawMessage `json:"data"`
}

type qmpCommand struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
	ID        uint64 `json:"id"`
}

// qmpEvent is an asynchronous notice from QEMU, such as SHUTDOWN.
type qmpEvent struct {
	Name string
	Data json.RawMessage
}

// qmpError is QEMU's refusal of a command.
type qmpError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

func (e *qmpError) Error() string { return e.Class + ": " + e.Desc }

// errQMPClosed says the connection ended; QEMU has usually exited.
var errQMPClosed = errors.New("qmp connection closed")

// dialQMP reads QEMU's greeting on conn and negotiates capabilities. It
// owns conn from then on, also when it fails.
func dialQMP(ctx context.Context, conn net.Conn, log *slog.Logger, onEvent func(qmpEvent)) (*qmpConn, error) {
	c := &qmpConn{
		conn:    conn,
		log:     log,
		onEvent: onEvent,
		pending: make(map[uint64]chan qmpMessage),
		stopped: make(chan struct{}),
	}
	dec := json.NewDecoder(conn)
	stop := interruptOnDone(ctx, conn)
	var greeting qmpMessage
	err := dec.Decode(&greeting)
	stop()
	if err == nil && greeting.QMP == nil {
		err = fmt.Errorf("greeting has no QMP member: %+v", greeting)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("qmp greeting: %w", contextOr(ctx, err))
	}
	go c.read(dec)
	if err := c.execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// interruptOnDone makes blocked reads and writes on conn fail once ctx
// ends; call the returned func to stop that and clear the deadline.
func interruptOnDone(ctx context.Context, conn net.Conn) func() {
	return deadlineOnDone(ctx, conn.SetDeadline)
}

// deadlineOnDone sets a deadline in the past with set once ctx ends, which
// fails blocked I/O at once. The returned func undoes it for the next use
// of the connection.
func deadlineOnDone(ctx context.Context, set func(time.Time) error) func() {
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(fired)
		set(time.Unix(1, 0))
	})
	return func() {
		if !stop() {
			<-fired // don't let a late deadline hit the next caller
			set(time.Time{})
		}
	}
}

// writeContext writes p to conn, giving up when ctx ends. Callers keep
// their writes from overlapping.
func writeContext(ctx context.Context, conn net.Conn, p []byte) error {
	undo := deadlineOnDone(ctx, conn.SetWriteDeadline)
	_, err := conn.Write(p)
	undo()
	return contextOr(ctx, err)
}

// contextOr prefers the context's reason over the I/O error it caused.
func contextOr(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("%w (%v)", context.Cause(ctx), err)
	}
	return err
}

func (c *qmpConn) read(dec *json.Decoder) {
	var err error
	for {
		var m qmpMessage
		if err = dec.Decode(&m); err != nil {
			break
		}
		switch {
		case m.Event != "":
			if c.onEvent != nil {
				c.onEvent(qmpEvent{Name: m.Event, Data: m.Data})
			}
		case m.ID != nil:
			c.mu.Lock()
			ch := c.pending[*m.ID]
			delete(c.pending, *m.ID)
			c.mu.Unlock()
			if ch != nil {
				ch <- m // buffered: the waiter may have given up
			}
		default:
			// QEMU answers a command it could not parse without an id.
			c.log.Warn("qmp: message without id", "error", m.Error, "return", string(m.Return))
		}
	}
	c.mu.Lock()
	c.readErr = fmt.Errorf("%w: %v", errQMPClosed, err)
	c.mu.Unlock()
	close(c.stopped)
}

// execute runs one command and decodes its return value into result
// (unless result is nil).
// qmpTimeout bounds how long a QMP command may go unanswered before QEMU
// counts as hung, qmpSlowTimeout the commands that write the VM's memory
// or disks (snapshots, memory dumps).
var (
	qmpTimeout     = 30 * time.Second
	qmpSlowTimeout = 10 * time.Minute
)

var qmpSlow = map[string]bool{"human-monitor-command": true, "dump-guest-memory": true, "snapshot-save": true, "snapshot-load": true}

func (c *qmpConn) execute(ctx context.Context, command string, args, result any) error {
	// A QEMU that stops answering (stopped, stuck in a device) must end
	// the job with a reason, not hold it until its MAX_JOB_TIME.
	limit := qmpTimeout
	if qmpSlow[command] {
		limit = qmpSlowTimeout
	}
	ctx, cancel := context.WithTimeoutCause(ctx, limit, fmt.Errorf("QEMU did not answer %s within %s: it hangs", command, limit))
	defer cancel()
	c.mu.Lock()
	if c.readErr != nil {
		err := c.readErr
		c.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	c.nextID++
	id := c.nextID
	reply := make(chan qmpMessage, 1)
	c.pending[id] = reply
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
	}()

	line, err := json.Marshal(qmpCommand{Execute: command, Arguments: args, ID: id})
	if err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	if err := c.write(ctx, append(line, '\n')); err != nil {
		return fmt.Errorf("qmp %s: %w", command, err)
	}

	var m qmpMessage
	select {
	case m = <-reply:
	case <-c.stopped:
		select {
		case m = <-reply: // the reply came just before the end
		default:
			return fmt.Errorf("qmp %s: %w", command, c.readErr)
		}
	case <-ctx.Done():
		return fmt.Errorf("qmp %s: %w", command, context.Cause(ctx))
	}
	if m.Error != nil {
		return fmt.Errorf("qmp %s: %w", command, m.Error)
	}
	if result != nil {
		if err := json.Unmarshal(m.Return, result); err != nil {
			return fmt.Errorf("qmp %s: decoding return value: %w", command, err)
		}
	}
	return nil
}

func (c *qmpConn) write(ctx context.Context, line []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	return writeContext(ctx, c.conn, line)
}

// close ends the connection and waits for the reader to finish.
func (c *qmpConn) close() {
	c.conn.Close()
	<-c.stopped
}

package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"image/png"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// ErrStopped is what Err reports after Stop ended QEMU.
var ErrStopped = errors.New("qemu stopped")

const (
	// quitGrace is how long Stop lets QEMU obey "quit" before SIGKILL.
	quitGrace = 10 * time.Second
	// drainTimeout bounds reading the last events and serial output
	// after QEMU exited; only a leaked socket descriptor (a child of
	// QEMU's keeping it open) would need it.
	drainTimeout = 5 * time.Second
	// stderrTail is how much of QEMU's stderr an error carries.
	stderrTail = 2000
)

// VM is one running QEMU process. Its methods are safe for concurrent
// use; after QEMU exits they fail, except Serial, Done, Err and Stop.
type VM struct {
	cfg   Config
	log   *slog.Logger
	accel string
	cmd   *exec.Cmd

	qmp           *qmpConn
	serial        *SerialLog
	serialConn    net.Conn
	serialWriteMu sync.Mutex
	serialDone    chan struct{} // closed when the serial reader returns
	// virtio is the guest's virtio console, when Config.VirtioConsole.
	virtio     *SerialLog
	virtioConn net.Conn
	// uploads are the files the guest sends on its upload port.
	uploads    *uploads
	uploadConn net.Conn

	exited chan struct{} // closed when the process is reaped
	done   chan struct{} // closed after exited, once the sockets are drained

	mu            sync.Mutex
	stopRequested bool
	// keysUntil is when QEMU will have played the keys SendKey queued:
	// each takes KeyHold pressed and KeyHold after its release.
	keysUntil time.Time
	killCause error
	shutdown  string // reason of the last SHUTDOWN event
	// screenW and screenH are the size of the last screendump.
	screenW, screenH int
	// Set before exited closes: what ended QEMU, seen at that moment.
	waitErr      error
	exitStopped  bool
	exitKilledBy error
	exitErr      error // set before done closes
}

// ExitError says why QEMU exited on its own, neither by Stop nor by the
// end of Start's context. A guest that powers off or reboots (which
// -no-reboot turns into an exit) ends here too; Shutdown tells them apart.
type ExitError struct {
	// Shutdown is the reason of QEMU's last SHUTDOWN event:
	// "guest-shutdown" (the guest powered off), "guest-reset" (it
	// rebooted), "guest-panic", "host-signal" (someone sent SIGTERM or
	// SIGINT), or "" if QEMU died without telling (crash, SIGKILL).
	Shutdown string
	// Err is the process's exit status; nil for a clean exit.
	Err error
	// Stderr is the end of what QEMU printed.
	Stderr string
}

func (e *ExitError) Error() string {
	var b strings.Builder
	b.WriteString("qemu exited")
	if e.Shutdown != "" {
		b.WriteString(" after shutdown (" + e.Shutdown + ")")
	}
	if e.Err != nil {
		b.WriteString(": " + e.Err.Error())
	}
	if e.Stderr != "" {
		b.WriteString("; stderr: " + e.Stderr)
	}
	return b.String()
}

func (e *ExitError) Unwrap() error { return e.Err }

// KVMUsable reports whether QEMU can use KVM here: on x86 the CPU shows
// vmx or svm, and /dev/kvm opens read-write, speaks the stable API and
// creates a VM. Start's "auto" uses KVM exactly when this is true (and
// logs why not when it is false).
func KVMUsable() bool { return kvmCheck() == nil }

// Start runs QEMU for cfg and returns once QMP answered, so the VM can take
// keys and screendumps right away. QEMU runs until Stop, until it exits by
// itself (see Done), or until ctx ends, which kills it. A failed Start
// leaves no process behind and its error carries QEMU's stderr.
func Start(ctx context.Context, cfg Config) (*VM, error) {
	if ctx.Err() != nil {
		return nil, fmt.Errorf("qemu: %w", context.Cause(ctx))
	}
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	accel, err := chooseAccel(cfg.Accel, cfg.Log)
	if err != nil {
		return nil, err
	}
	disks, err := cfg.media()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}

	qmpPath, serialPath := filepath.Join(cfg.Dir, qmpSocket), filepath.Join(cfg.Dir, serialSocket)
	qmpLn, err := listenUnix(qmpPath)
	if err != nil {
		return nil, err
	}
	defer qmpLn.Close()
	serialLn, err := listenUnix(serialPath)
	if err != nil {
		return nil, err
	}
	defer serialLn.Close()

	stderr, err := os.Create(filepath.Join(cfg.Dir, StderrLogFile))
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	// QEMU holds its own descriptor once started.
	defer stderr.Close()

	args := commandLine(cfg, accel, disks)
	cmd := exec.Command(cfg.Binary, args...)
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("qemu: starting %s: %w", cfg.Binary, err)
	}
	v := &VM{
		cfg:        cfg,
		log:        cfg.Log,
		accel:      accel,
		cmd:        cmd,
		serial:     NewSerialLog(),
		serialDone: make(chan struct{}),
		exited:     make(chan struct{}),
		done:       make(chan struct{}),
	}
	go v.wait()

	// abort ends a start that failed half way, closing what was opened.
	abort := func(err error) (*VM, error) {
		v.kill(err)
		<-v.exited
		if v.qmp != nil {
			v.qmp.close()
		}
		for _, c := range []net.Conn{v.serialConn, v.virtioConn} {
			if c != nil {
				c.Close()
			}
		}
		return nil, v.startError(err)
	}
	if err := v.connect(ctx, qmpLn, serialLn); err != nil {
		return abort(err)
	}
	// The sockets served their purpose: QEMU is connected for good.
	os.Remove(qmpPath)
	os.Remove(serialPath)

	if cfg.VirtioConsole {
		conn, err := net.Dial("unix", filepath.Join(cfg.Dir, virtioSocket))
		if err != nil {
			return abort(fmt.Errorf("connecting to the virtio console: %w", err))
		}
		v.virtio, v.virtioConn = NewSerialLog(), conn
		go func() {
			_, err := io.Copy(v.virtio, conn)
			if err == nil || errors.Is(err, net.ErrClosed) {
				err = errors.New("qemu: the virtio console closed")
			}
			v.virtio.CloseWithError(err)
		}()
	}
	if !cfg.NoUploadPort {
		conn, err := net.Dial("unix", filepath.Join(cfg.Dir, uploadSocket))
		if err != nil {
			return abort(fmt.Errorf("connecting to the upload port: %w", err))
		}
		v.uploads, v.uploadConn = newUploads(), conn
		go v.uploads.read(conn)
	}
	go v.readSerial()
	go v.supervise(ctx)
	v.log.Info("qemu started", "pid", cmd.Process.Pid, "accel", accel, "dir", cfg.Dir,
		"cmdline", cfg.Binary+" "+strings.Join(args, " "))
	return v, nil
}

// chooseAccel resolves "auto" and refuses "kvm" where KVM cannot work.
func chooseAccel(accel string, log *slog.Logger) (string, error) {
	switch accel {
	case "auto":
		if err := kvmCheck(); err != nil {
			log.Info("qemu: KVM not usable, using TCG", "why", err)
			return "tcg", nil
		}
		return "kvm", nil
	case "kvm":
		if err := kvmCheck(); err != nil {
			return "", fmt.Errorf("qemu: accel kvm: %w", err)
		}
	}
	return accel, nil
}

func listenUnix(path string) (net.Listener, error) {
	// A socket left by an earlier run in the same directory.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	return ln, nil
}

// connect accepts QEMU's connections to both sockets and negotiates QMP.
// It gives up when QEMU exits, ctx ends or StartTimeout passes.
func (v *VM) connect(ctx context.Context, qmpLn, serialLn net.Listener) error {
	exitCtx, cancelExit := context.WithCancelCause(ctx)
	defer cancelExit(nil)
	startCtx, cancel := context.WithTimeoutCause(exitCtx, v.cfg.StartTimeout,
		fmt.Errorf("QEMU did not connect and answer within %s", v.cfg.StartTimeout))
	defer cancel()
	go func() {
		select {
		case <-v.exited:
			cancelExit(errors.New("QEMU exited during start"))
		case <-startCtx.Done():
		}
	}()
	// Accept has no context: closing the listeners unblocks it.
	stopAccept := context.AfterFunc(startCtx, func() {
		qmpLn.Close()
		serialLn.Close()
	})
	defer stopAccept()

	qmpConn, err := qmpLn.Accept()
	if err != nil {
		return fmt.Errorf("waiting for the QMP connection: %w", acceptError(startCtx, err))
	}
	serialConn, err := serialLn.Accept()
	if err != nil {
		qmpConn.Close()
		return fmt.Errorf("waiting for the serial connection: %w", acceptError(startCtx, err))
	}
	v.serialConn = serialConn
	v.qmp, err = dialQMP(startCtx, qmpConn, v.log, v.onEvent)
	return err
}

// acceptError is why Accept failed: the listener closed because startCtx
// ended, or something else.
func acceptError(startCtx context.Context, err error) error {
	if startCtx.Err() != nil {
		return context.Cause(startCtx)
	}
	return err
}

// startError adds what QEMU said to why Start failed. When QEMU exited by
// itself, that exit is the story and err only its echo.
func (v *VM) startError(err error) error {
	v.mu.Lock()
	exitedByItself := v.exitKilledBy == nil
	waitErr := v.waitErr
	v.mu.Unlock()
	if exitedByItself {
		if waitErr == nil {
			waitErr = errors.New("exit status 0")
		}
		return fmt.Errorf("qemu: %s exited during start (%w)%s", v.cfg.Binary, waitErr, v.stderrNote())
	}
	return fmt.Errorf("qemu: %s: %w%s", v.cfg.Binary, err, v.stderrNote())
}

// stderrNote is "; stderr: " and the end of QEMU's stderr, or nothing if
// QEMU printed nothing.
func (v *VM) stderrNote() string {
	if tail := v.stderrTail(); tail != "" {
		return "; stderr: " + tail
	}
	return ""
}

func (v *VM) wait() {
	err := v.cmd.Wait()
	v.mu.Lock()
	v.waitErr = err
	v.exitStopped = v.stopRequested
	v.exitKilledBy = v.killCause
	v.mu.Unlock()
	close(v.exited)
}

func (v *VM) readSerial() {
	defer close(v.serialDone)
	if _, err := io.Copy(v.serial, v.serialConn); err != nil && !errors.Is(err, net.ErrClosed) {
		v.log.Warn("qemu: reading serial", "err", err)
	}
}

// supervise kills QEMU when ctx ends and, once it exited, collects its
// last words before closing done.
func (v *VM) supervise(ctx context.Context) {
	select {
	case <-v.exited:
	case <-ctx.Done():
		v.kill(fmt.Errorf("qemu killed: %w", context.Cause(ctx)))
		<-v.exited
	}
	// The final SHUTDOWN event and serial output may still sit in the
	// socket buffers: read them up to the end QEMU's exit put there.
	drain, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	select {
	case <-v.qmp.stopped:
	case <-drain.Done():
	}
	v.qmp.close()
	select {
	case <-v.serialDone:
	case <-drain.Done():
	}
	v.serialConn.Close()
	<-v.serialDone
	if v.virtioConn != nil {
		v.virtioConn.Close()
	}
	if v.uploadConn != nil {
		v.uploadConn.Close()
	}

	v.mu.Lock()
	switch {
	case v.exitStopped:
		v.exitErr = ErrStopped
	case v.exitKilledBy != nil:
		v.exitErr = v.exitKilledBy
	default:
		v.exitErr = &ExitError{Shutdown: v.shutdown, Err: v.waitErr, Stderr: v.stderrTail()}
	}
	exitErr := v.exitErr
	v.mu.Unlock()
	v.serial.CloseWithError(exitErr)
	v.log.Info("qemu ended", "pid", v.cmd.Process.Pid, "why", exitErr)
	close(v.done)
}

// kill sends SIGKILL; cause is what Err will report unless Stop came first.
func (v *VM) kill(cause error) {
	v.mu.Lock()
	if v.killCause == nil && !v.stopRequested {
		v.killCause = cause
	}
	v.mu.Unlock()
	if err := v.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		v.log.Warn("qemu: kill", "pid", v.cmd.Process.Pid, "err", err)
	}
}

func (v *VM) onEvent(e qmpEvent) {
	switch e.Name {
	case "SHUTDOWN":
		var d struct {
			Guest  bool   `json:"guest"`
			Reason string `json:"reason"`
		}
		_ = json.Unmarshal(e.Data, &d)
		v.mu.Lock()
		v.shutdown = d.Reason
		v.mu.Unlock()
		v.log.Info("qemu: shutdown", "reason", d.Reason, "by_guest", d.Guest)
	case "GUEST_PANICKED":
		v.log.Warn("qemu: guest panicked", "data", string(e.Data))
	default:
		v.log.Debug("qemu: event", "event", e.Name, "data", string(e.Data))
	}
}

func (v *VM) stderrTail() string {
	data, err := os.ReadFile(filepath.Join(v.cfg.Dir, StderrLogFile))
	if err != nil {
		return "(" + err.Error() + ")"
	}
	data = data[max(len(data)-stderrTail, 0):]
	return strings.TrimSpace(string(data))
}

// Accel is the accelerator QEMU runs with: "kvm" or "tcg".
func (v *VM) Accel() string { return v.accel }

// PID is QEMU's process id.
func (v *VM) PID() int { return v.cmd.Process.Pid }

// Serial is everything the guest wrote to its first serial port (ttyS0).
// It closes, with Err as the reason, when QEMU ended.
func (v *VM) Serial() *SerialLog { return v.serial }

// Done is closed when QEMU has exited, been reaped, and its last events
// and serial output were read.
func (v *VM) Done() <-chan struct{} { return v.done }

// Err is nil while QEMU runs. Once Done is closed it says why QEMU ended:
// ErrStopped after Stop; the cause of Start's context when that ended
// (errors.Is(err, context.Canceled) or context.DeadlineExceeded); or an
// *ExitError when QEMU exited on its own.
func (v *VM) Err() error {
	select {
	case <-v.done:
	default:
		return nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.exitErr
}

// Stop asks QEMU to quit, kills it if it has not within a grace period or
// when ctx ends, and returns once it is reaped. Stopping an ended VM does
// nothing, so Stop can always be deferred.
func (v *VM) Stop(ctx context.Context) error {
	v.mu.Lock()
	v.stopRequested = true
	v.mu.Unlock()
	select {
	case <-v.done:
		return nil
	default:
	}
	quitCtx, cancel := context.WithTimeout(ctx, quitGrace)
	defer cancel()
	if err := v.qmp.execute(quitCtx, "quit", nil, nil); err != nil {
		// Often just QEMU closing the connection as it exits.
		v.log.Debug("qemu: quit", "err", err)
	}
	select {
	case <-v.exited:
	case <-quitCtx.Done():
		v.log.Warn("qemu did not quit in time, killing it", "pid", v.PID())
		v.kill(ErrStopped)
	}
	<-v.done
	return nil
}

// Screendump returns the screen as PNG. QEMU writes it to a file in the
// run directory, which is removed again.
func (v *VM) Screendump(ctx context.Context) ([]byte, error) {
	f, err := os.CreateTemp(v.cfg.Dir, "screendump-*.png")
	if err != nil {
		return nil, fmt.Errorf("qemu: screendump: %w", err)
	}
	name := f.Name()
	f.Close()
	defer os.Remove(name)
	args := map[string]string{"filename": name, "format": "png"}
	if err := v.qmp.execute(ctx, "screendump", args, nil); err != nil {
		return nil, fmt.Errorf("qemu: %w", err)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("qemu: screendump: %w", err)
	}
	if len(data) == 0 {
		return nil, errors.New("qemu: screendump: QEMU wrote an empty file")
	}
	if cfg, err := png.DecodeConfig(bytes.NewReader(data)); err == nil {
		v.mu.Lock()
		v.screenW, v.screenH = cfg.Width, cfg.Height
		v.mu.Unlock()
	}
	return data, nil
}

// maxQueuedKeys is how many keys SendKey lets QEMU hold at once.
const maxQueuedKeys = 6

// keyValue is QMP's KeyValue of kind qcode.
type keyValue struct {
	Type string `json:"type"`
	Data string `json:"data"`
}

// SendKey presses and releases one key or combination, named as in
// os-autoinst: "ret", "esc", "ctrl-alt-delete", "alt-f2", "A", "|".
// QEMU queues the key events and paces them by KeyHold, so SendKey returns
// before the guest saw the key; later keys still arrive after it.
func (v *VM) SendKey(ctx context.Context, key string) error {
	codes, err := qcodes(key)
	if err != nil {
		return fmt.Errorf("qemu: send key: %w", err)
	}
	// QEMU holds at most 50 input events and drops the rest; a key is 3
	// to 7 (each press, the hold, each release). Keep only a few keys
	// queued, or long strings lose characters.
	v.mu.Lock()
	ahead := time.Until(v.keysUntil)
	v.mu.Unlock()
	if budget := maxQueuedKeys * 2 * v.cfg.KeyHold; ahead > budget {
		if err := pause(ctx, ahead-budget); err != nil {
			return fmt.Errorf("qemu: send key %q: %w", key, err)
		}
	}
	keys := make([]keyValue, len(codes))
	for i, c := range codes {
		keys[i] = keyValue{Type: "qcode", Data: c}
	}
	args := struct {
		Keys     []keyValue `json:"keys"`
		HoldTime int64      `json:"hold-time"`
	}{keys, v.cfg.KeyHold.Milliseconds()}
	if err := v.qmp.execute(ctx, "send-key", args, nil); err != nil {
		return fmt.Errorf("qemu: send key %q: %w", key, err)
	}
	v.mu.Lock()
	v.keysUntil = later(v.keysUntil, time.Now()).Add(2 * v.cfg.KeyHold)
	v.mu.Unlock()
	return nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// TypeString types s on a US keyboard, one key per character ("\n" is
// ret, "A" is shift-a, "|" is shift-backslash), pausing perKey between
// keys. It checks every character before typing the first one. Errors
// never quote s, which may be a password.
func (v *VM) TypeString(ctx context.Context, s string, perKey time.Duration) error {
	keys, err := keysForString(s)
	if err != nil {
		return fmt.Errorf("qemu: type string: %w", err)
	}
	for i, k := range keys {
		if i > 0 && perKey > 0 {
			if err := pause(ctx, perKey); err != nil {
				return fmt.Errorf("qemu: type string: stopped after %d of %d keys: %w", i, len(keys), err)
			}
		}
		if err := v.SendKey(ctx, k); err != nil {
			return fmt.Errorf("qemu: type string: stopped after %d of %d keys: %w", i, len(keys), err)
		}
	}
	return nil
}

// pause waits d, or less if ctx ends.
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// WriteSerial sends data to the guest's serial port, as if typed on a
// terminal attached to ttyS0. It blocks while the guest does not read,
// until ctx ends.
func (v *VM) WriteSerial(ctx context.Context, data []byte) error {
	v.serialWriteMu.Lock()
	defer v.serialWriteMu.Unlock()
	if err := writeContext(ctx, v.serialConn, data); err != nil {
		return fmt.Errorf("qemu: write serial: %w", err)
	}
	return nil
}

// Virtio is what the guest wrote to its virtio console; nil when the
// machine has none.
func (v *VM) Virtio() *SerialLog { return v.virtio }

// WriteVirtio sends data to the guest's virtio console, as typed on a
// terminal attached to hvc0.
func (v *VM) WriteVirtio(ctx context.Context, data []byte) error {
	if v.virtioConn == nil {
		return errors.New("qemu: the machine has no virtio console")
	}
	v.serialWriteMu.Lock()
	defer v.serialWriteMu.Unlock()
	if err := writeContext(ctx, v.virtioConn, data); err != nil {
		return fmt.Errorf("qemu: write virtio console: %w", err)
	}
	return nil
}

// keyEvents presses (down) or releases each key of a combination, named
// as for SendKey, in one QMP input-send-event.
func (v *VM) keyEvents(ctx context.Context, key string, down bool) error {
	codes, err := qcodes(key)
	if err != nil {
		return err
	}
	// Input events go to the guest at once, queued keys later: wait for
	// those, so keys arrive in the order the test sent them.
	v.mu.Lock()
	wait := time.Until(v.keysUntil)
	v.mu.Unlock()
	if wait > 0 {
		if err := pause(ctx, wait+v.cfg.KeyHold); err != nil {
			return err
		}
	}
	type keyEvent struct {
		Down bool     `json:"down"`
		Key  keyValue `json:"key"`
	}
	type inputEvent struct {
		Type string   `json:"type"`
		Data keyEvent `json:"data"`
	}
	events := make([]inputEvent, len(codes))
	for i, c := range codes {
		events[i] = inputEvent{Type: "key", Data: keyEvent{Down: down, Key: keyValue{Type: "qcode", Data: c}}}
	}
	return v.qmp.execute(ctx, "input-send-event", map[string]any{"events": events}, nil)
}

// HoldKey presses a key or combination and keeps it down until
// ReleaseKey, as os-autoinst's hold_key.
func (v *VM) HoldKey(ctx context.Context, key string) error {
	if err := v.keyEvents(ctx, key, true); err != nil {
		return fmt.Errorf("qemu: hold key %q: %w", key, err)
	}
	return nil
}

// ReleaseKey releases what HoldKey pressed.
func (v *VM) ReleaseKey(ctx context.Context, key string) error {
	if err := v.keyEvents(ctx, key, false); err != nil {
		return fmt.Errorf("qemu: release key %q: %w", key, err)
	}
	return nil
}

// Power acts on the machine's power as os-autoinst's power(): "acpi"
// presses the power button (the guest shuts down), "reset" resets it at
// once, "off" pulls the plug (QEMU ends, and Done closes).
func (v *VM) Power(ctx context.Context, action string) error {
	var cmd string
	switch action {
	case "acpi":
		cmd = "system_powerdown"
	case "reset":
		cmd = "system_reset"
	case "off":
		cmd = "quit"
		v.mu.Lock()
		v.stopRequested = true
		v.mu.Unlock()
	default:
		return fmt.Errorf("qemu: power %q: use acpi, reset or off", action)
	}
	if err := v.qmp.execute(ctx, cmd, nil, nil); err != nil {
		return fmt.Errorf("qemu: power %s: %w", action, err)
	}
	return nil
}

// EjectCD opens the CD-ROM drive, as os-autoinst's eject_cd.
func (v *VM) EjectCD(ctx context.Context) error {
	if v.cfg.ISO == "" {
		return errors.New("qemu: eject: the machine has no CD-ROM (no ISO)")
	}
	if err := v.qmp.execute(ctx, "eject", map[string]any{"device": cdDrive, "force": true}, nil); err != nil {
		return fmt.Errorf("qemu: eject: %w", err)
	}
	return nil
}

// SaveSnapshot saves the machine's state, memory and disks, under name in
// its qcow2 disks (QEMU's internal snapshots, savevm), replacing an older
// one of that name. Every writable disk must be qcow2: the job's disks
// and overlays are, a raw one makes it fail, naming the device.
//
// The guest gets a moment to take the keys sent last first: a snapshot
// taken while a key combination (a select_console's ctrl-alt-f1 just
// before a milestone) still waits in the keyboard controller comes back
// with it half read, and after a rollback the guest loses or misreads the
// keys typed next.
func (v *VM) SaveSnapshot(ctx context.Context, name string) error {
	v.mu.Lock()
	settle := time.Until(v.keysUntil) + keysSettle
	v.mu.Unlock()
	if settle > 0 {
		if err := pause(ctx, settle); err != nil {
			return fmt.Errorf("qemu: savevm %s: %w", name, err)
		}
	}
	return v.hmp(ctx, "savevm "+name)
}

// keysSettle is how long after its last key a guest under TCG is given
// to read them from the keyboard controller.
const keysSettle = time.Second

// LoadSnapshot brings the machine back to the state saved under name.
func (v *VM) LoadSnapshot(ctx context.Context, name string) error {
	return v.hmp(ctx, "loadvm "+name)
}

// Freeze stops the machine's CPUs, as os-autoinst's freeze_vm; Continue
// starts them again.
func (v *VM) Freeze(ctx context.Context) error { return v.qmp.execute(ctx, "stop", nil, nil) }

// Continue starts the machine's CPUs after Freeze.
func (v *VM) Continue(ctx context.Context) error { return v.qmp.execute(ctx, "cont", nil, nil) }

// SetLink plugs the network card's cable in or pulls it, as os-autoinst's
// switch_network; name is the network's, NetworkName for the machine's.
func (v *VM) SetLink(ctx context.Context, name string, up bool) error {
	if v.cfg.NICModel == "" {
		return errors.New("qemu: the machine has no network card (NICTYPE=none)")
	}
	if err := v.qmp.execute(ctx, "set_link", map[string]any{"name": name, "up": up}, nil); err != nil {
		return fmt.Errorf("qemu: set_link %s: %w", name, err)
	}
	return nil
}

// DumpMemory writes the guest's memory to file as an ELF core (QEMU's
// dump-guest-memory, which crash and gdb read); the machine runs on.
func (v *VM) DumpMemory(ctx context.Context, file string) error {
	if err := v.qmp.execute(ctx, "dump-guest-memory", map[string]any{"paging": false, "protocol": "file:" + file}, nil); err != nil {
		return fmt.Errorf("qemu: dump-guest-memory: %w", err)
	}
	return nil
}

// CopyDisk writes the machine's disk n (from 1, as HDD_n) as a qcow2 of
// its own to file, its backing chain flattened, while the machine runs.
func (v *VM) CopyDisk(ctx context.Context, n int, file string) error {
	if n < 1 || n > len(v.cfg.HDDs) {
		return fmt.Errorf("qemu: disk %d: the machine has %d", n, len(v.cfg.HDDs))
	}
	// -U: QEMU holds the image's write lock; the copy is what the disk
	// holds now, as a crash would leave it.
	if out, err := exec.CommandContext(ctx, "qemu-img", "convert", "-U", "-O", "qcow2", v.cfg.HDDs[n-1], file).CombinedOutput(); err != nil {
		return fmt.Errorf("qemu: copy of disk %d: %v: %s", n, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// hmp runs a human monitor command: it answers with text, which is empty
// when the command worked and the error otherwise.
func (v *VM) hmp(ctx context.Context, line string) error {
	var out string
	if err := v.qmp.execute(ctx, "human-monitor-command", map[string]string{"command-line": line}, &out); err != nil {
		return fmt.Errorf("qemu: %s: %w", line, err)
	}
	if out = strings.TrimSpace(out); out != "" {
		return fmt.Errorf("qemu: %s: %s", line, strings.TrimPrefix(out, "Error: "))
	}
	return nil
}

// absMax is the largest coordinate of QEMU's absolute pointer events.
const absMax = 0x7fff

// screenSize is the size of the screen the last screendump showed, taking
// one if there was none.
func (v *VM) screenSize(ctx context.Context) (int, int, error) {
	v.mu.Lock()
	w, h := v.screenW, v.screenH
	v.mu.Unlock()
	if w > 0 && h > 0 {
		return w, h, nil
	}
	if _, err := v.Screendump(ctx); err != nil {
		return 0, 0, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.screenW <= 1 || v.screenH <= 1 {
		return 0, 0, errors.New("qemu: the screen's size is unknown")
	}
	return v.screenW, v.screenH, nil
}

// MouseSet moves the pointer (the USB tablet) to pixel x, y of the
// screen, as os-autoinst's mouse_set; coordinates outside the screen are
// clamped to its edge.
func (v *VM) MouseSet(ctx context.Context, x, y int) error {
	if v.cfg.NoTablet {
		return errors.New("qemu: the machine has no pointer (QEMU_NO_TABLET is set)")
	}
	w, h, err := v.screenSize(ctx)
	if err != nil {
		return err
	}
	scale := func(p, size int) int { return min(max(p, 0), size-1) * absMax / (size - 1) }
	events := []map[string]any{
		{"type": "abs", "data": map[string]any{"axis": "x", "value": scale(x, w)}},
		{"type": "abs", "data": map[string]any{"axis": "y", "value": scale(y, h)}},
	}
	if err := v.qmp.execute(ctx, "input-send-event", map[string]any{"events": events}, nil); err != nil {
		return fmt.Errorf("qemu: mouse_set(%d, %d): %w", x, y, err)
	}
	return nil
}

// MouseButton presses (down) or releases a button: left, right or middle.
func (v *VM) MouseButton(ctx context.Context, button string, down bool) error {
	if v.cfg.NoTablet {
		return errors.New("qemu: the machine has no pointer (QEMU_NO_TABLET is set)")
	}
	switch button {
	case "left", "right", "middle":
	default:
		return fmt.Errorf("qemu: mouse button %q: use left, right or middle", button)
	}
	events := []map[string]any{{"type": "btn", "data": map[string]any{"button": button, "down": down}}}
	if err := v.qmp.execute(ctx, "input-send-event", map[string]any{"events": events}, nil); err != nil {
		return fmt.Errorf("qemu: mouse button %s: %w", button, err)
	}
	return nil
}

// MouseHide moves the pointer to the bottom right corner, less offset
// pixels, as os-autoinst's mouse_hide.
func (v *VM) MouseHide(ctx context.Context, offset int) error {
	w, h, err := v.screenSize(ctx)
	if err != nil {
		return err
	}
	return v.MouseSet(ctx, w-1-offset, h-1-offset)
}

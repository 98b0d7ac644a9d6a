// Package boot is the stage of one worker instance: it registers the
// instance, takes the jobs made ready for it, boots each job's VM under
// QEMU, runs the job's Starlark test modules against it — screens go to the
// matcher pool, never to OpenCV here — and reports the modules' results.
package boot

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"jetqa/schemas"
	"jetqa/stages/boot/qemu"
	"jetqa/streams"
)

// Config of one worker instance.
type Config struct {
	Worker schemas.WorkerRef
	// Classes is the instance's WORKER_CLASS; default qemu_x86_64.
	Classes []string
	// QEMU is the emulator binary; default qemu-system-x86_64.
	QEMU string
	// Accel is auto (KVM when usable, else TCG), kvm or tcg.
	Accel string
	// MatchTimeout bounds the wait for one answer of the matcher pool.
	MatchTimeout time.Duration
	// HeartbeatInterval is how often the instance says it is alive; it must
	// be well below the scheduler's worker timeout. Default 10 s.
	HeartbeatInterval time.Duration
	// MemoryMiB is announced to the scheduler; default the host's memory.
	MemoryMiB int
	// Slot is shared with the instance's boot stages for other servers;
	// nil when the instance serves one server.
	Slot *Slot
	// Forbidden are job settings this worker refuses (QEMU_APPEND,
	// UEFI_PFLASH_CODE, …): a job that sets one ends incomplete, naming it.
	Forbidden []string
	// GuestBridge is the command QEMU runs, with a unix socket's path
	// appended, for each connection the guest of a Perl job opens to the
	// job's routes (os-autoinst's autoinst_url): jetqa's guest-bridge.
	// Empty: the guest has no routes.
	GuestBridge []string
}

func (c Config) withDefaults() Config {
	if len(c.Classes) == 0 {
		c.Classes = []string{"qemu_x86_64"}
	}
	if c.QEMU == "" {
		c.QEMU = "qemu-system-x86_64"
	}
	if c.Accel == "" {
		c.Accel = "auto"
	}
	if c.MatchTimeout == 0 {
		c.MatchTimeout = time.Minute
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 10 * time.Second
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = hostMemoryMiB()
	}
	if c.Slot == nil {
		c.Slot = NewSlot()
	}
	return c
}

func (c Config) validate() error {
	if c.Worker.Host == "" || c.Worker.Instance < 1 {
		return fmt.Errorf("boot: worker %q: needs a host and an instance number ≥ 1", c.Worker.String())
	}
	switch c.Accel {
	case "auto", "kvm", "tcg":
	default:
		return fmt.Errorf("boot: accel %q: use auto, kvm or tcg", c.Accel)
	}
	return nil
}

// Bus is what the boot stage needs of the event streams and blob store.
type Bus interface {
	Append(ctx context.Context, job int64, p schemas.Payload) (uint64, error)
	Consume(ctx context.Context, cfg streams.ConsumerConfig, h streams.Handler) error
	Watch(ctx context.Context, cfg streams.WatchConfig, fn func(schemas.Event, schemas.Payload, streams.Delivery) error) error
	FollowJob(ctx context.Context, job int64, after uint64, fn func(schemas.Event, schemas.Payload, streams.Delivery) error) error
	LastSequence(ctx context.Context, stream string) (uint64, error)
	LoadJob(ctx context.Context, job int64) (*schemas.JobAggregate, error)
	LoadJobAt(ctx context.Context, job int64, seq uint64) (*schemas.JobAggregate, error)
	PutBlob(ctx context.Context, bucket, key string, r io.Reader) error
	HasBlob(ctx context.Context, bucket, key string) (bool, error)
	GetBlob(ctx context.Context, bucket, key string) ([]byte, error)
	ServeLive(ctx context.Context, w schemas.WorkerRef, show func(ctx context.Context, job int64) (streams.Live, error)) error
}

// Stage is one worker instance's boot stage.
type Stage struct {
	cfg     Config
	bus     Bus
	log     *slog.Logger
	running atomic.Int64 // the job being run, for heartbeats
	// live is the running job's test, for the live view.
	live atomic.Pointer[runner]
}

// New returns the boot stage of one worker instance.
func New(cfg Config, bus Bus, log *slog.Logger) (*Stage, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Stage{cfg: cfg, bus: bus, log: log.With("worker", cfg.Worker.String())}, nil
}

// Run registers the instance, heartbeats, and runs the jobs made ready for
// it, one at a time, until ctx ends.
func (s *Stage) Run(ctx context.Context) error {
	reg := schemas.WorkerRegistered{
		Worker: s.cfg.Worker, Classes: s.cfg.Classes, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(),
		MemoryMiB: s.cfg.MemoryMiB, KVM: qemu.KVMUsable(),
	}
	if _, err := s.bus.Append(ctx, 0, reg); err != nil {
		return fmt.Errorf("register worker %s: %w", s.cfg.Worker, err)
	}
	s.log.Info("worker registered", "classes", s.cfg.Classes, "kvm", reg.KVM)
	go s.heartbeat(ctx)
	go func() {
		if err := s.bus.ServeLive(ctx, s.cfg.Worker, s.showLive); err != nil {
			s.log.Warn("no live view", "err", err)
		}
	}()
	return s.bus.Consume(ctx, streams.ConsumerConfig{
		Stream:  streams.StreamJobs,
		Durable: streams.BootDurable(s.cfg.Worker),
		Filters: []string{streams.ReadyFor(s.cfg.Worker)},
		AckWait: time.Minute,
		// A delivery after the first ends the job incomplete (see handle),
		// so more deliveries never run a job twice; they let a job whose
		// first tries failed while a NATS node was lost (1, 5 and 30 s
		// apart) still end with a result instead of being dead-lettered
		// and left waiting for good.
		MaxDeliver: 5,
	}, s.handle)
}

func (s *Stage) heartbeat(ctx context.Context) {
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			hb := schemas.WorkerHeartbeat{Worker: s.cfg.Worker, Job: s.running.Load(), BusyElsewhere: s.cfg.Slot.heldByOther(s)}
			if _, err := s.bus.Append(ctx, 0, hb); err != nil && ctx.Err() == nil {
				s.log.Warn("heartbeat not sent", "err", err)
			}
		}
	}
}

// Why a job stopped before its tests ended.
var (
	errCancelled = errors.New("cancelled by user")
	errGivenAway = errors.New("the job was given away or ended without this worker")
)

func (s *Stage) handle(ctx context.Context, ev schemas.Event, p schemas.Payload, d streams.Delivery) error {
	ready, ok := p.(*schemas.JobReady)
	if !ok {
		return nil
	}
	log := s.log.With("job", ev.Job)
	agg, err := s.bus.LoadJobAt(ctx, ev.Job, d.Sequence)
	if err != nil {
		return err
	}
	if agg.Final() || agg.Worker == nil || *agg.Worker != s.cfg.Worker {
		log.Info("not starting a job that is no longer this worker's", "state", agg.State)
		return nil
	}
	// A delivery after the first, or a job started already but not by
	// this process: the instance stopped while it ran the job and was
	// started again, before anyone declared it offline. Nobody else ends
	// such a job: the instance registers and heartbeats again.
	restarted := d.Redelivery > 0
	if agg.Started {
		if s.running.Load() == ev.Job {
			return nil // this process runs it and reports its end
		}
		restarted = true
	}
	resultsDir := filepath.Join(ready.JobDir, "results")
	if err := os.MkdirAll(resultsDir, 0o755); err != nil {
		return err
	}
	finished := schemas.TestsFinished{Worker: s.cfg.Worker, ResultsDir: resultsDir}
	if restarted {
		// The instance stopped while it ran this job; running it again here
		// could act twice on its assets.
		finished.Result, finished.Reason = schemas.ResultIncomplete, "the worker instance restarted while running the job"
	} else {
		// Another server's job may hold the VM: this one waits for it.
		if err := s.cfg.Slot.take(ctx, s); err != nil {
			return err
		}
		defer s.cfg.Slot.release()
		s.running.Store(ev.Job)
		defer s.running.Store(0)
		jobCtx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		dev := newDeveloper()
		go s.followJob(jobCtx, cancel, ev.Job, agg.Seq, dev)
		finished.Assets = map[string]string{}
		finished.Result, finished.Reason, finished.Modules = s.runJob(jobCtx, ev.Job, ready, resultsDir, dev, finished.Assets)
		switch cause := context.Cause(jobCtx); {
		case ctx.Err() != nil:
			// Shutting down: the job is redelivered and ends incomplete then.
			return ctx.Err()
		case errors.Is(cause, errGivenAway):
			log.Warn("VM stopped: the job is no longer this worker's")
			return nil
		case errors.Is(cause, errCancelled):
			finished.Result, finished.Reason = schemas.ResultUserCancelled, "cancelled by user"
		}
		if !passed(finished.Result) {
			// As openQA: only a job that passed publishes what it made.
			finished.Assets = nil
		}
	}
	_, err = s.bus.Append(ctx, ev.Job, finished)
	if errors.Is(err, schemas.ErrTransition) {
		log.Warn("results not reported: the job moved on without this worker", "why", err)
		return nil
	}
	return err
}

// followJob watches the running job's events: it hands developer
// commands to the test, and stops the job when a user cancels it or when
// the job is ended or given away without this worker (it was declared
// offline, for instance).
func (s *Stage) followJob(ctx context.Context, stop context.CancelCauseFunc, job int64, after uint64, dev *developer) {
	_ = s.bus.FollowJob(ctx, job, after,
		func(_ schemas.Event, p schemas.Payload, d streams.Delivery) error {
			switch p := p.(type) {
			case *schemas.DeveloperCommand:
				dev.command(d.Sequence, *p)
			case *schemas.JobCancelRequested:
				stop(errCancelled)
				return streams.ErrStopWatch
			case *schemas.JobFinished, *schemas.JobUnassigned:
				stop(errGivenAway)
				return streams.ErrStopWatch
			case *schemas.JobAssigned:
				if p.Worker != s.cfg.Worker {
					stop(errGivenAway)
					return streams.ErrStopWatch
				}
			}
			return nil
		})
}

// runJob boots the VM and runs the test modules; it returns the job's
// result, the reason when it did not pass, and the modules' results.
func (s *Stage) runJob(ctx context.Context, job int64, ready *schemas.JobReady, resultsDir string, dev *developer, published map[string]string) (string, string, []schemas.ModuleResult) {
	log := s.log.With("job", job)
	// The job's own log, among its results as openQA's autoinst-log.txt:
	// every testapi call, module and VM event of the job.
	if f, err := os.Create(filepath.Join(resultsDir, autoinstLog)); err == nil {
		defer f.Close()
		log = slog.New(slog.NewMultiHandler(log.Handler(), slog.NewTextHandler(f, nil)))
	} else {
		log.Warn("no autoinst-log.txt", "err", err)
	}
	settings := ready.Settings
	maxTime := 2 * time.Hour
	if v := settings["MAX_JOB_TIME"]; v != "" {
		secs, err := strconv.Atoi(v)
		if err != nil || secs <= 0 {
			return schemas.ResultIncomplete, fmt.Sprintf("MAX_JOB_TIME=%q: give a number of seconds", v), nil
		}
		maxTime = time.Duration(secs) * time.Second
	}
	qcfg, err := machineConfig(ctx, s.cfg, ready, filepath.Join(ready.JobDir, "vm"), log)
	if err != nil {
		return schemas.ResultIncomplete, err.Error(), nil
	}
	disks, err := disksToPublish(settings, qcfg.HDDs)
	if err != nil {
		return schemas.ResultIncomplete, err.Error(), nil
	}
	scale, err := timeoutScale(settings)
	if err != nil {
		return schemas.ResultIncomplete, err.Error(), nil
	}
	if settings["TIMEOUT_SCALE"] == "" && (qcfg.Accel == "tcg" || qcfg.Accel == "auto" && !qemu.KVMUsable()) {
		// Emulated, a guest runs several times slower than openQA's
		// timeouts assume.
		scale = tcgTimeoutScale
		log.Info("no KVM: TIMEOUT_SCALE raised", "timeout_scale", scale)
	}
	maxTime = time.Duration(float64(maxTime) * scale)
	jobCtx, overTime := withMaxJobTime(ctx, maxTime)
	defer overTime(nil)

	var tests []*testModule
	var consoles map[string]console
	var perl *perlSide
	var routes *guestRoutes
	productDir := cmp.Or(ready.ProductDir, ready.CaseDir)
	if perlMainFile(ready.CaseDir, productDir) != "" {
		vars := perlVars(settings, ready.CaseDir, productDir, ready.NeedlesDir, scale)
		poolDir := filepath.Join(ready.JobDir, "perl")
		if qcfg.NICModel != "" && len(s.cfg.GuestBridge) > 0 {
			if routes, err = newGuestRoutes(job, ready, poolDir, resultsDir, log); err != nil {
				return schemas.ResultIncomplete, err.Error(), nil
			}
			sock, stop, err := serveGuest(jobCtx, routes)
			if err != nil {
				return schemas.ResultIncomplete, err.Error(), nil
			}
			defer stop()
			routes.guestVars(vars)
			qcfg.GuestCommand = append(slices.Clone(s.cfg.GuestBridge), sock)
		}
		if perl, err = startPerl(jobCtx, poolDir, vars, log); err != nil {
			return schemas.ResultIncomplete, err.Error(), nil
		}
		defer perl.stop()
		consoles = map[string]console{}
		for _, c := range perl.schedule.Consoles {
			if c.Class == "consoles::virtio_terminal" {
				qcfg.VirtioConsole = true
			}
		}
	} else {
		if tests, consoles, err = loadTests(jobCtx, ready.CaseDir, productDir, settings); err != nil {
			return schemas.ResultIncomplete, err.Error(), nil
		}
		qcfg.VirtioConsole = needsVirtioConsole(consoles)
	}
	load := loadNeedles
	if perl != nil {
		load = func(dir string) (*needleSet, error) { return loadNeedlesAsOSAutoinst(dir, log) }
	}
	needles, err := load(ready.NeedlesDir)
	if err != nil {
		return schemas.ResultIncomplete, err.Error(), nil
	}
	vm, err := qemu.Start(jobCtx, qcfg)
	if err != nil {
		return schemas.ResultIncomplete, "QEMU did not start: " + err.Error(), nil
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		if err := vm.Stop(stopCtx); err != nil {
			log.Warn("stopping QEMU", "err", err)
		}
		copySerialLog(qcfg.Dir, resultsDir)
	}()
	started := schemas.JobStarted{Worker: s.cfg.Worker, Accel: vm.Accel()}
	if perl != nil {
		started.TestSide = fmt.Sprintf("os-autoinst interface %d", perl.schedule.Interface)
		if dir := osAutoinstDir(); dir != defaultOSAutoinst {
			started.TestSide += " at " + dir
		}
	}
	if _, err := s.bus.Append(ctx, job, started); err != nil {
		return schemas.ResultIncomplete, "job not started: " + err.Error(), nil
	}
	log.Info("VM started", "accel", vm.Accel())
	matcher, err := startMatcher(jobCtx, s.bus, s.cfg.Worker, job, ready.NeedlesCommit)
	if err != nil {
		return schemas.ResultIncomplete, err.Error(), nil
	}
	r := &runner{
		ctx: jobCtx, job: job, bus: s.bus, vm: vm, needles: needles, matcher: matcher, assets: published,
		settings: settings, scale: scale, resultsDir: resultsDir, log: log, matchTimeout: s.cfg.MatchTimeout,
		worker: s.cfg.Worker, dev: dev, consoles: consoles, snapshots: settings["QEMU_DISABLE_SNAPSHOTS"] != "1",
	}
	s.live.Store(r)
	defer s.live.Store(nil)
	rec := &recorder{vm: vm, dir: filepath.Join(ready.JobDir, "frames"), log: log, interval: frameInterval,
		stallAfter: time.Duration(float64(stallAfter) * scale), maxFrames: maxFrames, module: dev.running}
	if settings["NOVIDEO"] == "1" {
		rec.maxFrames = 0
	}
	recCtx, stopRecording := context.WithCancel(jobCtx)
	recorded := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(recorded)
		rec.run(recCtx)
	}()
	var result, reason string
	var modules []schemas.ModuleResult
	if perl != nil {
		result, reason, modules = r.runPerl(perl)
		if routes != nil {
			routes.publishInto(published)
		}
	} else {
		result, reason, modules = r.runModules(tests)
	}
	stopRecording()
	<-recorded
	videoCtx, cancelVideo := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Minute)
	rec.finish(videoCtx, resultsDir, time.Since(start))
	cancelVideo()
	if errors.Is(context.Cause(jobCtx), errMaxJobTime) && ctx.Err() == nil {
		return schemas.ResultTimeoutExceeded, fmt.Sprintf("the job ran longer than MAX_JOB_TIME (%s)", maxTime), modules
	}
	if passed(result) && len(disks) > 0 {
		stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		err := vm.Stop(stopCtx)
		cancel()
		if err == nil {
			err = publishDisks(ctx, disks, filepath.Join(ready.JobDir, "publish"), settings["QEMU_COMPRESS_QCOW2"] != "0", published, log)
		}
		if err != nil {
			return schemas.ResultIncomplete, err.Error(), modules
		}
	}
	return result, reason, modules
}

// errMaxJobTime ends a job that ran longer than MAX_JOB_TIME.
var errMaxJobTime = errors.New("the job ran longer than MAX_JOB_TIME")

// withMaxJobTime is ctx cancelled with errMaxJobTime after d. It has no
// deadline: a JetStream request made with a context that has one waits
// until that deadline for a reply it will never get when the NATS node
// that took it dies, while without one it waits the client's API timeout
// (5 s) and fails, so a job never hangs for its hours of MAX_JOB_TIME on
// a lost node.
func withMaxJobTime(ctx context.Context, d time.Duration) (context.Context, context.CancelCauseFunc) {
	jobCtx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(d, func() { cancel(errMaxJobTime) })
	return jobCtx, func(cause error) {
		timer.Stop()
		cancel(cause)
	}
}

// passed says whether a job with result publishes its assets.
func passed(result string) bool {
	return result == schemas.ResultPassed || result == schemas.ResultSoftfailed
}

// The recorder's pace: a frame every half second, as os-autoinst takes
// them; a stall after a minute (scaled by TIMEOUT_SCALE) of no change; at
// most an hour of changing frames.
const (
	frameInterval = 500 * time.Millisecond
	stallAfter    = time.Minute
	maxFrames     = 7200
)

// autoinstLog is the job's log among its results, named as openQA's.
const autoinstLog = "autoinst-log.txt"

// tcgTimeoutScale is TIMEOUT_SCALE under TCG when the job sets none.
const tcgTimeoutScale = 2

func timeoutScale(settings map[string]string) (float64, error) {
	v := settings["TIMEOUT_SCALE"]
	if v == "" {
		return 1, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		return 0, fmt.Errorf("TIMEOUT_SCALE=%q: give a positive number", v)
	}
	return f, nil
}

// copySerialLog copies the serial log QEMU wrote, in pieces: a guest that
// flooded its console may have written gigabytes.
func copySerialLog(vmDir, resultsDir string) {
	in, err := os.Open(filepath.Join(vmDir, "serial0.log"))
	if err != nil {
		return
	}
	defer in.Close()
	out, err := os.Create(filepath.Join(resultsDir, "serial0.txt"))
	if err != nil {
		return
	}
	_, _ = io.Copy(out, in) // on a full disk, what fitted
	_ = out.Close()
}

// hostMemoryMiB reads the host's memory from /proc/meminfo; 0 if unknown.
func hostMemoryMiB() int {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	var kib int
	for _, line := range strings.Split(string(data), "\n") {
		if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kib); err == nil {
			return kib / 1024
		}
	}
	return 0
}

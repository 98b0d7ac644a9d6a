package boot

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// Developer mode, as openQA's: a developer pauses the running test at a
// module, at the next testapi call or on a failed screen check, types on
// the VM while it is paused, retries the check with a fixed needle, and
// resumes. Commands arrive as job events through the worker's own
// connection; the live screen is a request to it (streams.ServeLive). The
// worker opens no port.

// developer is the developer-mode state of the job an instance runs: the
// rules when to pause, set by commands, and the commands for a paused
// test. followJob writes it, the test's thread reads it.
type developer struct {
	mu         sync.Mutex
	module     string // pause when this module starts
	onMismatch string // assert_screen, or check_screen for both
	next       bool   // pause at the next testapi call
	cmds       chan devCommand

	// What the live view shows.
	current atomic.Pointer[string]
	paused  atomic.Pointer[schemas.JobPaused]
}

// devCommand is a command for a paused test, with its stream sequence:
// a command appended before the pause it would act on is stale.
type devCommand struct {
	seq uint64
	schemas.DeveloperCommand
}

func newDeveloper() *developer {
	return &developer{cmds: make(chan devCommand, 64)}
}

// running is the module the test runs, for logs from other goroutines.
func (d *developer) running() string {
	if m := d.current.Load(); m != nil {
		return *m
	}
	return ""
}

// command takes a developer command from the job's events.
func (d *developer) command(seq uint64, c schemas.DeveloperCommand) {
	if c.Action != schemas.DevPause {
		select {
		case d.cmds <- devCommand{seq, c}:
		default: // a flood of commands nobody waits for: drop
		}
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case c.Clear:
		d.module, d.onMismatch, d.next = "", "", false
	case c.Module == "" && c.OnMismatch == "":
		d.next = true
	}
	if c.Module != "" {
		d.module = c.Module
	}
	if c.OnMismatch != "" {
		d.onMismatch = c.OnMismatch
	}
}

// pauseNow says whether to pause before the next testapi call, once.
func (d *developer) pauseNow() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	next := d.next
	d.next = false
	return next
}

func (d *developer) pauseAtModule(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.module == name {
		d.next = false
		return true
	}
	return false
}

// pauseOnMismatch says whether a failed fn (assert_screen, check_screen)
// pauses.
func (d *developer) pauseOnMismatch(fn string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.onMismatch == "check_screen" || d.onMismatch == fn
}

// hold pauses the test: the worker says so, the VM runs on and takes the
// developer's keys and text, until a resume or a retry (which it
// returns). Cancel and MAX_JOB_TIME still end the job.
func (r *runner) hold(at, reason string) (string, error) {
	screen, err := r.vm.Screendump(r.ctx)
	if err != nil {
		return "", incomplete(fmt.Errorf("pausing: %w", err))
	}
	p := schemas.JobPaused{Worker: r.worker, At: at, Reason: reason, Screenshot: r.saveScreen(screen)}
	if r.module != nil {
		p.Module = r.module.Name
	}
	seq, err := r.bus.Append(r.ctx, r.job, p)
	if err != nil {
		return "", incomplete(fmt.Errorf("pausing: %w", err))
	}
	r.dev.paused.Store(&p)
	defer r.dev.paused.Store(nil)
	r.log.Info("paused for a developer", "module", p.Module, "at", at, "reason", reason)
	r.module.Details = append(r.module.Details, schemas.Step{Kind: "info", Text: fmt.Sprintf("paused (%s): %s", at, reason), Screenshot: p.Screenshot})
	for {
		var c devCommand
		select {
		case c = <-r.dev.cmds:
		case <-r.ctx.Done():
			return "", incomplete(r.ctx.Err())
		case <-r.vm.Done():
			return "", incomplete(fmt.Errorf("QEMU exited while paused: %v", r.vm.Err()))
		}
		if c.seq < seq {
			continue // sent for an earlier pause
		}
		switch c.Action {
		case schemas.DevKeys:
			for _, k := range c.Keys {
				if err := r.vm.SendKey(r.ctx, k); err != nil {
					r.log.Warn("developer's key not sent", "key", k, "err", err)
					break
				}
			}
			r.log.Info("developer sent keys", "by", c.By, "keys", c.Keys)
		case schemas.DevType:
			if err := r.vm.TypeString(r.ctx, c.Text, 0); err != nil {
				r.log.Warn("developer's text not typed", "err", err)
			}
			r.log.Info("developer typed", "by", c.By, "characters", len(c.Text))
		case schemas.DevResume, schemas.DevRetry:
			if c.Action == schemas.DevRetry {
				if err := r.addNeedles(c.Needles); err != nil {
					r.log.Warn("retry without the developer's needles", "err", err)
				}
			}
			if _, err := r.bus.Append(r.ctx, r.job, schemas.JobResumed{Worker: r.worker, How: c.Action, By: c.By}); err != nil {
				return "", incomplete(fmt.Errorf("resuming: %w", err))
			}
			r.log.Info("resumed by a developer", "by", c.By, "how", c.Action)
			return c.Action, nil
		}
	}
}

// addNeedles fetches needles a developer stored and adds them to the
// job's, over those of the same name.
func (r *runner) addNeedles(refs []schemas.NeedleRef) error {
	if len(refs) == 0 {
		return nil
	}
	dir := filepath.Join(r.resultsDir, "..", "developer-needles")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, n := range refs {
		jsonKey, pngKey := streams.NeedleBlobKeys(n.Hash)
		for _, f := range []struct{ key, ext string }{{jsonKey, ".json"}, {pngKey, ".png"}} {
			data, err := r.bus.GetBlob(r.ctx, streams.BucketNeedles, f.key)
			if err != nil {
				return fmt.Errorf("needle %s: %w", n.Name, err)
			}
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(n.Name)+f.ext), data, 0o644); err != nil {
				return err
			}
		}
	}
	added, err := schemas.ReadNeedleDir(dir)
	if err != nil {
		return err
	}
	if errs := added.Errors(); len(errs) > 0 {
		return errors.Join(fmt.Errorf("a developer's needle is broken"), errs[0])
	}
	if r.perl {
		// os-autoinst takes needles only from its needle directory, where
		// isotovideo's developer mode saves them too.
		for i, n := range added.Needles {
			if added.Needles[i], err = r.needles.place(n); err != nil {
				return fmt.Errorf("needle %s: %w", n.Name, err)
			}
		}
	}
	r.needles.overlay(added.Needles)
	r.log.Info("developer's needles added", "needles", len(refs))
	return nil
}

// screenCheck runs a screen check; when it fails and a developer asked to
// pause on that, it pauses, and a retry runs the check again.
func (r *runner) screenCheck(fn string, tags []string, timeout time.Duration) (schemas.MatchResolved, error) {
	for {
		res, err := r.waitForScreen(fn, tags, timeout)
		var tf *testFailure
		missed := err == nil && !res.Matched || errors.As(err, &tf)
		if !missed || !r.dev.pauseOnMismatch(fn) {
			return res, err
		}
		reason := describeMiss(fn, tags, res)
		if tf != nil {
			reason = tf.msg
		}
		how, herr := r.hold(schemas.PausedOnMismatch, reason)
		if herr != nil {
			return res, herr
		}
		if how != schemas.DevRetry {
			return res, err
		}
	}
}

// showLive is the live view of the job, for streams.ServeLive.
func (s *Stage) showLive(ctx context.Context, job int64) (streams.Live, error) {
	r := s.live.Load()
	if r == nil || r.job != job {
		return streams.Live{}, streams.ErrNotRunning
	}
	screen, err := r.vm.Screendump(ctx)
	if err != nil {
		return streams.Live{}, err
	}
	return streams.Live{Job: job, Module: r.dev.running(), Paused: r.dev.paused.Load(), Screen: screen}, nil
}

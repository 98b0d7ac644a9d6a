package schemas

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
)

// ErrTransition is wrapped by every error that refuses a job event because
// of the job's history: the event is well formed but cannot happen now, so
// retrying it as is will never succeed.
var ErrTransition = errors.New("impossible job transition")

// JobAggregate is one job's current state, folded from its events in
// stream order. Every writer of job events checks its event against the
// aggregate before appending it with the aggregate's Seq as the expected
// last sequence, so a late report from a worker that went offline, a
// second assignment or the end of a cancelled job is refused instead of
// recorded.
//
// The zero value is a job with no events yet; it accepts only JobCreated.
// Set ID beforehand to have Check's errors name the job.
type JobAggregate struct {
	ID int64 `json:"id"`
	// Seq is the stream sequence of the last applied event: the expected
	// last sequence of the next append.
	Seq    uint64 `json:"seq"`
	State  string `json:"state"`  // a State constant; "" before JobCreated
	Result string `json:"result"` // ResultNone until the job is final
	Reason string `json:"reason,omitempty"`

	Settings map[string]string `json:"settings,omitempty"`
	CloneOf  int64             `json:"clone_of,omitempty"`
	Retry    int               `json:"retry,omitempty"`
	After    []int64           `json:"after,omitempty"`
	Clone    int64             `json:"clone,omitempty"` // set by JobRestarted
	Deleted  bool              `json:"deleted,omitempty"`

	// Worker is the instance the job is assigned to; it stays set once the
	// job is final, to say who ran it.
	Worker *WorkerRef `json:"worker,omitempty"`
	// Started says the VM was booted (JobStarted): from then on the job
	// cannot be given back to the scheduler, and cancelling it ends it done,
	// not cancelled.
	Started         bool `json:"started,omitempty"`
	CancelRequested bool `json:"cancel_requested,omitempty"`
	// Paused is set while a developer holds the running job's test.
	Paused *JobPaused `json:"paused,omitempty"`
	// Tested is the result the tests ended with (TestsFinished), before
	// the upload makes it the job's.
	Tested string `json:"tested,omitempty"`
	// Owner created the job (JobCreated.Owner).
	Owner string `json:"owner,omitempty"`

	Created time.Time      `json:"created"`
	Updated time.Time      `json:"updated"`
	Modules []ModuleResult `json:"modules,omitempty"`
}

// moduleRunning is the result of a module between ModuleStarted and
// ModuleFinished, as openQA shows it.
const moduleRunning = "running"

// IsFinalResult says whether result is one a job may end with.
func IsFinalResult(result string) bool { return slices.Contains(finalResults, result) }

// finalResults are the results a job may end with.
var finalResults = []string{
	ResultPassed, ResultSoftfailed, ResultFailed, ResultIncomplete,
	ResultSkipped, ResultObsoleted, ResultUserCancelled, ResultUserRestarted,
	ResultTimeoutExceeded, ResultParallelFailed,
}

var (
	beforeStart = []string{StateAssigned, StateSetup}
	notFinal    = []string{StateScheduled, StateAssigned, StateSetup, StateRunning, StateUploading}
)

// Final says the job is done or cancelled: only JobRestarted may follow.
func (a *JobAggregate) Final() bool {
	return a.State == StateDone || a.State == StateCancelled
}

// Check says whether p could be applied now. A refusal because of the
// job's history wraps ErrTransition; an event that is not about a job's
// lifecycle (match.*, worker.*) is an error of its own.
func (a *JobAggregate) Check(p Payload) error {
	_, err := a.check(p)
	return err
}

// Apply checks p and folds it into the aggregate; seq is the stream
// sequence the event was stored at and ev its envelope. A refused event
// leaves the aggregate as it was. p may be a value, as a writer builds it,
// or a pointer, as Event.Decode returns it.
func (a *JobAggregate) Apply(seq uint64, ev Event, p Payload) error {
	q := jobPayload(p)
	if q == nil {
		return fmt.Errorf("job %d: no payload to apply", a.ID)
	}
	switch {
	case ev.Kind != q.Kind():
		return fmt.Errorf("job %d: the envelope is %s but the payload %s", a.ID, ev.Kind, q.Kind())
	case ev.Job == 0 || (a.ID != 0 && ev.Job != a.ID):
		return fmt.Errorf("job %d: cannot apply %s of job %d", a.ID, q.Kind(), ev.Job)
	case seq <= a.Seq:
		return fmt.Errorf("job %d: cannot apply %s at sequence %d: already at %d", a.ID, q.Kind(), seq, a.Seq)
	}
	if _, err := a.check(q); err != nil {
		return err
	}
	switch e := q.(type) {
	case JobCreated:
		a.ID, a.State, a.Result = ev.Job, StateScheduled, ResultNone
		a.Settings, a.CloneOf, a.Retry = maps.Clone(e.Settings), e.CloneOf, e.Retry
		a.After = slices.Clone(e.After)
		a.Created, a.Owner = ev.Time, e.Owner
	case JobAssigned:
		w := e.Worker
		a.State, a.Worker = StateAssigned, &w
	case JobUnassigned:
		a.State, a.Worker = StateScheduled, nil
	case AssetFetched, RepoCheckedOut, JobReady:
		a.State = StateSetup
	case JobStarted:
		a.State, a.Started = StateRunning, true
	case ModuleStarted:
		a.Modules = append(a.Modules, ModuleResult{Name: e.Module, Result: moduleRunning})
	case ModuleFinished:
		a.finishModule(e.ModuleResult)
	case JobPaused:
		a.Paused = &e
	case JobResumed:
		a.Paused = nil
	case TestsFinished:
		a.State, a.Paused, a.Tested = StateUploading, nil, e.Result
		if len(e.Modules) > 0 {
			a.Modules = slices.Clone(e.Modules)
		}
	case JobFinished:
		a.State, a.Result, a.Reason, a.Paused = StateDone, e.Result, e.Reason, nil
		if !a.Started && (e.Result == ResultUserCancelled || e.Result == ResultSkipped || e.Result == ResultObsoleted) {
			// openQA shows a job that ended before its VM booted, by a
			// user, a dependency or a newer build, as cancelled.
			a.State = StateCancelled
		}
		if len(e.Modules) > 0 {
			a.Modules = slices.Clone(e.Modules)
		}
	case JobCancelRequested:
		a.CancelRequested = true
	case JobRestarted:
		a.Clone = e.Clone
	case JobDeleted:
		a.Deleted = true
	}
	a.Seq, a.Updated = seq, ev.Time
	return nil
}

// finishModule records a module's result over its running entry.
func (a *JobAggregate) finishModule(r ModuleResult) {
	for i := len(a.Modules) - 1; i >= 0; i-- {
		if m := a.Modules[i]; m.Name == r.Name && m.Result == moduleRunning {
			a.Modules[i] = r
			return
		}
	}
	a.Modules = append(a.Modules, r)
}

// check returns p as a value, or why it cannot be applied now.
func (a *JobAggregate) check(p Payload) (Payload, error) {
	p = jobPayload(p)
	if p == nil {
		return nil, fmt.Errorf("job %d: no payload to apply", a.ID)
	}
	refuse := func(format string, args ...any) error {
		return &transitionError{fmt.Sprintf("job %d: cannot apply %s: ", a.ID, p.Kind()) + fmt.Sprintf(format, args...)}
	}
	// from lists the states p may arrive in; sender is the worker p comes
	// from, which must be the one the job is assigned to.
	var from []string
	var sender *WorkerRef
	switch e := p.(type) {
	case JobCreated:
		if a.State != "" {
			return nil, refuse("the job already exists")
		}
		return p, nil
	case JobAssigned:
		from = []string{StateScheduled}
	case JobUnassigned:
		from, sender = beforeStart, &e.Worker
	case AssetFetched:
		from, sender = beforeStart, &e.Worker
	case RepoCheckedOut:
		from, sender = beforeStart, &e.Worker
	case JobReady:
		from, sender = beforeStart, &e.Worker
	case JobStarted:
		from, sender = []string{StateSetup}, &e.Worker
	case ModuleStarted, ModuleFinished, DeveloperCommand:
		from = []string{StateRunning}
	case JobPaused:
		from, sender = []string{StateRunning}, &e.Worker
	case JobResumed:
		from, sender = []string{StateRunning}, &e.Worker
	case TestsFinished:
		// From setup too: a worker whose VM did not boot reports the job
		// incomplete without ever starting it.
		from, sender = []string{StateSetup, StateRunning}, &e.Worker
	case JobFinished, JobCancelRequested:
		from = notFinal
	case JobRestarted:
		if a.State != "" && !a.Final() {
			return nil, refuse("the job is still %s; only a final job is restarted", a.State)
		}
	case JobDeleted:
		if !a.Final() {
			return nil, refuse("the job is still %s; cancel it first, then delete it", a.State)
		}
	case JobFilesExpired:
		if !a.Final() {
			return nil, refuse("the job is still %s; only a final job's files expire", a.State)
		}
	default:
		return nil, fmt.Errorf("job %d: %s is not a job event", a.ID, p.Kind())
	}
	if a.Deleted {
		return nil, refuse("the job was deleted")
	}

	switch {
	case a.State == "":
		return nil, refuse("the job does not exist: no %s yet", JobCreated{}.Kind())
	case a.Final() && from != nil:
		return nil, refuse("the job is already %s (%s)", a.State, a.Result)
	case from != nil && !slices.Contains(from, a.State):
		return nil, refuse("the job is %s, not %s", a.State, strings.Join(from, " or "))
	case sender != nil && (a.Worker == nil || *a.Worker != *sender):
		assignee := "no worker"
		if a.Worker != nil {
			assignee = a.Worker.String()
		}
		return nil, refuse("the job is assigned to %s, not %s", assignee, sender)
	}

	endsWith := func(result string) error {
		if slices.Contains(finalResults, result) {
			return nil
		}
		return refuse("result %q is not one a job ends with (%s)", result, strings.Join(finalResults, ", "))
	}
	var err error
	switch e := p.(type) {
	case JobAssigned:
		if e.Worker.Host == "" {
			err = refuse("no worker given")
		}
	case TestsFinished:
		err = endsWith(e.Result)
	case DeveloperCommand:
		err = a.checkDeveloper(e, refuse)
	case JobPaused:
		if a.Paused != nil {
			err = refuse("the job is paused already")
		}
	case JobResumed:
		if a.Paused == nil {
			err = refuse("the job is not paused")
		}
	case JobFinished:
		err = endsWith(e.Result)
	case JobRestarted:
		if a.Clone != 0 {
			err = refuse("the job was already restarted as job %d", a.Clone)
		} else if e.Clone <= 0 || e.Clone == a.ID {
			err = refuse("clone %d is not another job", e.Clone)
		}
	}
	if err != nil {
		return nil, err
	}
	return p, nil
}

// checkDeveloper says whether a developer-mode command fits the running
// job: keys, typing, resume and retry need it paused, retry on a mismatch.
func (a *JobAggregate) checkDeveloper(e DeveloperCommand, refuse func(string, ...any) error) error {
	switch e.Action {
	case DevPause:
		if e.OnMismatch != "" && e.OnMismatch != "assert_screen" && e.OnMismatch != "check_screen" {
			return refuse("pause on mismatch of %q: give assert_screen or check_screen", e.OnMismatch)
		}
		return nil
	case DevResume, DevKeys, DevType, DevRetry:
	default:
		return refuse("unknown developer action %q (%s)", e.Action, strings.Join(DevActions, ", "))
	}
	switch {
	case a.Paused == nil:
		return refuse("the job is not paused: pause it first")
	case e.Action == DevRetry && a.Paused.At != PausedOnMismatch:
		return refuse("the job is paused at a %s, not on a failed screen check: only that can be retried", a.Paused.At)
	case e.Action == DevKeys && len(e.Keys) == 0, e.Action == DevType && e.Text == "":
		return refuse("%s with nothing to send", e.Action)
	}
	return nil
}

// transitionError says why an event cannot happen now; it is an
// ErrTransition.
type transitionError struct{ msg string }

func (e *transitionError) Error() string { return e.msg }
func (e *transitionError) Unwrap() error { return ErrTransition }

// jobPayload returns a job event as a value, whether it was built by a
// writer or decoded (a pointer); other payloads come back unchanged, and a
// nil one as nil.
func jobPayload(p Payload) Payload {
	switch e := p.(type) {
	case *JobCreated:
		return deref(e)
	case *JobAssigned:
		return deref(e)
	case *JobUnassigned:
		return deref(e)
	case *JobCancelRequested:
		return deref(e)
	case *JobRestarted:
		return deref(e)
	case *JobDeleted:
		return deref(e)
	case *JobFilesExpired:
		return deref(e)
	case *AssetFetched:
		return deref(e)
	case *RepoCheckedOut:
		return deref(e)
	case *JobReady:
		return deref(e)
	case *JobStarted:
		return deref(e)
	case *ModuleStarted:
		return deref(e)
	case *ModuleFinished:
		return deref(e)
	case *TestsFinished:
		return deref(e)
	case *DeveloperCommand:
		return deref(e)
	case *JobPaused:
		return deref(e)
	case *JobResumed:
		return deref(e)
	case *JobFinished:
		return deref(e)
	case *WorkerRegistered:
		return deref(e)
	case *WorkerHeartbeat:
		return deref(e)
	case *WorkerOffline:
		return deref(e)
	case *MatchRequested:
		return deref(e)
	case *MatchResolved:
		return deref(e)
	case *AssetRegistered:
		return deref(e)
	case *AssetProgress:
		return deref(e)
	case *CacheStatus:
		return deref(e)
	case *AssetPrefetchRequested:
		return deref(e)
	case *AssetPrefetched:
		return deref(e)
	}
	return p
}

func deref[T Payload](p *T) Payload {
	if p == nil {
		return nil
	}
	return *p
}

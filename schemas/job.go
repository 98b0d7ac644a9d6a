package schemas

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Job states, as in openQA.
const (
	StateScheduled = "scheduled"
	StateAssigned  = "assigned"
	StateSetup     = "setup"
	StateRunning   = "running"
	StateUploading = "uploading"
	StateDone      = "done"
	StateCancelled = "cancelled"
)

// Job and module results, as in openQA.
const (
	ResultNone            = "none"
	ResultPassed          = "passed"
	ResultSoftfailed      = "softfailed"
	ResultFailed          = "failed"
	ResultIncomplete      = "incomplete"
	ResultSkipped         = "skipped"
	ResultObsoleted       = "obsoleted"
	ResultUserCancelled   = "user_cancelled"
	ResultUserRestarted   = "user_restarted"
	ResultTimeoutExceeded = "timeout_exceeded"
	ResultParallelFailed  = "parallel_failed"
)

// WorkerRef names one worker instance: openQA's "host:instance".
type WorkerRef struct {
	Host     string `json:"host"`
	Instance int    `json:"instance"`
}

func (w WorkerRef) String() string { return fmt.Sprintf("%s:%d", w.Host, w.Instance) }

// Targeted is an event addressed to one worker instance.
type Targeted interface {
	Payload
	Target() WorkerRef
}

// JobCreated is the first event of every job.
type JobCreated struct {
	Settings StringMap `json:"settings"`
	// CloneOf is the job this one repeats (restarted by a user, or
	// cloned automatically after its worker went offline); 0 for none.
	CloneOf int64 `json:"clone_of,omitempty"`
	// Retry counts automatic clones in a row: the clone of an original
	// has 1, its own automatic clone 2.
	Retry int `json:"retry,omitempty"`
	// After are the jobs this one starts after, as openQA's chained
	// parents (START_AFTER_TEST): it is held until each has ended passed
	// or softfailed, and skipped when one ended otherwise.
	After []int64 `json:"after,omitempty"`
	// Owner is the user whose API key created the job (or restarted the
	// job it repeats); with admins, only the owner may use developer mode
	// on it.
	Owner string `json:"owner,omitempty"`
}

func (JobCreated) Kind() string { return "job.created.v1" }

// Name is openQA's job name: DISTRI-VERSION-FLAVOR-ARCH-Build…-TEST.
func (c JobCreated) Name() string {
	var parts []string
	for _, k := range []string{"DISTRI", "VERSION", "FLAVOR", "ARCH"} {
		if v := c.Settings[k]; v != "" {
			parts = append(parts, v)
		}
	}
	if b := c.Settings["BUILD"]; b != "" {
		parts = append(parts, "Build"+b)
	}
	if t := c.Settings["TEST"]; t != "" {
		parts = append(parts, t)
	}
	return strings.Join(parts, "-")
}

// JobAssigned gives a scheduled job to one worker instance.
type JobAssigned struct {
	Worker WorkerRef `json:"worker"`
}

func (e JobAssigned) Target() WorkerRef { return e.Worker }

func (JobAssigned) Kind() string { return "job.assigned.v1" }

// JobUnassigned gives an assigned job back to the scheduler: its worker
// went offline before starting it.
type JobUnassigned struct {
	Worker WorkerRef `json:"worker"`
	Reason string    `json:"reason"`
}

func (JobUnassigned) Kind() string { return "job.unassigned.v1" }

// JobCancelRequested asks to stop a job. A job that has not started ends
// at once; a running job's worker stops its VM and ends it user_cancelled.
type JobCancelRequested struct {
	By     string `json:"by,omitempty"`
	Reason string `json:"reason,omitempty"`
}

func (JobCancelRequested) Kind() string { return "job.cancel_requested.v1" }

// JobRestarted records on a finished job the clone that repeats it.
type JobRestarted struct {
	Clone int64  `json:"clone"`
	By    string `json:"by,omitempty"` // user, or "auto" for automatic clones
}

func (JobRestarted) Kind() string { return "job.restarted.v1" }

// JobDeleted removes a final job from the job lists, as openQA's DELETE
// /api/v1/jobs/ID does; its events stay in the stream.
type JobDeleted struct {
	By string `json:"by,omitempty"`
}

func (JobDeleted) Kind() string { return "job.deleted.v1" }

// JobFilesExpired says retention removed some of a final job's result
// files: they are no longer listed, nor served.
type JobFilesExpired struct {
	Files []string `json:"files"`
	// Rule is the retention rule that removed them, e.g. "screenshots:passed=30d".
	Rule string `json:"rule,omitempty"`
}

func (JobFilesExpired) Kind() string { return "job.files_expired.v1" }

// AssetFetched says one asset of the job is in the worker host's cache.
type AssetFetched struct {
	Worker  WorkerRef `json:"worker"`
	Setting string    `json:"setting"` // ISO, HDD_1, KERNEL, …
	Source  string    `json:"source"`  // what the job asked for
	Path    string    `json:"path"`    // where the worker host has it
	SHA256  string    `json:"sha256"`
	Size    int64     `json:"size"`
	Cached  bool      `json:"cached"` // served from the cache without download
}

func (AssetFetched) Kind() string { return "asset.fetched.v1" }

// RepoCheckedOut records which commit of a test or needle repository the
// job runs.
type RepoCheckedOut struct {
	Worker  WorkerRef `json:"worker"`
	Setting string    `json:"setting"` // CASEDIR or NEEDLES_DIR
	URL     string    `json:"url"`
	Ref     string    `json:"ref,omitempty"`
	Commit  string    `json:"commit"`
	Path    string    `json:"path"`
}

func (RepoCheckedOut) Kind() string { return "repo.checked_out.v1" }

// JobReady says everything the job needs is on the worker host: the boot
// stage of that worker instance may start it.
type JobReady struct {
	Worker   WorkerRef `json:"worker"`
	Settings StringMap `json:"settings"`
	Assets   StringMap `json:"assets"` // setting → local path
	CaseDir  string    `json:"casedir"`
	// ProductDir is where main.star is: CASEDIR, or its PRODUCTDIR.
	ProductDir string `json:"productdir,omitempty"`
	NeedlesDir string `json:"needles_dir"`
	// NeedlesCommit is the commit the needles come from: NEEDLES_DIR's
	// checkout, or CASEDIR's when the needles are inside it.
	NeedlesCommit string `json:"needles_commit,omitempty"`
	JobDir        string `json:"job_dir"`
}

func (e JobReady) Target() WorkerRef { return e.Worker }

func (JobReady) Kind() string { return "job.ready.v1" }

// JobStarted says the VM of the job is starting.
type JobStarted struct {
	Worker WorkerRef `json:"worker"`
	Accel  string    `json:"accel"` // kvm or tcg
	// TestSide is what runs the tests when it is not jetqa's Starlark:
	// "os-autoinst interface 34", os-autoinst's Perl test side.
	TestSide string `json:"test_side,omitempty"`
}

func (JobStarted) Kind() string { return "job.started.v1" }

// ModuleStarted says a test module began.
type ModuleStarted struct {
	Module string `json:"module"`
}

func (ModuleStarted) Kind() string { return "module.started.v1" }

// ModuleResult is the outcome of one test module.
type ModuleResult struct {
	Name     string        `json:"name"`
	Result   string        `json:"result"`
	Reason   string        `json:"reason,omitempty"`
	Duration time.Duration `json:"duration"`
	Details  []Step        `json:"details,omitempty"`
	// Flags are the module's test_flags() that are set: fatal,
	// ignore_failure, milestone, always_rollback.
	Flags []string `json:"flags,omitempty"`
}

// Step is one entry of a module's details: a screen match, a screenshot, a
// serial wait, a note.
type Step struct {
	Kind       string `json:"kind"` // match, screenshot, serial, info
	Text       string `json:"text,omitempty"`
	Result     string `json:"result,omitempty"`
	Screenshot string `json:"screenshot,omitempty"` // file name in the job's results
	Needle     string `json:"needle,omitempty"`
	// NeedleHash is the matched needle's content hash: its JSON and PNG
	// are kept in the needle store under it (streams.NeedleBlobKeys), for
	// the web UI's needle and diff images.
	NeedleHash string  `json:"needle_hash,omitempty"`
	Similarity float64 `json:"similarity,omitempty"`
	// Tags are what a match step looked for; with Text, the testapi call
	// (assert_screen, check_screen, …), what `jetqa replay --needles`
	// matches again.
	Tags []string `json:"tags,omitempty"`
	// Areas are where the matched (or, failed, the closest) needle's areas
	// were found on the screenshot, for overlays.
	Areas []AreaMatch `json:"areas,omitempty"`
	// Candidates are a failed match's closest needles, best first.
	Candidates []CandidateMatch `json:"candidates,omitempty"`
}

// ModuleFinished carries a module's result.
type ModuleFinished struct {
	ModuleResult
}

func (ModuleFinished) Kind() string { return "module.finished.v1" }

// ThumbsDir is where a job's results keep each screenshot's thumbnail,
// under the screenshot's name, as os-autoinst keeps them: the boot stage
// writes them there, the upload stage stores them as ".thumbs/NAME".
const ThumbsDir = ".thumbs"

// ULogsDir is where a job's results keep the files its guest uploaded
// (upload_logs), as os-autoinst's; stored as "ulogs/NAME", and listed as
// openQA's ulogs.
const ULogsDir = "ulogs"

// TestsFinished says the VM is stopped and the job's results wait for upload
// in ResultsDir on the worker host.
type TestsFinished struct {
	Worker     WorkerRef      `json:"worker"`
	Result     string         `json:"result"`
	Reason     string         `json:"reason,omitempty"`
	Modules    []ModuleResult `json:"modules"`
	ResultsDir string         `json:"results_dir"`
	// Assets the job publishes (PUBLISH_HDD_n, upload_asset): asset name
	// → file on the worker host, which the upload stage stores as assets.
	Assets map[string]string `json:"assets,omitempty"`
}

func (e TestsFinished) Target() WorkerRef { return e.Worker }

func (TestsFinished) Kind() string { return "job.tests_finished.v1" }

// JobFinished is the last event of a job.
type JobFinished struct {
	Result  string         `json:"result"`
	Reason  string         `json:"reason,omitempty"`
	Modules []ModuleResult `json:"modules,omitempty"`
	// Files lists the job's stored results: name → blob key.
	Files StringMap `json:"files,omitempty"`
}

func (JobFinished) Kind() string { return "job.finished.v1" }

// Developer-mode actions, as openQA's developer mode offers them.
const (
	// DevPause pauses at the next testapi call, or sets when to pause:
	// at a module's start, on a screen mismatch.
	DevPause = "pause"
	// DevResume continues a paused job; a paused failed assert then fails.
	DevResume = "resume"
	// DevRetry re-runs the failed screen check a job is paused on, with
	// the needles the command carries added to the job's.
	DevRetry = "retry"
	// DevKeys presses keys (os-autoinst's key names) on the paused VM.
	DevKeys = "keys"
	// DevType types text on the paused VM.
	DevType = "type"
)

// DevActions lists the developer-mode actions.
var DevActions = []string{DevPause, DevResume, DevRetry, DevKeys, DevType}

// DeveloperCommand is a developer-mode command to the worker that runs
// the job. The server appends it, for the job's owner or an admin, only
// while the job runs; the worker acts on it through its own connection,
// so it opens no port.
type DeveloperCommand struct {
	By     string `json:"by"`
	Action string `json:"action"` // a Dev constant
	// With pause: Module pauses when that module starts; OnMismatch
	// (assert_screen, or check_screen for both) pauses when a screen check
	// fails. Both stay set until a pause with Clear. A pause with neither
	// pauses at the next testapi call.
	Module     string   `json:"module,omitempty"`
	OnMismatch string   `json:"on_mismatch,omitempty"`
	Clear      bool     `json:"clear,omitempty"`
	Keys       []string `json:"keys,omitempty"` // DevKeys
	Text       string   `json:"text,omitempty"` // DevType
	// Needles are stored in the needles bucket; a retry adds them to the
	// job's needles, replacing those of the same name.
	Needles []NeedleRef `json:"needles,omitempty"`
}

func (DeveloperCommand) Kind() string { return "job.developer.v1" }

// Why a job is paused.
const (
	PausedAtModule   = "module"
	PausedAtCommand  = "command"
	PausedOnMismatch = "mismatch"
	// PausedOnFailure: a module failed, in a job with PAUSE_ON_FAILURE=1
	// (os-autoinst's Perl test side).
	PausedOnFailure = "failure"
)

// JobPaused says the worker paused the job's test for a developer: the VM
// runs on and takes keys, the test waits.
type JobPaused struct {
	Worker WorkerRef `json:"worker"`
	Module string    `json:"module,omitempty"`
	At     string    `json:"at"` // a PausedAt constant
	// Reason says where it stopped: the call, or the failed check.
	Reason string `json:"reason,omitempty"`
	// Screenshot is the screen when it paused, in the job's results.
	Screenshot string `json:"screenshot,omitempty"`
}

func (JobPaused) Kind() string { return "job.paused.v1" }

// JobResumed says the paused test goes on.
type JobResumed struct {
	Worker WorkerRef `json:"worker"`
	How    string    `json:"how"` // DevResume or DevRetry
	By     string    `json:"by,omitempty"`
}

func (JobResumed) Kind() string { return "job.resumed.v1" }

// WorkerRegistered announces a worker instance and what it can run.
type WorkerRegistered struct {
	Worker    WorkerRef `json:"worker"`
	Classes   []string  `json:"classes"` // WORKER_CLASS
	Arch      string    `json:"arch"`
	CPUs      int       `json:"cpus"`
	MemoryMiB int       `json:"memory_mib"`
	KVM       bool      `json:"kvm"`
}

func (e WorkerRegistered) Target() WorkerRef { return e.Worker }

func (WorkerRegistered) Kind() string { return "worker.registered.v1" }

// WorkerHeartbeat says a worker instance is alive, and which job it runs.
type WorkerHeartbeat struct {
	Worker WorkerRef `json:"worker"`
	Job    int64     `json:"job,omitempty"`
	// BusyElsewhere says the instance runs a job of another server it
	// serves: it takes none from this one meanwhile.
	BusyElsewhere bool `json:"busy_elsewhere,omitempty"`
}

func (e WorkerHeartbeat) Target() WorkerRef { return e.Worker }

func (WorkerHeartbeat) Kind() string { return "worker.heartbeat.v1" }

// WorkerOffline says a worker instance was silent for longer than the limit.
type WorkerOffline struct {
	Worker   WorkerRef `json:"worker"`
	LastSeen time.Time `json:"last_seen"`
}

func (e WorkerOffline) Target() WorkerRef { return e.Worker }

func (WorkerOffline) Kind() string { return "worker.offline.v1" }

// WorkerClasses splits a comma-separated WORKER_CLASS value.
func WorkerClasses(v string) []string {
	var out []string
	for _, c := range strings.Split(v, ",") {
		if c = strings.TrimSpace(c); c != "" {
			out = append(out, c)
		}
	}
	return out
}

// Priority is a job's priority, lower first: openQA's _PRIORITY setting,
// or PRIORITY; 50 when neither is a number.
func Priority(settings map[string]string) int {
	for _, k := range []string{"_PRIORITY", "PRIORITY"} {
		if p, err := strconv.Atoi(settings[k]); err == nil {
			return p
		}
	}
	return 50
}

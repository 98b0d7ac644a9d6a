package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// lifecycle is the job's state machine. One row per event kind, one column
// per state the job is in; a cell is the state the event leads to, "=" for
// allowed without a change of state, "-" for refused as an impossible
// transition, "!" for not a job event at all. "new" is a job with no
// events yet, "rst" a final job that was already restarted, "del" a job
// that was deleted.
const lifecycle = `
kind                     new  sch  asg  set  run  upl  done canc rst  del
job.created.v1           sch  -    -    -    -    -    -    -    -  -
job.assigned.v1          -    asg  -    -    -    -    -    -    -  -
job.unassigned.v1        -    -    sch  sch  -    -    -    -    -  -
asset.fetched.v1         -    -    set  =    -    -    -    -    -  -
repo.checked_out.v1      -    -    set  =    -    -    -    -    -  -
job.ready.v1             -    -    set  =    -    -    -    -    -  -
job.started.v1           -    -    -    run  -    -    -    -    -  -
module.started.v1        -    -    -    -    =    -    -    -    -  -
module.finished.v1       -    -    -    -    =    -    -    -    -  -
job.tests_finished.v1    -    -    -    upl  upl  -    -    -    -  -
job.finished.v1          -    done done done done done -    -    -  -
job.cancel_requested.v1  -    =    =    =    =    =    -    -    -  -
job.developer.v1         -    -    -    -    =    -    -    -    -  -
job.paused.v1            -    -    -    -    =    -    -    -    -  -
job.resumed.v1           -    -    -    -    -    -    -    -    -  -
job.restarted.v1         -    -    -    -    -    -    =    =    -  -
job.deleted.v1           -    -    -    -    -    -    =    =    =    -
job.files_expired.v1     -    -    -    -    -    -    =    =    =    -
worker.registered.v1     !    !    !    !    !    !    !    !    !  !
worker.heartbeat.v1      !    !    !    !    !    !    !    !    !  !
worker.offline.v1        !    !    !    !    !    !    !    !    !  !
match.requested.v1       !    !    !    !    !    !    !    !    !  !
match.resolved.v1        !    !    !    !    !    !    !    !    !  !
asset.registered.v1      !    !    !    !    !    !    !    !    !  !
asset.progress.v1        !    !    !    !    !    !    !    !    !  !
cache.status.v1          !    !    !    !    !    !    !    !    !  !
asset.prefetch_requested.v1 ! !  !    !    !    !    !    !    !  !
asset.prefetched.v1      !    !    !    !    !    !    !    !    !  !
apikey.created.v1        !    !    !    !    !    !    !    !    !    !
apikey.revoked.v1        !    !    !    !    !    !    !    !    !    !
user.set.v1              !    !    !    !    !    !    !    !    !    !
user.removed.v1          !    !    !    !    !    !    !    !    !    !
session_secret.created.v1 !   !    !    !    !    !    !    !    !    !
templates.loaded.v1      !    !    !    !    !    !    !    !    !    !
`

var (
	h1 = WorkerRef{Host: "h", Instance: 1}
	h2 = WorkerRef{Host: "h", Instance: 2}
	t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
)

// A realistic job on worker h:1, one event of each kind.
var (
	created     = JobCreated{Settings: map[string]string{"DISTRI": "opensuse", "TEST": "textmode"}}
	assigned    = JobAssigned{Worker: h1}
	unassigned  = JobUnassigned{Worker: h1, Reason: "worker offline"}
	fetched     = AssetFetched{Worker: h1, Setting: "ISO", Source: "os.iso", Path: "/cache/os.iso", SHA256: "ab12", Size: 1 << 30}
	checkedOut  = RepoCheckedOut{Worker: h1, Setting: "CASEDIR", URL: "https://example.org/tests.git", Commit: "c0ffee", Path: "/cache/tests"}
	ready       = JobReady{Worker: h1, Settings: created.Settings, CaseDir: "/cache/tests", JobDir: "/jobs/7"}
	started     = JobStarted{Worker: h1, Accel: "kvm"}
	bootStarted = ModuleStarted{Module: "boot"}
	bootPassed  = ModuleFinished{ModuleResult{Name: "boot", Result: ResultPassed, Duration: time.Second}}
	testsPassed = TestsFinished{Worker: h1, Result: ResultPassed, Modules: []ModuleResult{bootPassed.ModuleResult}, ResultsDir: "/jobs/7/results"}
	passed      = JobFinished{Result: ResultPassed, Modules: []ModuleResult{bootPassed.ModuleResult}, Files: map[string]string{"serial0.txt": "blob/1"}}
	cancelReq   = JobCancelRequested{By: "alice"}
	restarted   = JobRestarted{Clone: 8, By: "alice"}
	deleted     = JobDeleted{By: "alice"}
)

// histories bring a job of id 7 into each column of lifecycle.
var histories = map[string][]Payload{
	"new":  nil,
	"sch":  {created},
	"asg":  {created, assigned},
	"set":  {created, assigned, fetched, checkedOut, ready},
	"run":  {created, assigned, fetched, checkedOut, ready, started, bootStarted, bootPassed},
	"upl":  {created, assigned, fetched, checkedOut, ready, started, bootStarted, bootPassed, testsPassed},
	"done": {created, assigned, fetched, checkedOut, ready, started, bootStarted, bootPassed, testsPassed, passed},
	"canc": {created, cancelReq, JobFinished{Result: ResultUserCancelled}},
	"rst":  {created, assigned, fetched, checkedOut, ready, started, bootStarted, bootPassed, testsPassed, passed, restarted},
	"del":  {created, assigned, fetched, checkedOut, ready, started, bootStarted, bootPassed, testsPassed, passed, deleted},
}

var abbreviations = map[string]string{
	"sch": StateScheduled, "asg": StateAssigned, "set": StateSetup, "run": StateRunning,
	"upl": StateUploading, "done": StateDone, "canc": StateCancelled,
	"rst": StateDone, "del": StateDone,
}

// samples holds a valid payload of every kind, from worker h:1.
var samples = func() map[string]Payload {
	m := map[string]Payload{}
	for _, p := range []Payload{
		created, assigned, unassigned, fetched, checkedOut, ready, started, bootStarted,
		ModuleFinished{ModuleResult{Name: "shutdown", Result: ResultFailed}}, testsPassed, passed, cancelReq, restarted, deleted,
		JobFilesExpired{Files: []string{"boot-1.png"}, Rule: "screenshots:passed=30d"},
		DeveloperCommand{By: "alice", Action: DevPause, OnMismatch: "assert_screen"},
		JobPaused{Worker: h1, Module: "boot", At: PausedOnMismatch, Reason: "assert_screen: no match"},
		JobResumed{Worker: h1, How: DevResume, By: "alice"},
		APIKeyCreated{Key: "0123456789ABCDEF", Secret: "FEDCBA9876543210", User: "alice"},
		APIKeyRevoked{Key: "0123456789ABCDEF"},
		UserSet{User: "alice", PasswordHash: "$2a$10$0123456789012345678901uAbCdEfGhIjKlMnOpQrStUvWxYz0123"},
		UserRemoved{User: "alice"},
		SessionSecretCreated{Secret: make([]byte, 32)},
		TemplatesLoaded{URL: "https://example.org/templates.git", Commit: "abc", Files: map[string]string{"job_groups/x.yaml": "products: {}\nscenarios: {}\n"}},
		WorkerRegistered{Worker: h1, Classes: []string{"qemu_x86_64"}, Arch: "x86_64", CPUs: 4, MemoryMiB: 4096, KVM: true},
		WorkerHeartbeat{Worker: h1, Job: 7},
		WorkerOffline{Worker: h1, LastSeen: t0},
		MatchRequested{ID: "7-1", ReplyTo: h1, Tags: []string{"prompt"}},
		MatchResolved{ID: "7-1", Matched: true, Matcher: "m1"},
		AssetRegistered{Name: "testos.iso", SHA256: "ab", Size: 1},
		AssetProgress{Worker: h1, Job: 7, Setting: "ISO", Done: 1, Total: 2},
		CacheStatus{Host: "h", LimitBytes: 1},
		AssetPrefetchRequested{Host: "h", ID: "p1", Source: "testos.iso"},
		AssetPrefetched{Host: "h", ID: "p1", Source: "testos.iso"},
	} {
		m[p.Kind()] = p
	}
	return m
}()

// fold applies events to job 7 from scratch, failing on the first refusal.
func fold(t testing.TB, events ...Payload) *JobAggregate {
	t.Helper()
	a := &JobAggregate{ID: 7}
	for _, p := range events {
		if err := a.Apply(a.Seq+1, envelope(a.Seq+1, p), p); err != nil {
			t.Fatalf("building the job: %v", err)
		}
	}
	return a
}

// envelope wraps p as the event of job 7 stored at seq.
func envelope(seq uint64, p Payload) Event {
	return Event{Kind: p.Kind(), Job: 7, Time: t0.Add(time.Duration(seq) * time.Minute), Source: "test@host"}
}

// decoded returns p as a consumer gets it: a pointer from Event.Decode.
func decoded(t testing.TB, p Payload) Payload {
	t.Helper()
	ev, err := NewEvent(7, "test@host", p)
	if err != nil {
		t.Fatal(err)
	}
	q, err := ev.Decode()
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func snapshot(t testing.TB, a *JobAggregate) []byte {
	t.Helper()
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestJobAggregateLifecycle(t *testing.T) {
	lines := strings.Split(strings.TrimSpace(lifecycle), "\n")
	columns := strings.Fields(lines[0])[1:]
	var kinds []string
	for _, line := range lines[1:] {
		cells := strings.Fields(line)
		kind, cells := cells[0], cells[1:]
		kinds = append(kinds, kind)
		if len(cells) != len(columns) {
			t.Fatalf("row %s has %d cells for %d columns", kind, len(cells), len(columns))
		}
		p, ok := samples[kind]
		if !ok {
			t.Fatalf("no sample payload of %s", kind)
		}
		for i, want := range cells {
			column := columns[i]
			history, ok := histories[column]
			if !ok {
				t.Fatalf("no history for column %s", column)
			}
			for form, p := range map[string]Payload{"value": p, "decoded": decoded(t, p)} {
				t.Run(column+"/"+kind+"/"+form, func(t *testing.T) {
					a := fold(t, history...)
					before := snapshot(t, a)
					checkErr := a.Check(p)
					err := a.Apply(a.Seq+1, envelope(a.Seq+1, p), p)
					if (checkErr == nil) != (err == nil) {
						t.Fatalf("Check says %v, Apply says %v", checkErr, err)
					}
					switch want {
					case "!":
						if err == nil || errors.Is(err, ErrTransition) || !strings.Contains(err.Error(), "is not a job event") {
							t.Fatalf("got %v, want an error saying it is not a job event", err)
						}
					case "-":
						if !errors.Is(err, ErrTransition) {
							t.Fatalf("got %v, want ErrTransition", err)
						}
						if prefix := "job 7: cannot apply " + kind + ": "; !strings.HasPrefix(err.Error(), prefix) {
							t.Errorf("error %q does not start with %q", err, prefix)
						}
					default:
						if err != nil {
							t.Fatalf("refused: %v", err)
						}
						wantState := abbreviations[want]
						if want == "=" {
							wantState = abbreviations[column]
						}
						if a.State != wantState {
							t.Errorf("state %s, want %s", a.State, wantState)
						}
						return
					}
					if after := snapshot(t, a); !bytes.Equal(before, after) {
						t.Errorf("a refused event changed the job:\nbefore %s\nafter  %s", before, after)
					}
				})
			}
		}
	}
	registered := Kinds()
	slices.Sort(registered)
	slices.Sort(kinds)
	if !slices.Equal(kinds, registered) {
		t.Errorf("the lifecycle table has rows %v, the registered kinds are %v", kinds, registered)
	}
}

func TestJobAggregateHappyPath(t *testing.T) {
	var a JobAggregate
	for i, p := range []Payload{created, assigned, fetched, checkedOut, ready, started, bootStarted, bootPassed, testsPassed, passed} {
		ev, err := NewEvent(7, "test@host", p)
		if err != nil {
			t.Fatal(err)
		}
		ev.Time = t0.Add(time.Duration(i) * time.Minute)
		q, err := ev.Decode()
		if err != nil {
			t.Fatal(err)
		}
		seq := uint64(10 + 3*i) // other jobs' events sit between this job's in the stream
		if err := a.Apply(seq, ev, q); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
	}
	want := JobAggregate{
		ID: 7, Seq: 37, State: StateDone, Result: ResultPassed, Tested: ResultPassed,
		Settings: created.Settings,
		Worker:   &h1, Started: true,
		Created: t0, Updated: t0.Add(9 * time.Minute),
		Modules: []ModuleResult{{Name: "boot", Result: ResultPassed, Duration: time.Second}},
	}
	if !reflect.DeepEqual(a, want) {
		t.Errorf("folded into\n%+v\nwant\n%+v", a, want)
	}
	if !a.Final() {
		t.Error("a passed job is not final")
	}
}

func TestJobAggregateModules(t *testing.T) {
	a := fold(t, created, assigned, ready, started, bootStarted)
	if got := a.Modules; len(got) != 1 || got[0].Name != "boot" || got[0].Result != "running" {
		t.Fatalf("after module.started: %+v", got)
	}
	apply := func(p Payload) {
		t.Helper()
		if err := a.Apply(a.Seq+1, envelope(a.Seq+1, p), p); err != nil {
			t.Fatal(err)
		}
	}
	apply(bootPassed)
	apply(ModuleStarted{Module: "shell"})
	apply(ModuleFinished{ModuleResult{Name: "shell", Result: ResultFailed, Reason: "boom"}})
	// A module result without a start (its module.started was not
	// recorded) is added rather than lost.
	apply(ModuleFinished{ModuleResult{Name: "shutdown", Result: ResultSkipped}})
	want := []ModuleResult{
		{Name: "boot", Result: ResultPassed, Duration: time.Second},
		{Name: "shell", Result: ResultFailed, Reason: "boom"},
		{Name: "shutdown", Result: ResultSkipped},
	}
	if !reflect.DeepEqual(a.Modules, want) {
		t.Fatalf("modules %+v, want %+v", a.Modules, want)
	}
	// The worker's list from tests_finished is the job's list.
	tf := TestsFinished{Worker: h1, Result: ResultFailed, Modules: want[:2]}
	apply(tf)
	if !reflect.DeepEqual(a.Modules, want[:2]) {
		t.Errorf("after tests_finished: %+v", a.Modules)
	}
	// A tests_finished without modules (the VM did not boot) keeps them.
	b := fold(t, created, assigned, ready, started, bootStarted, bootPassed, TestsFinished{Worker: h1, Result: ResultIncomplete})
	if len(b.Modules) != 1 {
		t.Errorf("an empty tests_finished dropped the modules: %+v", b.Modules)
	}
}

func TestJobAggregateWorkerMismatch(t *testing.T) {
	for _, tc := range []struct {
		history []Payload
		p       Payload
	}{
		{[]Payload{created, assigned}, JobUnassigned{Worker: h2}},
		{[]Payload{created, assigned}, AssetFetched{Worker: h2}},
		{[]Payload{created, assigned}, RepoCheckedOut{Worker: h2}},
		{[]Payload{created, assigned}, JobReady{Worker: h2}},
		{[]Payload{created, assigned, ready}, JobUnassigned{Worker: h2}},
		{[]Payload{created, assigned, ready}, JobStarted{Worker: h2}},
		{[]Payload{created, assigned, ready}, TestsFinished{Worker: h2, Result: ResultIncomplete}},
		{[]Payload{created, assigned, ready, started}, TestsFinished{Worker: h2, Result: ResultPassed}},
	} {
		t.Run(tc.p.Kind(), func(t *testing.T) {
			a := fold(t, tc.history...)
			err := a.Apply(a.Seq+1, envelope(a.Seq+1, tc.p), tc.p)
			want := fmt.Sprintf("job 7: cannot apply %s: the job is assigned to h:1, not h:2", tc.p.Kind())
			if !errors.Is(err, ErrTransition) || err.Error() != want {
				t.Errorf("got %v, want %q", err, want)
			}
		})
	}
}

// A worker that went offline comes back and reports on a job that was
// given to another worker meanwhile.
func TestJobAggregateLateWorker(t *testing.T) {
	a := fold(t, created, assigned, fetched, unassigned, JobAssigned{Worker: h2}, AssetFetched{Worker: h2})
	for _, p := range []Payload{fetched, ready, started, unassigned, JobAssigned{Worker: h1}} {
		if err := a.Check(p); !errors.Is(err, ErrTransition) {
			t.Errorf("%s from h:1: got %v, want ErrTransition", p.Kind(), err)
		}
	}
	if err := a.Check(JobReady{Worker: h2}); err != nil {
		t.Errorf("the new worker is refused: %v", err)
	}
	// A running job is never given back: its worker must end it.
	b := fold(t, created, assigned, ready, started)
	if err := b.Check(unassigned); !errors.Is(err, ErrTransition) {
		t.Errorf("unassigning a running job: got %v, want ErrTransition", err)
	}
}

func TestJobAggregateResults(t *testing.T) {
	running := []Payload{created, assigned, ready, started}
	for _, r := range []string{"", ResultNone, "bogus", "PASSED", "running"} {
		for _, p := range []Payload{JobFinished{Result: r}, TestsFinished{Worker: h1, Result: r}} {
			a := fold(t, running...)
			err := a.Check(p)
			if !errors.Is(err, ErrTransition) || !strings.Contains(err.Error(), fmt.Sprintf("result %q is not one a job ends with", r)) {
				t.Errorf("%s with result %q: got %v", p.Kind(), r, err)
			}
		}
	}
	for _, r := range []string{
		ResultPassed, ResultSoftfailed, ResultFailed, ResultIncomplete, ResultSkipped, ResultObsoleted,
		ResultUserCancelled, ResultUserRestarted, ResultTimeoutExceeded, ResultParallelFailed,
	} {
		a := fold(t, append(running, TestsFinished{Worker: h1, Result: r}, JobFinished{Result: r, Reason: "why"})...)
		if a.Result != r || a.Reason != "why" {
			t.Errorf("finished %s: result %q, reason %q", r, a.Result, a.Reason)
		}
	}
}

// openQA shows a job that ended before its VM booted, cancelled by a user,
// skipped or obsoleted, as cancelled; every other end is done.
func TestJobAggregateCancelledOrDone(t *testing.T) {
	for _, tc := range []struct {
		name    string
		history []Payload
		result  string
		want    string
	}{
		{"cancelled while scheduled", []Payload{created, cancelReq}, ResultUserCancelled, StateCancelled},
		{"obsoleted while scheduled", []Payload{created}, ResultObsoleted, StateCancelled},
		{"skipped while assigned", []Payload{created, assigned}, ResultSkipped, StateCancelled},
		{"cancelled in setup", []Payload{created, assigned, fetched, cancelReq}, ResultUserCancelled, StateCancelled},
		{"cancelled after its VM failed to boot", []Payload{created, assigned, ready, TestsFinished{Worker: h1, Result: ResultUserCancelled}}, ResultUserCancelled, StateCancelled},
		{"given back, then cancelled", []Payload{created, assigned, unassigned}, ResultUserCancelled, StateCancelled},
		{"parallel_failed while scheduled", []Payload{created}, ResultParallelFailed, StateDone},
		{"incomplete in setup", []Payload{created, assigned, fetched}, ResultIncomplete, StateDone},
		{"cancelled while running", []Payload{created, assigned, ready, started, cancelReq}, ResultUserCancelled, StateDone},
		{"obsoleted while running", []Payload{created, assigned, ready, started}, ResultObsoleted, StateDone},
		{"cancelled while uploading", []Payload{created, assigned, ready, started, testsPassed, cancelReq}, ResultUserCancelled, StateDone},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := fold(t, append(tc.history, JobFinished{Result: tc.result})...)
			if a.State != tc.want || a.Result != tc.result {
				t.Errorf("ended %s (%s), want %s (%s)", a.State, a.Result, tc.want, tc.result)
			}
		})
	}
}

func TestJobAggregateAfterTheEnd(t *testing.T) {
	a := fold(t, created, assigned, ready, started, bootStarted, JobFinished{Result: ResultIncomplete, Reason: "worker offline"})
	// The worker was cut off, not dead: its reports arrive late.
	for _, p := range []Payload{bootPassed, TestsFinished{Worker: h1, Result: ResultPassed}, passed, cancelReq} {
		err := a.Check(p)
		want := "job 7: cannot apply " + p.Kind() + ": the job is already done (incomplete)"
		if !errors.Is(err, ErrTransition) || err.Error() != want {
			t.Errorf("got %v, want %q", err, want)
		}
	}
}

func TestJobAggregateRestartOnce(t *testing.T) {
	running := fold(t, created, assigned, ready, started)
	err := running.Check(restarted)
	if want := "job 7: cannot apply job.restarted.v1: the job is still running; only a final job is restarted"; err == nil || err.Error() != want {
		t.Errorf("restarting a running job: got %v, want %q", err, want)
	}

	a := fold(t, created, JobFinished{Result: ResultUserCancelled})
	for _, clone := range []int64{0, -1, 7} {
		if err := a.Check(JobRestarted{Clone: clone}); !errors.Is(err, ErrTransition) {
			t.Errorf("restart as job %d: got %v, want ErrTransition", clone, err)
		}
	}
	if err := a.Apply(a.Seq+1, envelope(a.Seq+1, restarted), restarted); err != nil {
		t.Fatal(err)
	}
	if a.Clone != 8 || a.State != StateCancelled || a.Result != ResultUserCancelled {
		t.Errorf("after the restart: clone %d, %s (%s)", a.Clone, a.State, a.Result)
	}
	err = a.Check(JobRestarted{Clone: 9})
	if want := "job 7: cannot apply job.restarted.v1: the job was already restarted as job 8"; !errors.Is(err, ErrTransition) || err.Error() != want {
		t.Errorf("second restart: got %v, want %q", err, want)
	}
}

func TestJobAggregateCreatedOnce(t *testing.T) {
	clone := JobCreated{Settings: map[string]string{"TEST": "t"}, CloneOf: 5, Retry: 2}
	a := fold(t, clone)
	if a.State != StateScheduled || a.Result != ResultNone || a.CloneOf != 5 || a.Retry != 2 || a.Created != t0.Add(time.Minute) {
		t.Errorf("created %+v", a)
	}
	clone.Settings["TEST"] = "changed"
	if a.Settings["TEST"] != "t" {
		t.Error("the aggregate shares its settings with the event")
	}
	err := a.Check(created)
	if want := "job 7: cannot apply job.created.v1: the job already exists"; !errors.Is(err, ErrTransition) || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
	err = new(JobAggregate).Check(assigned)
	if want := "job 0: cannot apply job.assigned.v1: the job does not exist: no job.created.v1 yet"; !errors.Is(err, ErrTransition) || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
	if err := fold(t, created).Check(JobAssigned{}); !errors.Is(err, ErrTransition) {
		t.Errorf("assigning to no worker: got %v", err)
	}
}

// Events that do not fit the aggregate at all are the caller's mistake,
// not the job's history: they are not ErrTransition.
func TestJobAggregateEnvelope(t *testing.T) {
	a := fold(t, created, assigned)
	for _, tc := range []struct {
		name string
		seq  uint64
		ev   Event
		p    Payload
		want string
	}{
		{"another job", a.Seq + 1, Event{Kind: fetched.Kind(), Job: 8}, fetched, "job 7: cannot apply asset.fetched.v1 of job 8"},
		{"no job", a.Seq + 1, Event{Kind: fetched.Kind()}, fetched, "job 7: cannot apply asset.fetched.v1 of job 0"},
		{"kind mismatch", a.Seq + 1, Event{Kind: ready.Kind(), Job: 7}, fetched, "job 7: the envelope is job.ready.v1 but the payload asset.fetched.v1"},
		{"replayed", a.Seq, envelope(a.Seq, fetched), fetched, "job 7: cannot apply asset.fetched.v1 at sequence 2: already at 2"},
		{"nil", a.Seq + 1, envelope(a.Seq+1, fetched), nil, "job 7: no payload to apply"},
		{"nil pointer", a.Seq + 1, envelope(a.Seq+1, fetched), (*AssetFetched)(nil), "job 7: no payload to apply"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, a)
			err := a.Apply(tc.seq, tc.ev, tc.p)
			if err == nil || errors.Is(err, ErrTransition) || err.Error() != tc.want {
				t.Errorf("got %v, want %q", err, tc.want)
			}
			if !bytes.Equal(before, snapshot(t, a)) {
				t.Error("a refused event changed the job")
			}
		})
	}
}

func TestJobAggregateJSON(t *testing.T) {
	a := fold(t, created, assigned, fetched, ready, started, bootStarted, bootPassed, cancelReq, testsPassed, passed)
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	var back JobAggregate
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(&back, a) {
		t.Fatalf("came back as\n%+v\nwant\n%+v", back, *a)
	}
	// A restored aggregate goes on where it stopped.
	if err := back.Check(bootPassed); !errors.Is(err, ErrTransition) {
		t.Errorf("the restored job accepts a module result after its end: %v", err)
	}
	if err := back.Apply(back.Seq+1, envelope(back.Seq+1, restarted), restarted); err != nil {
		t.Errorf("the restored job cannot be restarted: %v", err)
	}
}

func ExampleJobAggregate_Check() {
	var job JobAggregate
	for seq, p := range []Payload{
		JobCreated{Settings: map[string]string{"TEST": "textmode"}},
		JobCancelRequested{By: "alice"},
		JobFinished{Result: ResultUserCancelled},
	} {
		ev, _ := NewEvent(7, "api@host", p)
		if err := job.Apply(uint64(seq+1), ev, p); err != nil {
			fmt.Println(err)
		}
	}
	fmt.Println(job.State, job.Result)
	fmt.Println(job.Check(JobFinished{Result: ResultFailed}))
	// Output:
	// cancelled user_cancelled
	// job 7: cannot apply job.finished.v1: the job is already cancelled (user_cancelled)
}

// fuzzResults are the results a fuzzed event may carry, valid or not.
var fuzzResults = []string{
	ResultPassed, ResultSoftfailed, ResultFailed, ResultIncomplete, ResultSkipped, ResultObsoleted,
	ResultUserCancelled, ResultUserRestarted, ResultTimeoutExceeded, ResultParallelFailed,
	"", ResultNone, "running", "bogus",
}

// fuzzPayload makes an event of any kind from three bytes: the kind, the
// worker it comes from, and a result, module name or clone.
func fuzzPayload(kind, who, what byte) Payload {
	w := WorkerRef{Host: "h", Instance: int(who % 3)}
	if who >= 250 {
		w.Host = ""
	}
	result := fuzzResults[int(what)%len(fuzzResults)]
	module := fmt.Sprint("m", what%3)
	switch kind % 18 {
	case 0:
		return JobCreated{Settings: map[string]string{"TEST": module}, Retry: int(who % 3)}
	case 1:
		return JobAssigned{Worker: w}
	case 2:
		return JobUnassigned{Worker: w}
	case 3:
		return AssetFetched{Worker: w}
	case 4:
		return RepoCheckedOut{Worker: w}
	case 5:
		return JobReady{Worker: w}
	case 6:
		return JobStarted{Worker: w}
	case 7:
		return ModuleStarted{Module: module}
	case 8:
		return ModuleFinished{ModuleResult{Name: module, Result: result}}
	case 9:
		return TestsFinished{Worker: w, Result: result, Modules: []ModuleResult{{Name: module, Result: result}}}
	case 10:
		return JobFinished{Result: result}
	case 11:
		return JobCancelRequested{}
	case 12:
		return JobRestarted{Clone: []int64{0, 7, 8, -1}[what%4]}
	case 13:
		return WorkerRegistered{Worker: w}
	case 14:
		return WorkerHeartbeat{Worker: w, Job: 7}
	case 15:
		return WorkerOffline{Worker: w}
	case 16:
		return MatchRequested{ID: module}
	default:
		return MatchResolved{ID: module}
	}
}

// FuzzAggregate applies events made from four bytes each: kind, worker,
// result or module, and flags (bit 0: decoded from the wire, bit 1: for
// another job, bit 2: a sequence already applied).
func FuzzAggregate(f *testing.F) {
	f.Add([]byte{
		0, 0, 0, 0, 1, 1, 0, 0, 3, 1, 0, 1, 5, 1, 0, 0, 6, 1, 0, 1,
		7, 0, 1, 0, 8, 0, 1, 1, 9, 1, 0, 0, 10, 0, 0, 1, 12, 0, 2, 0, 12, 0, 2, 0,
	})
	f.Add([]byte{0, 0, 0, 0, 11, 0, 0, 0, 10, 0, 6, 0, 8, 0, 1, 0, 1, 2, 0, 4})
	f.Add([]byte{0, 0, 0, 0, 1, 1, 0, 0, 2, 1, 0, 0, 1, 2, 0, 0, 3, 1, 0, 0, 14, 1, 0, 0, 10, 0, 11, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		a := &JobAggregate{ID: 7}
		for ; len(data) >= 4; data = data[4:] {
			p := fuzzPayload(data[0], data[1], data[2])
			flags := data[3]
			ev := Event{Kind: p.Kind(), Job: 7, Time: t0.Add(time.Duration(a.Seq) * time.Second)}
			seq := a.Seq + 1
			if flags&1 != 0 {
				p = decoded(t, p)
			}
			if flags&2 != 0 {
				ev.Job = 8
			}
			if flags&4 != 0 {
				seq = a.Seq
			}
			before := cloneJob(a)
			wasFinal := a.Final()
			checkErr := a.Check(p)
			err := a.Apply(seq, ev, p)
			envelopeOK := flags&6 == 0
			isJobEvent := data[0]%18 < 13
			switch {
			case envelopeOK && (checkErr == nil) != (err == nil):
				t.Fatalf("%s: Check says %v, Apply says %v", p.Kind(), checkErr, err)
			case !envelopeOK && err == nil:
				t.Fatalf("%s: applied with a broken envelope (flags %b)", p.Kind(), flags)
			case envelopeOK && err != nil && errors.Is(err, ErrTransition) != isJobEvent:
				t.Fatalf("%s: %v: ErrTransition is for job events only", p.Kind(), err)
			}
			if err != nil && !reflect.DeepEqual(&before, a) {
				t.Fatalf("%s refused (%v) but changed the job", p.Kind(), err)
			}
			if err == nil && a.Seq != seq {
				t.Fatalf("%s applied at %d, the job says %d", p.Kind(), seq, a.Seq)
			}
			if wasFinal && !a.Final() {
				t.Fatalf("%s took the job out of its final state: %s (%s)", p.Kind(), a.State, a.Result)
			}
			checkInvariants(t, a)
		}
	})
}

func cloneJob(a *JobAggregate) JobAggregate {
	c := *a
	c.Settings, c.Modules = maps.Clone(a.Settings), slices.Clone(a.Modules)
	if a.Worker != nil {
		w := *a.Worker
		c.Worker = &w
	}
	return c
}

func checkInvariants(t *testing.T, a *JobAggregate) {
	t.Helper()
	switch a.State {
	case "":
		if a.Seq != 0 {
			t.Fatalf("a job with events has no state: %+v", a)
		}
		return
	case StateScheduled:
		if a.Worker != nil {
			t.Fatalf("a scheduled job has worker %s", a.Worker)
		}
	case StateAssigned, StateSetup, StateRunning, StateUploading:
		if a.Worker == nil {
			t.Fatalf("a job in %s has no worker", a.State)
		}
	case StateDone, StateCancelled:
	default:
		t.Fatalf("unknown state %q", a.State)
	}
	if a.Final() != slices.Contains(finalResults, a.Result) {
		t.Fatalf("state %s with result %q", a.State, a.Result)
	}
	if !a.Final() && a.Result != ResultNone {
		t.Fatalf("unfinished job with result %q", a.Result)
	}
	if a.State == StateRunning && !a.Started {
		t.Fatal("running but not started")
	}
	if a.State == StateCancelled && a.Started {
		t.Fatal("a started job ended cancelled, not done")
	}
	if a.Clone != 0 && !a.Final() {
		t.Fatalf("restarted as %d while %s", a.Clone, a.State)
	}
}

// Developer mode: keys, typing, resume and retry only while paused, retry
// only on a failed screen check; the end of the tests ends the pause.
func TestJobAggregateDeveloperMode(t *testing.T) {
	run := []Payload{created, assigned, ready, started}
	keys := DeveloperCommand{By: "alice", Action: DevKeys, Keys: []string{"ret"}}
	retry := DeveloperCommand{By: "alice", Action: DevRetry}
	mismatch := JobPaused{Worker: h1, Module: "boot", At: PausedOnMismatch, Reason: "assert_screen: no match"}
	for _, tc := range []struct {
		name    string
		history []Payload
		p       Payload
		refused string // "" when allowed
	}{
		{"keys while running", run, keys, "the job is not paused: pause it first"},
		{"pause at once", run, DeveloperCommand{By: "alice", Action: DevPause}, ""},
		{"pause on a bad check", run, DeveloperCommand{Action: DevPause, OnMismatch: "wait_serial"}, `pause on mismatch of "wait_serial": give assert_screen or check_screen`},
		{"unknown action", run, DeveloperCommand{Action: "reboot"}, `unknown developer action "reboot" (pause, resume, retry, keys, type)`},
		{"keys while paused", append(slices.Clone(run), mismatch), keys, ""},
		{"no keys", append(slices.Clone(run), mismatch), DeveloperCommand{Action: DevKeys}, "keys with nothing to send"},
		{"retry a mismatch", append(slices.Clone(run), mismatch), retry, ""},
		{"retry at a module", append(slices.Clone(run), JobPaused{Worker: h1, At: PausedAtModule}), retry, "the job is paused at a module, not on a failed screen check: only that can be retried"},
		{"paused twice", append(slices.Clone(run), mismatch), mismatch, "the job is paused already"},
		{"resumed unpaused", run, JobResumed{Worker: h1, How: DevResume}, "the job is not paused"},
		{"paused by another worker", run, JobPaused{Worker: h2, At: PausedAtCommand}, "the job is assigned to h:1, not h:2"},
		{"after the tests", append(slices.Clone(run), mismatch, TestsFinished{Worker: h1, Result: ResultFailed}), keys, "the job is uploading, not running"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := fold(t, tc.history...)
			err := a.Apply(a.Seq+1, envelope(a.Seq+1, tc.p), tc.p)
			if tc.refused == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			want := fmt.Sprintf("job 7: cannot apply %s: %s", tc.p.Kind(), tc.refused)
			if !errors.Is(err, ErrTransition) || err.Error() != want {
				t.Errorf("got %v, want %q", err, want)
			}
		})
	}
	a := fold(t, append(slices.Clone(run), mismatch)...)
	if a.Paused == nil || a.Paused.Reason != mismatch.Reason {
		t.Fatalf("paused = %+v, want the mismatch", a.Paused)
	}
	a = fold(t, append(slices.Clone(run), mismatch, JobResumed{Worker: h1, How: DevRetry})...)
	if a.Paused != nil {
		t.Fatalf("still paused after JobResumed: %+v", a.Paused)
	}
}

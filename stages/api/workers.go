package api

import (
	"cmp"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"jetqa/schemas"
)

// WorkerInfo is a worker instance in openQA's shape (Workers.pm info):
// status idle, running or dead; alive, connected and websocket are 1 or
// 0, as openQA gives them for compatibility.
type WorkerInfo struct {
	ID         int               `json:"id"`
	Host       string            `json:"host"`
	Instance   int               `json:"instance"`
	Status     string            `json:"status"`
	Error      *string           `json:"error"`
	Properties map[string]string `json:"properties"`
	JobID      int64             `json:"jobid,omitempty"`
	Alive      int               `json:"alive"`
	Connected  int               `json:"connected"`
	Websocket  int               `json:"websocket"`
	Seen       Time              `json:"t_seen"`
}

// listWorkers serves GET /api/v1/workers: {"workers": [...]}, ordered by
// id, with limit (default and most 500, as openQA's admin tables) and
// offset.
func (s *Server) listWorkers(w http.ResponseWriter, r *http.Request) {
	limit, offset, ok := paging(w, r, 500)
	if !ok {
		return
	}
	all := s.workerInfos()
	all = all[min(offset, len(all)):]
	all = all[:min(limit, len(all))]
	writeJSON(w, http.StatusOK, map[string]any{"workers": all})
}

// workerInfos are the registered worker instances, ordered by id.
func (s *Server) workerInfos() []WorkerInfo {
	s.view.mu.Lock()
	all := make([]WorkerInfo, 0, len(s.view.workers))
	for ref, v := range s.view.workers {
		info := WorkerInfo{
			ID: v.id, Host: ref.Host, Instance: ref.Instance, Status: "idle", Seen: Time{v.lastSeen},
			Properties: map[string]string{
				"WORKER_CLASS":     strings.Join(v.reg.Classes, ","),
				"CPU_ARCH":         unameArch(v.reg.Arch),
				"JETQA_CPUS":       strconv.Itoa(v.reg.CPUs),
				"JETQA_MEMORY_MIB": strconv.Itoa(v.reg.MemoryMiB),
				"JETQA_KVM":        strconv.FormatBool(v.reg.KVM),
			},
			Alive: 1, Connected: 1, Websocket: 1,
		}
		switch {
		case v.offline:
			info.Status, info.Alive, info.Connected, info.Websocket = "dead", 0, 0, 0
		case v.job != 0:
			info.Status, info.JobID = "running", v.job
		}
		all = append(all, info)
	}
	s.view.mu.Unlock()
	slices.SortFunc(all, func(a, b WorkerInfo) int { return cmp.Compare(a.ID, b.ID) })
	return all
}

// unameArch names an architecture as `uname -m` does, as openQA's CPU_ARCH.
func unameArch(a string) string {
	switch a {
	case "amd64":
		return "x86_64"
	case "arm64":
		return "aarch64"
	case "386":
		return "i686"
	}
	return a
}

// jobJSON is a job as openQA's API gives it (Jobs.pm to_hash): the view,
// with the fields openQA always has, null where a job has none.
type jobJSON struct {
	JobView
	Priority    int    `json:"priority"`
	Test        string `json:"test"`
	GroupID     *int64 `json:"group_id"`
	Group       string `json:"group,omitempty"`
	BlockedByID *int64 `json:"blocked_by_id"`
	CloneID     *int64 `json:"clone_id"`
	// AssignedWorkerID is the id GET /api/v1/workers gives the instance
	// the job is assigned to.
	AssignedWorkerID *int   `json:"assigned_worker_id,omitempty"`
	OriginID         *int64 `json:"origin_id,omitempty"`
	// null until the job starts and ends, as in openQA.
	Started  *Time `json:"t_started"`
	Finished *Time `json:"t_finished"`
	Parents  deps  `json:"parents"`
	Children deps  `json:"children"`
	// HasParents and ParentsOK are 0 or 1, as openQA gives them.
	HasParents int `json:"has_parents"`
	ParentsOK  int `json:"parents_ok"`
	// Assets are openQA's: the job's asset settings by type (iso, hdd,
	// other, repo).
	Assets map[string][]string `json:"assets"`
	// Modules carry openQA's category and flags beside jetqa's fields.
	Modules []openQAModule `json:"modules"`
}

// openQAModule is a test module as openQA's job list gives it (name,
// category, result, flags), with jetqa's reason, duration and steps.
type openQAModule struct {
	schemas.ModuleResult
	Category string   `json:"category"`
	Flags    []string `json:"flags"`
}

// deps are openQA's job dependencies by kind; jetqa has chained ones
// (START_AFTER_TEST).
type deps struct {
	Chained         []int64 `json:"Chained"`
	DirectlyChained []int64 `json:"Directly chained"`
	Parallel        []int64 `json:"Parallel"`
}

func (s *Server) openQAJob(j JobView) jobJSON { return s.openQAJobs([]JobView{j})[0] }

// workerIDs maps the instances' names (host:instance) to their ids.
func (s *Server) workerIDs() map[string]int {
	s.view.mu.Lock()
	defer s.view.mu.Unlock()
	ids := make(map[string]int, len(s.view.workers))
	for ref, w := range s.view.workers {
		ids[ref.String()] = w.id
	}
	return ids
}

func openQAJobOf(j JobView) jobJSON {
	out := jobJSON{JobView: j, Priority: 50, Test: j.Settings["TEST"], Started: j.Started, Finished: j.Finished,
		Parents:  deps{[]int64{}, []int64{}, []int64{}},
		Children: deps{[]int64{}, []int64{}, []int64{}},
	}
	out.Priority = schemas.Priority(j.Settings)
	out.Parents.Chained = append(out.Parents.Chained, j.After...)
	out.HasParents, out.ParentsOK = min(len(j.After), 1), 1
	if j.Result == schemas.ResultSkipped || j.Result == schemas.ResultParallelFailed {
		out.ParentsOK = 0
	}
	out.Assets = schemas.AssetsByType(j.Settings)
	out.Modules = make([]openQAModule, len(j.Modules))
	for i, m := range j.Modules {
		out.Modules[i] = openQAModule{ModuleResult: m, Flags: append([]string{}, m.Flags...)}
	}
	if g, err := strconv.ParseInt(j.Settings["_GROUP_ID"], 10, 64); err == nil {
		out.GroupID, out.Group = &g, j.Settings["_GROUP"]
	}
	if j.Clone != 0 {
		out.CloneID = &j.Clone
	}
	if j.CloneOf != 0 {
		out.OriginID = &j.CloneOf
	}
	return out
}

func (s *Server) openQAJobs(jobs []JobView) []jobJSON {
	ids := s.workerIDs()
	out := make([]jobJSON, len(jobs))
	for i, j := range jobs {
		out[i] = openQAJobOf(j)
		s.dependencies(&out[i])
		if id, ok := ids[j.Worker]; ok && j.Worker != "" {
			out[i].AssignedWorkerID = &id
		}
	}
	return out
}

// dependencies fills a job's children and, while it waits for a parent,
// blocked_by_id.
func (s *Server) dependencies(j *jobJSON) {
	s.view.mu.Lock()
	defer s.view.mu.Unlock()
	j.Children.Chained = append(j.Children.Chained, s.view.children[j.ID]...)
	if j.State != schemas.StateScheduled {
		return
	}
	for _, parent := range j.After {
		if p := s.view.jobs[parent]; p != nil && p.State != schemas.StateDone && p.State != schemas.StateCancelled {
			id := parent
			j.BlockedByID = &id
			return
		}
	}
}

// detailsStep is one step of a module as openQA's details give it (as
// os-autoinst's basetest records it): a screenshot with the needle it
// matched and where, or the closest candidates when none did, or a text
// step.
type detailsStep struct {
	Num          int             `json:"num"`
	Result       string          `json:"result"` // ok, fail, softfail, unk
	DisplayTitle string          `json:"display_title"`
	Title        string          `json:"title,omitempty"`
	Screenshot   string          `json:"screenshot,omitempty"`
	Needle       string          `json:"needle,omitempty"`
	Area         []detailsArea   `json:"area,omitempty"`
	Error        *float64        `json:"error,omitempty"`
	Tags         []string        `json:"tags,omitempty"`
	Needles      []detailsNeedle `json:"needles,omitempty"`
	Text         string          `json:"text_data,omitempty"`
	Similarity   float64         `json:"similarity,omitempty"` // jetqa's: of the matched or closest needle
	Kind         string          `json:"kind"`                 // jetqa's: match, screenshot, serial, info
}

// detailsArea is where a needle area was found: similarity in percent.
type detailsArea struct {
	X          int    `json:"x"`
	Y          int    `json:"y"`
	W          int    `json:"w"`
	H          int    `json:"h"`
	Similarity int    `json:"similarity"`
	Result     string `json:"result"`
}

// detailsNeedle is a candidate that did not match.
type detailsNeedle struct {
	Name  string        `json:"name"`
	Error float64       `json:"error"`
	Area  []detailsArea `json:"area"`
}

func toDetailsAreas(areas []schemas.AreaMatch) []detailsArea {
	out := make([]detailsArea, len(areas))
	for i, a := range areas {
		out[i] = detailsArea{X: a.X, Y: a.Y, W: a.Width, H: a.Height, Similarity: int(a.Similarity * 100), Result: stepResult(okResult(a.OK))}
	}
	return out
}

func okResult(ok bool) string {
	if ok {
		return schemas.ResultPassed
	}
	return schemas.ResultFailed
}

// stepResult is a step's result in openQA's words.
func stepResult(r string) string {
	switch r {
	case schemas.ResultPassed:
		return "ok"
	case schemas.ResultFailed:
		return "fail"
	case schemas.ResultSoftfailed:
		return "softfail"
	}
	return "unk"
}

func toDetailsStep(num int, st schemas.Step) detailsStep {
	title := cmp.Or(st.Needle, st.Text)
	d := detailsStep{Num: num, Result: stepResult(st.Result), DisplayTitle: title, Screenshot: st.Screenshot,
		Needle: st.Needle, Similarity: st.Similarity, Kind: st.Kind, Tags: st.Tags}
	if st.Screenshot == "" {
		d.Title, d.Text = st.Kind, st.Text
	}
	if st.Result == schemas.ResultPassed && len(st.Areas) > 0 {
		d.Area = toDetailsAreas(st.Areas)
		e := 1 - st.Similarity
		d.Error = &e
	}
	for _, c := range st.Candidates {
		d.Needles = append(d.Needles, detailsNeedle{Name: c.Needle, Error: c.Error, Area: toDetailsAreas(c.Areas)})
	}
	if st.Kind == "match" && st.Result != schemas.ResultPassed {
		// A failed match has no needle of its own, only candidates.
		d.Needle = ""
		if len(d.Needles) == 0 && st.Needle != "" {
			d.Needles = []detailsNeedle{{Name: st.Needle, Error: 1 - st.Similarity, Area: toDetailsAreas(st.Areas)}}
		}
	}
	return d
}

// detailsModule is a module as openQA's details give it.
type detailsModule struct {
	Name     string        `json:"name"`
	Category string        `json:"category"`
	Result   string        `json:"result"`
	Flags    []string      `json:"flags"`
	Details  []detailsStep `json:"details"`
}

// getJobDetails serves openQA's GET /api/v1/jobs/{id}/details: the job
// with testresults (each module's steps), logs (its result files) and
// ulogs (the files its guest uploaded, served at /tests/ID/file/NAME as
// openQA's).
func (s *Server) getJobDetails(w http.ResponseWriter, r *http.Request) {
	j, ok := s.jobFromPath(w, r)
	if !ok {
		return
	}
	modules := make([]detailsModule, len(j.Modules))
	for i, m := range j.Modules {
		steps := make([]detailsStep, len(m.Details))
		for k, st := range m.Details {
			steps[k] = toDetailsStep(k+1, st)
		}
		modules[i] = detailsModule{Name: m.Name, Result: m.Result, Flags: append([]string{}, m.Flags...), Details: steps}
	}
	logs, ulogs := []string{}, []string{}
	for _, name := range slices.Sorted(maps.Keys(j.Files)) {
		if u, ok := strings.CutPrefix(name, schemas.ULogsDir+"/"); ok {
			ulogs = append(ulogs, u)
		} else {
			logs = append(logs, name)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"job": struct {
		jobJSON
		TestResults []detailsModule `json:"testresults"`
		Logs        []string        `json:"logs"`
		ULogs       []string        `json:"ulogs"`
	}{s.openQAJob(j), modules, logs, ulogs}})
}

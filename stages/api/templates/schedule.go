package templates

import (
	"errors"
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Job is a job to create for a scheduled product: its settings, and the
// jobs it starts after (indexes into Plan.Jobs, always lower than its
// own: parents come first).
type Job struct {
	Settings map[string]string
	After    []int
}

// Failed is a job that could not be created, as openQA's failed_job_info.
type Failed struct {
	Name  string `json:"job_name"`
	Error string `json:"error_message"`
}

// Plan is what scheduling a product gives.
type Plan struct {
	Jobs   []Job
	Failed []Failed
	// Obsolete asks to end the unfinished jobs of the same product
	// (_OBSOLETE=1): these settings name them; empty for none.
	Obsolete map[string]string
}

// ErrNoProduct says no job template is for the product: openQA answers
// that with an error but status 200, unless _FAIL_IF_NO_JOBS is given.
var ErrNoProduct = errors.New("no products found")

// Required are the parameters a product is named by.
var Required = []string{"DISTRI", "VERSION", "FLAVOR", "ARCH"}

// Schedule gives the jobs of every template for the product params name
// (DISTRI, VERSION, FLAVOR, ARCH), as openQA's isos post: settings from
// the product, the machine, the test suite and the template, in that
// order of precedence, then the parameters; WORKER_CLASS merged; +NAME
// beating the parameters; %NAME% expanded. TEST and MACHINE select
// scenarios (and their parents); _GROUP and _GROUP_ID a job group;
// _PRIORITY overrides the templates' priorities; _SKIP_CHAINED_DEPS
// leaves parents out.
func (s *Set) Schedule(params map[string]string) (Plan, error) {
	args := map[string]string{}
	for k, v := range params {
		switch k {
		case "async":
			// openQA's background scheduling: jetqa answers at once anyway.
			continue
		case "scheduled_product_clone_id":
			return Plan{}, errors.New("scheduled_product_clone_id: jetqa keeps no scheduled products to clone yet; give the product's parameters")
		}
		args[strings.ToUpper(k)] = v
	}
	var missing []string
	for _, k := range Required {
		if args[k] == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) > 0 {
		return Plan{}, fmt.Errorf("missing parameters: %s (a product is named by DISTRI, VERSION, FLAVOR and ARCH)", strings.Join(missing, " "))
	}
	var plan Plan
	flags := map[string]bool{}
	for _, k := range []string{"_OBSOLETE", "_DEPRIORITIZEBUILD", "_ONLY_OBSOLETE_SAME_BUILD", "_SKIP_CHAINED_DEPS", "_INCLUDE_CHILDREN", "_FORCE_OBSOLETE", "_FORCE_DEPRIORITIZEBUILD", "_FAIL_IF_NO_JOBS"} {
		flags[k] = truthy(args[k])
		delete(args, k)
	}
	if (flags["_OBSOLETE"] || flags["_DEPRIORITIZEBUILD"]) && args["TEST"] != "" && !flags["_FORCE_OBSOLETE"] && !flags["_FORCE_DEPRIORITIZEBUILD"] {
		return Plan{}, errors.New("one must not give TEST and _OBSOLETE=1 at the same time: it would obsolete the whole build for one scenario (add _FORCE_OBSOLETE=1 if meant)")
	}
	groupName, groupID := args["_GROUP"], args["_GROUP_ID"]
	delete(args, "_GROUP")
	delete(args, "_GROUP_ID")
	prio := args["_PRIORITY"]
	delete(args, "_PRIORITY")
	if prio != "" {
		if _, err := strconv.Atoi(prio); err != nil {
			return Plan{}, fmt.Errorf("_PRIORITY=%q: want a number", prio)
		}
	}
	templates, err := s.templatesFor(args, groupName, groupID)
	if err != nil {
		return Plan{}, err
	}
	type candidate struct {
		settings map[string]string
		key      string // TEST@MACHINE
		err      error
	}
	var all []candidate
	for _, tg := range templates {
		settings, err := s.settings(tg.t, args)
		if prio != "" {
			settings["_PRIORITY"] = prio
		} else {
			settings["_PRIORITY"] = strconv.Itoa(tg.t.Priority)
		}
		settings["_GROUP_ID"] = strconv.FormatInt(tg.g.ID, 10)
		settings["_GROUP"] = tg.g.Name
		all = append(all, candidate{settings, settings["TEST"] + "@" + settings["MACHINE"], err})
	}
	byKey := map[string][]int{}
	for i, c := range all {
		byKey[c.key] = append(byKey[c.key], i)
	}
	parents := make([][]int, len(all))
	depErrs := make([][]string, len(all))
	for i, c := range all {
		for _, dep := range []string{"START_AFTER_TEST", "START_DIRECTLY_AFTER_TEST", "PARALLEL_WITH"} {
			v := c.settings[dep]
			if v == "" {
				continue
			}
			if dep == "PARALLEL_WITH" {
				depErrs[i] = append(depErrs[i], "PARALLEL_WITH: jetqa does not run parallel (multi-machine) jobs yet")
				for _, ref := range parseDeps(v, c.settings["MACHINE"]) {
					for _, p := range byKey[ref] {
						// Alone, a parallel parent would wait for its peers.
						depErrs[p] = append(depErrs[p], fmt.Sprintf("it is the parallel parent of %s: jetqa does not run parallel (multi-machine) jobs yet", c.key))
					}
				}
				continue
			}
			for _, ref := range parseDeps(v, c.settings["MACHINE"]) {
				if ps, ok := byKey[ref]; ok {
					parents[i] = append(parents[i], ps...)
				} else if !flags["_SKIP_CHAINED_DEPS"] {
					depErrs[i] = append(depErrs[i], fmt.Sprintf("%s=%s not found - check for dependency typos and dependency cycles", dep, ref))
				}
			}
		}
	}
	// Wanted: the scenarios TEST and MACHINE select, and their parents
	// unless _SKIP_CHAINED_DEPS.
	wanted := make([]bool, len(all))
	tests := splitList(args["TEST"])
	for i, c := range all {
		if m := args["MACHINE"]; m != "" && m != c.settings["MACHINE"] {
			continue
		}
		wanted[i] = len(tests) == 0 || slices.Contains(tests, c.settings["TEST"])
	}
	if !flags["_SKIP_CHAINED_DEPS"] {
		var mark func(i int, seen map[int]bool)
		mark = func(i int, seen map[int]bool) {
			for _, p := range parents[i] {
				if !seen[p] {
					seen[p] = true
					wanted[p] = true
					mark(p, seen)
				}
			}
		}
		for i := range all {
			if wanted[i] {
				mark(i, map[int]bool{})
			}
		}
	}
	if flags["_INCLUDE_CHILDREN"] {
		for changed := true; changed; {
			changed = false
			for i := range all {
				for _, p := range parents[i] {
					if wanted[p] && !wanted[i] {
						wanted[i], changed = true, true
					}
				}
			}
		}
	}
	order, cyclic := topological(parents, wanted)
	index := map[int]int{}
	for _, i := range order {
		c := all[i]
		name := c.settings["TEST"]
		switch {
		case c.err != nil:
			plan.Failed = append(plan.Failed, Failed{name, c.err.Error()})
			continue
		case len(depErrs[i]) > 0:
			plan.Failed = append(plan.Failed, Failed{name, strings.Join(depErrs[i], "; ")})
			continue
		}
		job := Job{Settings: c.settings}
		ok := true
		for _, p := range parents[i] {
			if !wanted[p] {
				continue // left out by _SKIP_CHAINED_DEPS or a TEST filter
			}
			pi, created := index[p]
			if !created {
				plan.Failed = append(plan.Failed, Failed{name, fmt.Sprintf("its parent %s was not created", all[p].key)})
				ok = false
				break
			}
			job.After = append(job.After, pi)
		}
		if ok {
			index[i] = len(plan.Jobs)
			plan.Jobs = append(plan.Jobs, job)
		}
	}
	for _, i := range cyclic {
		plan.Failed = append(plan.Failed, Failed{all[i].settings["TEST"], "there is a cycle in the dependencies of " + all[i].key})
	}
	if (flags["_OBSOLETE"] || flags["_DEPRIORITIZEBUILD"]) && len(plan.Jobs) > 0 {
		first := plan.Jobs[0].Settings
		plan.Obsolete = map[string]string{}
		keys := []string{"DISTRI", "VERSION", "FLAVOR", "ARCH"}
		if flags["_ONLY_OBSOLETE_SAME_BUILD"] {
			keys = append(keys, "BUILD")
		}
		for _, k := range keys {
			if first[k] != "" {
				plan.Obsolete[k] = first[k]
			}
		}
	}
	if len(plan.Jobs) == 0 && flags["_FAIL_IF_NO_JOBS"] {
		return plan, errors.New("no jobs were created (_FAIL_IF_NO_JOBS=1)")
	}
	return plan, nil
}

type groupTemplate struct {
	g *Group
	t *Template
}

// templatesFor finds the templates of the product args name: those whose
// version is the same, or, when there are none, whose version globs it.
func (s *Set) templatesFor(args map[string]string, groupName, groupID string) ([]groupTemplate, error) {
	var exact, glob []groupTemplate
	for gi := range s.Groups {
		g := &s.Groups[gi]
		if groupName != "" && g.Name != groupName || groupID != "" && strconv.FormatInt(g.ID, 10) != groupID {
			continue
		}
		for ti := range g.Templates {
			t := &g.Templates[ti]
			p := t.Product
			if !strings.EqualFold(p.Distri, args["DISTRI"]) || p.Flavor != args["FLAVOR"] || p.Arch != args["ARCH"] {
				continue
			}
			if p.Version == args["VERSION"] {
				exact = append(exact, groupTemplate{g, t})
			} else if ok, _ := path.Match(strings.NewReplacer("?", `\?`, "[", `\[`, `\`, `\\`).Replace(p.Version), args["VERSION"]); ok && strings.Contains(p.Version, "*") {
				glob = append(glob, groupTemplate{g, t})
			}
		}
	}
	if len(exact) == 0 {
		exact = glob
	}
	if len(exact) == 0 {
		what := strings.Join([]string{strings.ToLower(args["DISTRI"]), args["FLAVOR"], args["ARCH"]}, "-")
		if groupName != "" || groupID != "" {
			what += " in job group " + groupName + groupID
		}
		return nil, fmt.Errorf("%w for %s (version %s)", ErrNoProduct, what, args["VERSION"])
	}
	return exact, nil
}

// settings composes one job's settings as openQA's
// OpenQA::JobSettings::generate_settings.
func (s *Set) settings(t *Template, args map[string]string) (map[string]string, error) {
	out := map[string]string{}
	var classes []string
	machine, hasMachine := s.Machines[t.Machine]
	suite := s.TestSuites[t.TestSuite]
	for _, layer := range []map[string]string{
		s.Products[productKey(t.Product.Distri, t.Product.Version, t.Product.Flavor, t.Product.Arch)],
		machine.Settings, suite.Settings, t.Settings,
	} {
		for _, k := range slices.Sorted(maps.Keys(layer)) {
			if k == "WORKER_CLASS" {
				classes = append(classes, layer[k])
				continue
			}
			out[k] = layer[k]
		}
	}
	maps.Copy(out, args)
	out["MACHINE"] = t.Machine
	out["BACKEND"] = "qemu"
	if hasMachine {
		out["BACKEND"] = machine.Backend
	}
	out["TEST"] = t.Name
	if t.TestSuite != "" {
		out["TEST_SUITE_NAME"] = t.TestSuite
	}
	if t.Description != "" {
		out["JOB_DESCRIPTION"] = t.Description
	}
	if len(classes) > 0 {
		slices.Sort(classes)
		out["WORKER_CLASS"] = strings.Join(classes, ",")
	}
	out["DISTRI"] = strings.ToLower(out["DISTRI"])
	for k, v := range out {
		if strings.HasPrefix(k, "+") {
			delete(out, k)
			out[k[1:]] = v
		}
	}
	return out, Expand(out)
}

var placeholder = regexp.MustCompile(`(%+)(\w+)(%+)`)

// Expand replaces %NAME% in the settings' values with the value of NAME,
// recursively, as openQA does when it creates jobs; %%NAME%% becomes
// %NAME%, and a name with no setting is left as it is.
func Expand(settings map[string]string) error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		v, err := expand(settings, settings[k], map[string]bool{})
		if err != nil {
			errs = append(errs, fmt.Errorf("setting %s: %w", k, err))
			continue
		}
		settings[k] = v
	}
	return errors.Join(errs...)
}

func expand(settings map[string]string, v string, visiting map[string]bool) (string, error) {
	var err error
	out := placeholder.ReplaceAllStringFunc(v, func(m string) string {
		g := placeholder.FindStringSubmatch(m)
		start, key, end := g[1], g[2], g[3]
		if start != "%" || end != "%" {
			return start[1:] + key + end[:len(end)-1]
		}
		val, ok := settings[key]
		if !ok {
			return m
		}
		if visiting[key] {
			err = fmt.Errorf("%s contains a circular reference, its value is %s", key, val)
			return m
		}
		branch := maps.Clone(visiting)
		branch[key] = true
		r, e := expand(settings, val, branch)
		if e != nil {
			err = e
		}
		return r
	})
	return out, err
}

// parseDeps reads START_AFTER_TEST's "test,test@machine" list; a test
// without a machine is on the job's own.
func parseDeps(v, machine string) []string {
	var out []string
	for _, t := range splitList(v) {
		if !strings.Contains(t, "@") {
			t += "@" + machine
		}
		out = append(out, t)
	}
	return out
}

func splitList(v string) []string {
	var out []string
	for f := range strings.SplitSeq(v, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func truthy(v string) bool { return v != "" && v != "0" }

// topological orders the wanted jobs parents first; jobs on a cycle come
// back apart.
func topological(parents [][]int, wanted []bool) (order, cyclic []int) {
	state := make([]int, len(parents)) // 0 new, 1 visiting, 2 done, 3 on a cycle
	var visit func(i int) bool
	visit = func(i int) bool {
		switch state[i] {
		case 1, 3:
			state[i] = 3
			return false
		case 2:
			return true
		}
		state[i] = 1
		ok := true
		for _, p := range parents[i] {
			if wanted[p] && !visit(p) {
				ok = false
			}
		}
		if !ok {
			state[i] = 3
			cyclic = append(cyclic, i)
			return false
		}
		state[i] = 2
		order = append(order, i)
		return true
	}
	for i := range parents {
		if wanted[i] {
			visit(i)
		}
	}
	return order, cyclic
}

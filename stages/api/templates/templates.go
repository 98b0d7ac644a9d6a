// Package templates reads openQA's job templates — job groups in the
// JobTemplates-01 YAML format, with the machines and test suites they
// name — and turns a product (DISTRI, VERSION, FLAVOR, ARCH) into the
// settings of the jobs to create, as openQA's POST /api/v1/isos does.
package templates

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Set is the job templates of one repository commit.
type Set struct {
	Machines   map[string]Machine
	TestSuites map[string]TestSuite
	// Products are product settings (openqa-dump-templates' Products),
	// keyed by distri-version-flavor-arch.
	Products map[string]map[string]string
	Groups   []Group
	// Warnings are what the repository leaves to defaults: files skipped,
	// machines and test suites named but not defined.
	Warnings []string
}

// Machine is openQA's machine: a backend and the settings a job on it gets.
type Machine struct {
	Name     string
	Backend  string
	Settings map[string]string
}

// TestSuite is openQA's test suite: a name and its settings.
type TestSuite struct {
	Name        string
	Description string
	Settings    map[string]string
}

// Group is a job group and its templates.
type Group struct {
	ID        int64
	Name      string
	File      string
	Templates []Template
}

// Product is a medium jobs are scheduled for. Version may be "*" or a
// glob with "*".
type Product struct {
	Name                          string
	Distri, Version, Flavor, Arch string
}

// Template is one scenario: a test suite (or a named job template based on
// one) on a machine for a product.
type Template struct {
	Name        string // TEST: the job template's name, or its test suite's
	TestSuite   string // empty for a job template without a test suite
	Product     Product
	Machine     string
	Priority    int
	Settings    map[string]string
	Description string
}

var (
	settingName = regexp.MustCompile(`^[A-Z_+]+[A-Z0-9_]*$`)
	entryName   = regexp.MustCompile(`^[\p{L}\p{N}_ *.+-]+$`)
)

// Parse reads a repository's files, by path relative to its root. Files
// and directories whose names start with a dot are skipped, and so is any
// file that is not .yaml, .yml or .json. A file is, by its top-level keys:
//   - a job group in openQA's JobTemplates-01 format (products, scenarios,
//     defaults), named by its file name;
//   - definitions: machines (NAME: {backend, settings}) and test_suites
//     (NAME: {settings, description});
//   - openqa-dump-templates' output (Machines, TestSuites, Products,
//     JobGroups);
//   - job_groups.yaml, a map of group ids to file names, as
//     os-autoinst/opensuse-jobgroups keeps one.
//
// Errors name the file and where in it.
func Parse(files map[string][]byte) (*Set, error) {
	s := &Set{Machines: map[string]Machine{}, TestSuites: map[string]TestSuite{}, Products: map[string]map[string]string{}}
	type groupSource struct {
		name, file string
		data       []byte
	}
	var groups []groupSource
	ids := map[string]int64{}
	var errs []error
	for _, p := range slices.Sorted(maps.Keys(files)) {
		if hidden(p) {
			continue
		}
		switch path.Ext(p) {
		case ".yaml", ".yml", ".json":
		default:
			continue
		}
		var top map[string]any
		if err := decodeYAML(files[p], &top); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", p, err))
			continue
		}
		name := strings.TrimSuffix(path.Base(p), path.Ext(p))
		switch {
		case top["scenarios"] != nil || top["products"] != nil && top["defaults"] != nil:
			groups = append(groups, groupSource{name, p, files[p]})
		case top["machines"] != nil || top["test_suites"] != nil:
			errs = append(errs, s.definitions(p, top))
		case top["Machines"] != nil || top["TestSuites"] != nil || top["JobGroups"] != nil || top["Products"] != nil:
			var dump openQADump
			if err := decodeYAML(files[p], &dump); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", p, err))
				continue
			}
			errs = append(errs, s.dump(p, dump))
			for _, g := range dump.JobGroups {
				groups = append(groups, groupSource{g.Name, p + ": JobGroups." + g.Name, []byte(g.Template)})
			}
		default:
			if m, ok := groupIDs(files[p]); ok {
				for id, file := range m {
					ids[file] = id
				}
				continue
			}
			s.Warnings = append(s.Warnings, fmt.Sprintf("%s: skipped: not a job group (scenarios, products), definitions (machines, test_suites) or group ids", p))
		}
	}
	next := int64(1)
	for _, id := range ids {
		next = max(next, id+1)
	}
	for _, g := range groups {
		id, ok := ids[g.name]
		if !ok {
			id, next = next, next+1
		}
		group, err := parseGroup(g.name, g.file, g.data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		group.ID = id
		s.Groups = append(s.Groups, group)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.checkNames()
	return s, nil
}

func hidden(p string) bool {
	for part := range strings.SplitSeq(p, "/") {
		if strings.HasPrefix(part, ".") {
			return true
		}
	}
	return false
}

// decodeYAML decodes one YAML (or JSON) document, refusing duplicate keys.
func decodeYAML(data []byte, v any) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("not valid YAML: %w", err)
	}
	return nil
}

// groupIDs reads job_groups.yaml: group id → file name.
func groupIDs(data []byte) (map[int64]string, bool) {
	var m map[int64]string
	if err := decodeYAML(data, &m); err != nil || len(m) == 0 {
		return nil, false
	}
	return m, true
}

func (s *Set) definitions(file string, top map[string]any) error {
	var errs []error
	for k := range top {
		if k != "machines" && k != "test_suites" && !strings.HasPrefix(k, ".") {
			errs = append(errs, fmt.Errorf("%s: unknown key %q: definitions hold machines and test_suites", file, k))
		}
	}
	machines, err := mapping(top["machines"], file+": machines")
	errs = append(errs, err)
	for _, name := range slices.Sorted(maps.Keys(machines)) {
		where := file + ": machines." + name
		m, err := mapping(machines[name], where)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		backend, _ := m["backend"].(string)
		if backend == "" {
			errs = append(errs, fmt.Errorf("%s: no backend (qemu)", where))
		}
		settings, err := settingsOf(m["settings"], where+".settings")
		errs = append(errs, err, unknownKeys(m, where, "backend", "settings", "priority"))
		errs = append(errs, s.addMachine(Machine{Name: name, Backend: backend, Settings: settings}, where))
	}
	suites, err := mapping(top["test_suites"], file+": test_suites")
	errs = append(errs, err)
	for _, name := range slices.Sorted(maps.Keys(suites)) {
		where := file + ": test_suites." + name
		m, err := mapping(suites[name], where)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		settings, err := settingsOf(m["settings"], where+".settings")
		desc, _ := m["description"].(string)
		errs = append(errs, err, unknownKeys(m, where, "settings", "description"))
		errs = append(errs, s.addTestSuite(TestSuite{Name: name, Description: desc, Settings: settings}, where))
	}
	return errors.Join(errs...)
}

func (s *Set) addMachine(m Machine, where string) error {
	if !entryName.MatchString(m.Name) {
		return fmt.Errorf("%s: %q is not a machine name (letters, digits, space and _*.+-)", where, m.Name)
	}
	if _, dup := s.Machines[m.Name]; dup {
		return fmt.Errorf("%s: machine %s is defined twice", where, m.Name)
	}
	s.Machines[m.Name] = m
	return nil
}

func (s *Set) addTestSuite(t TestSuite, where string) error {
	if !entryName.MatchString(t.Name) {
		return fmt.Errorf("%s: %q is not a test suite name (letters, digits, space and _*.+-)", where, t.Name)
	}
	if _, dup := s.TestSuites[t.Name]; dup {
		return fmt.Errorf("%s: test suite %s is defined twice", where, t.Name)
	}
	s.TestSuites[t.Name] = t
	return nil
}

// openQADump is what openqa-dump-templates prints.
type openQADump struct {
	Machines []struct {
		Name     string     `yaml:"name"`
		Backend  string     `yaml:"backend"`
		Settings []keyValue `yaml:"settings"`
	} `yaml:"Machines"`
	TestSuites []struct {
		Name        string     `yaml:"name"`
		Description string     `yaml:"description"`
		Settings    []keyValue `yaml:"settings"`
	} `yaml:"TestSuites"`
	Products []struct {
		Distri   string     `yaml:"distri"`
		Version  string     `yaml:"version"`
		Flavor   string     `yaml:"flavor"`
		Arch     string     `yaml:"arch"`
		Settings []keyValue `yaml:"settings"`
	} `yaml:"Products"`
	JobGroups []struct {
		Name     string `yaml:"group_name"`
		Template string `yaml:"template"`
	} `yaml:"JobGroups"`
}

type keyValue struct {
	Key   string `yaml:"key"`
	Value string `yaml:"value"`
}

func settingsFromList(kvs []keyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

func (s *Set) dump(file string, d openQADump) error {
	var errs []error
	for _, m := range d.Machines {
		where := file + ": Machines." + m.Name
		if m.Backend == "" {
			errs = append(errs, fmt.Errorf("%s: no backend (qemu)", where))
		}
		errs = append(errs, s.addMachine(Machine{Name: m.Name, Backend: m.Backend, Settings: settingsFromList(m.Settings)}, where))
	}
	for _, t := range d.TestSuites {
		errs = append(errs, s.addTestSuite(TestSuite{Name: t.Name, Description: t.Description, Settings: settingsFromList(t.Settings)}, file+": TestSuites."+t.Name))
	}
	for _, p := range d.Products {
		s.Products[productKey(p.Distri, p.Version, p.Flavor, p.Arch)] = settingsFromList(p.Settings)
	}
	return errors.Join(errs...)
}

func productKey(distri, version, flavor, arch string) string {
	return strings.ToLower(distri) + "-" + version + "-" + flavor + "-" + arch
}

// parseGroup reads one job group in the JobTemplates-01 format, as
// openQA's JobGroups.pm template_data_from_yaml does.
func parseGroup(name, file string, data []byte) (Group, error) {
	g := Group{Name: name, File: file}
	var top map[string]any
	if err := decodeYAML(data, &top); err != nil {
		return g, fmt.Errorf("%s: %w", file, err)
	}
	var errs []error
	for k := range top {
		if k != "products" && k != "scenarios" && k != "defaults" && !strings.HasPrefix(k, ".") {
			errs = append(errs, fmt.Errorf("%s: unknown key %q: a job group has products, scenarios and defaults (and .anchors)", file, k))
		}
	}
	products := map[string]Product{}
	rawProducts, err := mapping(top["products"], file+": products")
	errs = append(errs, err)
	for _, pname := range slices.Sorted(maps.Keys(rawProducts)) {
		where := file + ": products." + pname
		m, err := mapping(rawProducts[pname], where)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p := Product{Name: pname}
		for _, f := range []struct {
			key string
			v   *string
		}{{"distri", &p.Distri}, {"flavor", &p.Flavor}, {"version", &p.Version}} {
			if *f.v, err = scalar(m[f.key]); err != nil || *f.v == "" {
				errs = append(errs, fmt.Errorf("%s: %s: give a string", where, f.key))
			}
		}
		errs = append(errs, unknownKeys(m, where, "distri", "flavor", "version"))
		products[pname] = p
	}
	defaults, err := mapping(top["defaults"], file+": defaults")
	errs = append(errs, err)
	scenarios, err := mapping(top["scenarios"], file+": scenarios")
	errs = append(errs, err)
	seen := map[string]bool{}
	for _, arch := range slices.Sorted(maps.Keys(scenarios)) {
		def, err := mapping(defaults[arch], file+": defaults."+arch)
		errs = append(errs, err, unknownKeys(def, file+": defaults."+arch, "machine", "priority", "settings"))
		byProduct, err := mapping(scenarios[arch], file+": scenarios."+arch)
		errs = append(errs, err)
		for _, pname := range slices.Sorted(maps.Keys(byProduct)) {
			where := file + ": scenarios." + arch + "." + pname
			product, ok := products[pname]
			if !ok {
				errs = append(errs, fmt.Errorf("%s: product %s is not defined under products", where, pname))
				continue
			}
			product.Arch = arch
			specs, ok := byProduct[pname].([]any)
			if !ok && byProduct[pname] != nil {
				errs = append(errs, fmt.Errorf("%s: want a list of test suites", where))
				continue
			}
			for i, spec := range specs {
				ts, err := parseScenario(fmt.Sprintf("%s[%d]", where, i), spec, def, product)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				for _, t := range ts {
					key := arch + "\x00" + pname + "\x00" + t.Machine + "\x00" + t.TestSuite + "\x00" + t.Name
					if seen[key] {
						errs = append(errs, fmt.Errorf("%s[%d]: job template name '%s' is defined more than once; use a unique name and give testsuite: to reuse a test suite in several scenarios", where, i, t.Name))
						continue
					}
					seen[key] = true
					g.Templates = append(g.Templates, t)
				}
			}
		}
	}
	return g, errors.Join(errs...)
}

// parseScenario reads one entry of a scenarios list: a test suite name, or
// {NAME: {machine, priority, settings, testsuite, description}}; one
// template per machine.
func parseScenario(where string, spec any, def map[string]any, product Product) ([]Template, error) {
	t := Template{Product: product, Settings: map[string]string{}}
	var errs []error
	prio, err := priority(def["priority"], where+": defaults priority")
	errs = append(errs, err)
	machines, err := machineList(def["machine"], where+": defaults machine")
	errs = append(errs, err)
	defSettings, err := settingsOf(def["settings"], where+": defaults settings")
	errs = append(errs, err)
	maps.Copy(t.Settings, defSettings)
	switch spec := spec.(type) {
	case string:
		t.Name, t.TestSuite = spec, spec
	case map[string]any:
		if len(spec) != 1 {
			return nil, fmt.Errorf("%s: want one test suite name as the key, got %d keys", where, len(spec))
		}
		for name, v := range spec {
			t.Name, t.TestSuite = name, name
			attrs, err := mapping(v, where+"."+name)
			if err != nil {
				return nil, err
			}
			errs = append(errs, unknownKeys(attrs, where+"."+name, "machine", "priority", "settings", "testsuite", "description"))
			if v, ok := attrs["priority"]; ok {
				p, err := priority(v, where+"."+name+".priority")
				errs = append(errs, err)
				if p != 0 {
					prio = p
				}
			}
			if v, ok := attrs["machine"]; ok && v != nil {
				machines, err = machineList(v, where+"."+name+".machine")
				errs = append(errs, err)
			}
			if ts, ok := attrs["testsuite"]; ok {
				// A named job template; testsuite: null has none.
				t.TestSuite, _ = ts.(string)
			}
			settings, err := settingsOf(attrs["settings"], where+"."+name+".settings")
			errs = append(errs, err)
			maps.Copy(t.Settings, settings)
			t.Description, _ = attrs["description"].(string)
		}
	default:
		return nil, fmt.Errorf("%s: want a test suite name or {NAME: {machine, priority, settings}}", where)
	}
	if !entryName.MatchString(t.Name) {
		errs = append(errs, fmt.Errorf("%s: %q is not a test name (letters, digits, space and _*.+-)", where, t.Name))
	}
	if len(machines) == 0 {
		errs = append(errs, fmt.Errorf("%s: %s has no machine: give machine: or defaults.%s.machine", where, t.Name, product.Arch))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	t.Priority = prio
	out := make([]Template, 0, len(machines))
	for _, m := range machines {
		c := t
		c.Machine = m
		c.Settings = maps.Clone(t.Settings)
		out = append(out, c)
	}
	return out, nil
}

func mapping(v any, where string) (map[string]any, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case map[string]any:
		return v, nil
	}
	return nil, fmt.Errorf("%s: want a mapping, got %s", where, describe(v))
}

func unknownKeys(m map[string]any, where string, known ...string) error {
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(known, k) {
			errs = append(errs, fmt.Errorf("%s: unknown key %q (known: %s)", where, k, strings.Join(known, ", ")))
		}
	}
	return errors.Join(errs...)
}

func describe(v any) string {
	switch v.(type) {
	case []any:
		return "a list"
	case map[string]any:
		return "a mapping"
	case nil:
		return "nothing"
	}
	return fmt.Sprintf("%q", fmt.Sprint(v))
}

// scalar is a YAML string or number as text.
func scalar(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case int:
		return strconv.Itoa(v), nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	}
	return "", fmt.Errorf("want a string, got %s", describe(v))
}

func priority(v any, where string) (int, error) {
	switch v := v.(type) {
	case nil:
		return 0, nil
	case int:
		return v, nil
	case float64:
		return int(v), nil
	case string:
		if n, err := strconv.Atoi(v); err == nil {
			return n, nil
		}
	}
	return 0, fmt.Errorf("%s: want a number, got %s", where, describe(v))
}

func machineList(v any, where string) ([]string, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, m := range v {
			s, ok := m.(string)
			if !ok {
				return nil, fmt.Errorf("%s: want machine names, got %s", where, describe(m))
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: want a machine name or a list of them, got %s", where, describe(v))
}

func settingsOf(v any, where string) (map[string]string, error) {
	m, err := mapping(v, where)
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(m))
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !settingName.MatchString(k) {
			errs = append(errs, fmt.Errorf("%s: %q is not a setting name (upper case, digits and _, an optional leading +)", where, k))
			continue
		}
		s, err := scalar(m[k])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.%s: %w", where, k, err))
			continue
		}
		out[k] = s
	}
	return out, errors.Join(errs...)
}

// checkNames warns of machines and test suites the groups name but the
// repository does not define: their jobs get MACHINE (with BACKEND qemu)
// and TEST only.
func (s *Set) checkNames() {
	machines, suites := map[string]bool{}, map[string]bool{}
	for _, g := range s.Groups {
		for _, t := range g.Templates {
			if _, ok := s.Machines[t.Machine]; !ok {
				machines[t.Machine] = true
			}
			if _, ok := s.TestSuites[t.TestSuite]; !ok && t.TestSuite != "" {
				suites[t.TestSuite] = true
			}
		}
	}
	for _, u := range []struct {
		what  string
		names map[string]bool
	}{{"machines", machines}, {"test suites", suites}} {
		if len(u.names) == 0 {
			continue
		}
		names := slices.Sorted(maps.Keys(u.names))
		list := strings.Join(names[:min(len(names), 20)], ", ")
		if len(names) > 20 {
			list += fmt.Sprintf(", … (%d more)", len(names)-20)
		}
		s.Warnings = append(s.Warnings, fmt.Sprintf("%d %s are named by job groups but not defined (their jobs get only the job group's settings): %s", len(names), u.what, list))
	}
}

// Summary counts what the set holds, for the load command and logs.
func (s *Set) Summary() string {
	n := 0
	for _, g := range s.Groups {
		n += len(g.Templates)
	}
	return fmt.Sprintf("%d job groups, %d job templates, %d machines, %d test suites", len(s.Groups), n, len(s.Machines), len(s.TestSuites))
}

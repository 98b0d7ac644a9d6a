package templates

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func readRepo(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		files[filepath.ToSlash(rel)] = data
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func testdataSet(t *testing.T) *Set {
	t.Helper()
	s, err := Parse(readRepo(t, "testdata/repo"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseReadsJobGroupsDefinitionsAndIDs(t *testing.T) {
	s := testdataSet(t)
	if got := s.Summary(); got != "1 job groups, 7 job templates, 3 machines, 2 test suites" {
		t.Errorf("summary %q", got)
	}
	if g := s.Groups[0]; g.ID != 12 || g.Name != "distri_x" || g.File != "job_groups/distri_x.yaml" {
		t.Errorf("group %d %s %s", g.ID, g.Name, g.File)
	}
	if len(s.Warnings) != 1 || !strings.Contains(s.Warnings[0], "notes.yaml: skipped") {
		t.Errorf("warnings %q", s.Warnings)
	}
}

// names lists the plan's jobs as TEST@MACHINE, each with its parents.
func names(p Plan) []string {
	var out []string
	for _, j := range p.Jobs {
		n := j.Settings["TEST"] + "@" + j.Settings["MACHINE"]
		for _, a := range j.After {
			n += " after " + p.Jobs[a].Settings["TEST"] + "@" + p.Jobs[a].Settings["MACHINE"]
		}
		out = append(out, n)
	}
	return out
}

func failedNames(p Plan) []string {
	var out []string
	for _, f := range p.Failed {
		out = append(out, f.Name+": "+f.Error)
	}
	return out
}

func TestScheduleAsOpenQAsIsosPost(t *testing.T) {
	s := testdataSet(t)
	product := func(extra ...string) map[string]string {
		m := map[string]string{"distri": "DistriX", "VERSION": "16", "FLAVOR": "DVD", "ARCH": "x86_64", "BUILD": "7", "ISO": "x.iso"}
		for _, kv := range extra {
			k, v, _ := strings.Cut(kv, "=")
			m[k] = v
		}
		return m
	}
	for _, tc := range []struct {
		name       string
		params     map[string]string
		jobs       []string
		failed     []string
		obsoleting map[string]string
	}{
		{
			name:   "every scenario of the globbed product, parents first",
			params: product(),
			jobs:   []string{"create_hdd@64bit", "textmode@64bit after create_hdd@64bit", "no_suite@64bit"},
			failed: []string{
				"textmode: START_AFTER_TEST=create_hdd@uefi not found - check for dependency typos and dependency cycles",
				"textmode_again: its parent textmode@uefi was not created",
			},
		},
		{name: "an exact version beats the glob", params: product("VERSION=15"), jobs: []string{"create_hdd@64bit"}},
		{name: "another architecture", params: product("ARCH=aarch64"), jobs: []string{"create_hdd@aarch64"}},
		{
			name:   "TEST selects a scenario and its parents",
			params: product("TEST=textmode", "MACHINE=64bit"),
			jobs:   []string{"create_hdd@64bit", "textmode@64bit after create_hdd@64bit"},
		},
		{
			name:   "_SKIP_CHAINED_DEPS leaves the parents out",
			params: product("TEST=textmode", "_SKIP_CHAINED_DEPS=1"),
			jobs:   []string{"textmode@64bit", "textmode@uefi"},
		},
		{
			name:       "_OBSOLETE names the product's older jobs",
			params:     product("TEST=no_suite", "_OBSOLETE=1", "_FORCE_OBSOLETE=1"),
			jobs:       []string{"no_suite@64bit"},
			obsoleting: map[string]string{"DISTRI": "distrix", "VERSION": "16", "FLAVOR": "DVD", "ARCH": "x86_64"},
		},
		{name: "a job group by name", params: product("_GROUP=distri_x", "TEST=create_hdd"), jobs: []string{"create_hdd@64bit"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := s.Schedule(tc.params)
			if err != nil {
				t.Fatal(err)
			}
			if got := names(p); !slices.Equal(got, tc.jobs) {
				t.Errorf("jobs %q, want %q", got, tc.jobs)
			}
			if got := failedNames(p); !slices.Equal(got, tc.failed) {
				t.Errorf("failed %q, want %q", got, tc.failed)
			}
			if len(tc.obsoleting) != len(p.Obsolete) {
				t.Errorf("obsolete %v, want %v", p.Obsolete, tc.obsoleting)
			}
			for k, v := range tc.obsoleting {
				if p.Obsolete[k] != v {
					t.Errorf("obsolete %v, want %v", p.Obsolete, tc.obsoleting)
				}
			}
		})
	}
}

func TestSettingsLayerAsOpenQA(t *testing.T) {
	s := testdataSet(t)
	p, err := s.Schedule(map[string]string{"DISTRI": "distrix", "VERSION": "16", "FLAVOR": "DVD", "ARCH": "x86_64", "BUILD": "7",
		"ISO": "x.iso", "TEST": "textmode", "_SKIP_CHAINED_DEPS": "1", "_PRIORITY": "11"})
	if err != nil {
		t.Fatal(err)
	}
	var uefi, hdd map[string]string
	for _, j := range p.Jobs {
		if j.Settings["MACHINE"] == "uefi" {
			uefi = j.Settings
		}
	}
	p, err = s.Schedule(map[string]string{"DISTRI": "distrix", "VERSION": "16", "FLAVOR": "DVD", "ARCH": "x86_64", "TEST": "create_hdd"})
	if err != nil {
		t.Fatal(err)
	}
	hdd = p.Jobs[0].Settings
	for _, c := range []struct {
		settings       map[string]string
		key, want, why string
	}{
		{uefi, "HDD_1", "distrix-16-x86_64-7@uefi.qcow2", "%PLACEHOLDERS% expand"},
		{uefi, "PUBLISH_NOTE", "%NOT_EXPANDED%", "%%NAME%% loses one %"},
		{uefi, "ISO", "pinned.iso", "+ISO beats the request"},
		{uefi, "FROM_DEFAULTS", "1", "the template's defaults beat the test suite"},
		{uefi, "DESKTOP", "textmode", "test suite settings"},
		{uefi, "UEFI", "1", "machine settings"},
		{uefi, "WORKER_CLASS", "qemu_x86_64", "the machine's class"},
		{uefi, "BACKEND", "qemu", "the machine's backend"},
		{uefi, "TEST_SUITE_NAME", "textmode", "the test suite"},
		{uefi, "_PRIORITY", "11", "_PRIORITY overrides the template's"},
		{uefi, "_GROUP_ID", "12", "job_groups.yaml"},
		{uefi, "DISTRI", "distrix", "DISTRI in lower case"},
		{hdd, "WORKER_CLASS", "big_disk,qemu_x86_64", "classes of all layers, merged and sorted"},
		{hdd, "_PRIORITY", "50", "the defaults' priority"},
		{hdd, "INSTALLONLY", "1", "test suite settings"},
	} {
		if got := c.settings[c.key]; got != c.want {
			t.Errorf("%s = %q, want %q (%s)", c.key, got, c.want, c.why)
		}
	}
	if _, ok := uefi["+ISO"]; ok {
		t.Error("+ISO is left in the settings")
	}
}

func TestScheduleRefusesWithAReason(t *testing.T) {
	s := testdataSet(t)
	for _, c := range []struct {
		params map[string]string
		want   string
	}{
		{map[string]string{"DISTRI": "distrix"}, "missing parameters: VERSION FLAVOR ARCH"},
		{map[string]string{"DISTRI": "other", "VERSION": "1", "FLAVOR": "DVD", "ARCH": "x86_64"}, "no products found for other-DVD-x86_64"},
		{map[string]string{"DISTRI": "distrix", "VERSION": "1", "FLAVOR": "DVD", "ARCH": "x86_64", "_GROUP": "nope"}, "no products found for distrix-DVD-x86_64 in job group nope"},
		{map[string]string{"DISTRI": "distrix", "VERSION": "1", "FLAVOR": "DVD", "ARCH": "x86_64", "TEST": "x", "_OBSOLETE": "1"}, "must not give TEST and _OBSOLETE=1"},
		{map[string]string{"DISTRI": "distrix", "VERSION": "1", "FLAVOR": "DVD", "ARCH": "x86_64", "_PRIORITY": "high"}, `_PRIORITY="high": want a number`},
		{map[string]string{"DISTRI": "distrix", "VERSION": "1", "FLAVOR": "DVD", "ARCH": "x86_64", "TEST": "none", "_FAIL_IF_NO_JOBS": "1"}, "no jobs were created"},
	} {
		_, err := s.Schedule(c.params)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.params, err, c.want)
		}
	}
	if _, err := s.Schedule(map[string]string{"DISTRI": "other", "VERSION": "1", "FLAVOR": "DVD", "ARCH": "x86_64"}); !errors.Is(err, ErrNoProduct) {
		t.Errorf("no product: %v is not ErrNoProduct", err)
	}
}

const group = "products:\n  p:\n    distri: d\n    flavor: f\n    version: '1'\n"

func TestParseNamesWhatIsWrongAndWhere(t *testing.T) {
	for _, c := range []struct {
		file, want string
	}{
		{"products: {}\nproducts: {}\nscenarios: {}\n", "already defined"},
		{group + "scenarios: {}\nextra: 1\n", `g.yaml: unknown key "extra"`},
		{group + "scenarios:\n  x86_64:\n    q: [t]\n", "g.yaml: scenarios.x86_64.q: product q is not defined under products"},
		{group + "scenarios:\n  x86_64:\n    p: [t]\n", "g.yaml: scenarios.x86_64.p[0]: t has no machine: give machine: or defaults.x86_64.machine"},
		{group + "scenarios:\n  x86_64:\n    p:\n      - t: {machine: m}\n      - t: {machine: m}\n", "scenarios.x86_64.p[1]: job template name 't' is defined more than once"},
		{group + "scenarios:\n  x86_64:\n    p:\n      - t: {machine: m, settings: {lower: x}}\n", `"lower" is not a setting name`},
		{group + "scenarios:\n  x86_64:\n    p:\n      - t: {machine: m, settings: {A: [1]}}\n", "settings.A: want a string, got a list"},
		{group + "scenarios:\n  x86_64:\n    p:\n      - t: {machine: m, colour: red}\n", `unknown key "colour"`},
		{"products:\n  p: {distri: d, flavor: f}\nscenarios: {}\n", "g.yaml: products.p: version: give a string"},
		{"scenarios: [\n", "g.yaml: not valid YAML"},
	} {
		_, err := Parse(map[string][]byte{"g.yaml": []byte(c.file)})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.file, err, c.want)
		}
	}
}

func TestCircularPlaceholdersFailTheJob(t *testing.T) {
	s, err := Parse(map[string][]byte{"g.yaml": []byte(group + "scenarios:\n  x86_64:\n    p:\n      - t: {machine: m, settings: {A: '%B%', B: '%A%'}}\n")})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Schedule(map[string]string{"DISTRI": "d", "VERSION": "1", "FLAVOR": "f", "ARCH": "x86_64"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Jobs) != 0 || len(p.Failed) != 1 || !strings.Contains(p.Failed[0].Error, "circular reference") {
		t.Fatalf("jobs %v failed %v", names(p), p.Failed)
	}
}

func TestOpenQADumpIsReadToo(t *testing.T) {
	dump := `{
  "Machines": [{"name": "64bit", "backend": "qemu", "settings": [{"key": "QEMUCPU", "value": "qemu64"}]}],
  "TestSuites": [{"name": "t", "settings": [{"key": "DESKTOP", "value": "gnome"}]}],
  "Products": [{"distri": "d", "version": "1", "flavor": "f", "arch": "x86_64", "settings": [{"key": "ISO_MAXSIZE", "value": "4700372992"}]}],
  "JobGroups": [{"group_name": "G", "template": "defaults: {x86_64: {machine: 64bit, priority: 50}}\n` + strings.ReplaceAll(group, "\n", `\n`) + `scenarios: {x86_64: {p: [t]}}\n"}]
}`
	s, err := Parse(map[string][]byte{"templates.json": []byte(dump)})
	if err != nil {
		t.Fatal(err)
	}
	p, err := s.Schedule(map[string]string{"DISTRI": "d", "VERSION": "1", "FLAVOR": "f", "ARCH": "x86_64"})
	if err != nil || len(p.Jobs) != 1 {
		t.Fatalf("%v %v", names(p), err)
	}
	got := p.Jobs[0].Settings
	if got["QEMUCPU"] != "qemu64" || got["DESKTOP"] != "gnome" || got["ISO_MAXSIZE"] != "4700372992" || got["_GROUP"] != "G" {
		t.Fatalf("settings %v", got)
	}
}

// Parse and Schedule take files from any repository: they must not panic.
func FuzzParseAndSchedule(f *testing.F) {
	for _, p := range []string{"testdata/repo/job_groups/distri_x.yaml", "testdata/repo/definitions.yaml"} {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data, "distrix", "x86_64")
	}
	f.Add([]byte(group+"scenarios: {x86_64: {p: [{t: {machine: [a, b], settings: {START_AFTER_TEST: 't@b', PARALLEL_WITH: t}}}]}}\n"), "d", "x86_64")
	f.Fuzz(func(t *testing.T, data []byte, distri, arch string) {
		s, err := Parse(map[string][]byte{"g.yaml": data})
		if err != nil {
			return
		}
		_, _ = s.Schedule(map[string]string{"DISTRI": distri, "VERSION": "1", "FLAVOR": "DVD", "ARCH": arch, "TEST": "t"})
		_, _ = s.Schedule(map[string]string{"DISTRI": distri, "VERSION": "16", "FLAVOR": "f", "ARCH": arch})
	})
}

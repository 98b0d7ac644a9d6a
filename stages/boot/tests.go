package boot

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime/metrics"
	"strings"
	"time"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"

	"jetqa/schemas"
)

// starOptions are the Starlark dialect of test code: top-level if/for and
// while loops are allowed, as test authors coming from Perl expect.
var starOptions = &syntax.FileOptions{While: true, TopLevelControl: true, GlobalReassign: true, Set: true}

// testModule is one scheduled module: tests/<path>.star with a run().
type testModule struct {
	name string // last path element, as openQA names modules
	file string // path relative to CASEDIR
	prog *starlark.Program
}

// Step limits: main.star only schedules modules, a module mostly waits
// on the VM; a loop that never waits is a bug of the test, not a hang of
// the worker. A module's budget is large enough for minutes of real work.
const (
	mainStarSteps = 10_000_000
	moduleSteps   = 500_000_000
)

// starlarkMemory is how much more heap than at its start a Starlark
// thread may grow the worker's process to before it is stopped: test code
// that doubles a string a hundred times asks for more memory than any
// host has in a hundred steps, which no step limit catches. The heap is
// the whole process's (`jetqa up` also runs the matchers, whose needle
// caches may grow by up to 768 MiB), so the bound is generous.
var starlarkMemory uint64 = 4 << 30

// newThread is a Starlark thread that stops when ctx ends, after steps
// computation steps, or when the process's heap grows by more than
// starlarkMemory while it runs.
func newThread(ctx context.Context, name string, steps uint64, print func(*starlark.Thread, string)) (*starlark.Thread, func() bool) {
	thread := &starlark.Thread{Name: name, Print: print}
	thread.SetMaxExecutionSteps(steps)
	stopCtx := context.AfterFunc(ctx, func() { thread.Cancel("the job was stopped: " + context.Cause(ctx).Error()) })
	done := make(chan struct{})
	go watchMemory(thread, starlarkMemory, done)
	return thread, func() bool {
		close(done)
		return stopCtx()
	}
}

// watchMemory cancels thread when the heap grows past limit over what it
// was at the start, until done. A single step can still allocate up to
// Starlark's own bound (1 GiB), and a doubling value one step more, so
// the peak stays within about three times the limit.
func watchMemory(thread *starlark.Thread, limit uint64, done <-chan struct{}) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	heap := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	start := heap()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
		}
		if used := heap(); used > start+limit {
			thread.Cancel(fmt.Sprintf("the test code grew the worker's memory by %d MiB, over the %d MiB it may use (a value that doubles without end?)", (used-start)>>20, limit>>20))
			return
		}
	}
}

// loadTests runs main.star of PRODUCTDIR (CASEDIR unless set), which
// schedules modules of CASEDIR/tests with loadtest("path"), as
// os-autoinst loads main.pm, and compiles every scheduled module, so that a syntax
// error anywhere stops the job before the VM boots. main.star runs under
// ctx and a step limit.
func loadTests(ctx context.Context, caseDir, productDir string, settings map[string]string) ([]*testModule, map[string]console, error) {
	mainFile := filepath.Join(productDir, "main.star")
	src, err := schemas.ReadRepoFile(productDir, mainFile, schemas.MaxTestFileBytes)
	if err != nil {
		where := "CASEDIR"
		if productDir != caseDir {
			where = "PRODUCTDIR"
		}
		return nil, nil, fmt.Errorf("%s has no main.star: %w", where, err)
	}
	var modules []*testModule
	consoles := map[string]console{}
	loadtest := starlark.NewBuiltin("loadtest", func(_ *starlark.Thread, fn *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var path string
		if err := starlark.UnpackArgs(fn.Name(), args, kwargs, "path", &path); err != nil {
			return nil, err
		}
		path = strings.TrimSuffix(path, ".star")
		if strings.Contains(path, "..") || filepath.IsAbs(path) {
			return nil, fmt.Errorf("loadtest(%q): the path must stay inside tests/", path)
		}
		file := filepath.Join("tests", path+".star")
		modSrc, err := schemas.ReadRepoFile(caseDir, filepath.Join(caseDir, file), schemas.MaxTestFileBytes)
		if err != nil {
			return nil, fmt.Errorf("loadtest(%q): %w", path, err)
		}
		_, prog, err := starlark.SourceProgramOptions(starOptions, file, modSrc, isPredeclared)
		if err != nil {
			return nil, fmt.Errorf("test module %s: %w", file, err)
		}
		modules = append(modules, &testModule{name: filepath.Base(path), file: file, prog: prog})
		return starlark.None, nil
	})
	predeclared := starlark.StringDict{
		"loadtest":    loadtest,
		"get_var":     getVarBuiltin(settings),
		"add_console": addConsoleBuiltin(consoles),
	}
	thread, stop := newThread(ctx, "main.star", mainStarSteps, nil)
	defer stop()
	if _, err := starlark.ExecFileOptions(starOptions, thread, "main.star", src, predeclared); err != nil {
		if thread.ExecutionSteps() >= mainStarSteps {
			return nil, nil, fmt.Errorf("main.star did not end within %d steps (a loop that never ends?): %s", mainStarSteps, starlarkError(err))
		}
		return nil, nil, fmt.Errorf("main.star: %s", starlarkError(err))
	}
	if len(modules) == 0 {
		return nil, nil, errors.New("main.star scheduled no test module: call loadtest(\"name\") for tests/name.star")
	}
	return modules, consoles, nil
}

// isPredeclared says which names test modules may use without defining
// them: the testapi.
func isPredeclared(name string) bool {
	_, ok := testapiNames[name]
	return ok
}

// starlarkError renders an error with the Starlark backtrace when there is
// one, so the reason names file and line.
func starlarkError(err error) string {
	var ee *starlark.EvalError
	if errors.As(err, &ee) {
		return ee.Backtrace()
	}
	return err.Error()
}

func getVarBuiltin(settings map[string]string) *starlark.Builtin {
	return starlark.NewBuiltin("get_var", func(_ *starlark.Thread, fn *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var name string
		var def starlark.Value = starlark.None
		if err := starlark.UnpackArgs(fn.Name(), args, kwargs, "name", &name, "default?", &def); err != nil {
			return nil, err
		}
		if v, ok := settings[name]; ok {
			return starlark.String(v), nil
		}
		return def, nil
	})
}

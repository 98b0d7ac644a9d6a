package boot

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.starlark.net/starlark"

	"jetqa/schemas"
)

// Consoles, as os-autoinst's distributions add them: main.star names each
// with add_console(name, type, …), and a module switches with
// select_console(name). jetqa has the console type of a VM's own screen
// and keyboard, tty-console: a Linux virtual terminal, reached with
// ctrl-alt-f<tty>.

// console is one console main.star added.
type console struct {
	name string
	kind string // consoleTTY
	tty  int
}

const consoleTTY = "tty-console"

// Console types of os-autoinst that jetqa does not have: a test that adds
// one stops before the VM boots, saying so.
var notSupportedConsoles = map[string]string{
	"virtio-terminal": "a serial terminal on a virtio console is not there yet",
	"ssh-xterm":       "jetqa opens no connections into the machine",
	"ssh-serial":      "jetqa opens no connections into the machine",
	"ssh-virtsh":      "jetqa runs machines in QEMU, not through libvirt",
	"s3270":           "jetqa has no 3270 consoles (s390x)",
	"ipmi-xterm":      "jetqa has no IPMI backend",
	"ipmi-sol":        "jetqa has no IPMI backend",
	"vnc-base":        "the VM's screen is the tty-console's screen",
}

// add_console(name, type, tty=N) in main.star.
func addConsoleBuiltin(consoles map[string]console) *starlark.Builtin {
	return starlark.NewBuiltin("add_console", func(_ *starlark.Thread, fn *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var c console
		if err := starlark.UnpackArgs(fn.Name(), args, kwargs, "name", &c.name, "type", &c.kind, "tty?", &c.tty); err != nil {
			return nil, err
		}
		if why, ok := notSupportedConsoles[c.kind]; ok {
			return nil, fmt.Errorf("add_console(%q, %q): not supported: %s", c.name, c.kind, why)
		}
		if c.kind != consoleTTY {
			return nil, fmt.Errorf("add_console(%q, %q): unknown console type: use %s", c.name, c.kind, consoleTTY)
		}
		if c.tty < 1 || c.tty > 12 {
			return nil, fmt.Errorf("add_console(%q, %q): tty=%d: give the virtual terminal, 1 to 12 (reached with ctrl-alt-f1 … f12)", c.name, c.kind, c.tty)
		}
		consoles[c.name] = c
		return starlark.None, nil
	})
}

// select_console(name): switches to the console, as os-autoinst's; a
// console selected already stays as it is.
func (r *runner) selectConsole(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name string
	if err := starlark.UnpackArgs("select_console", args, kwargs, "testapi_console", &name); err != nil {
		return nil, err
	}
	c, ok := r.consoles[name]
	if !ok {
		known := strings.Join(slices.Sorted(maps.Keys(r.consoles)), ", ")
		if known == "" {
			known = "none"
		}
		return nil, failf("select_console(%q): no such console; main.star adds them with add_console (added: %s)", name, known)
	}
	if r.console == name {
		return starlark.None, nil
	}
	if err := r.vm.SendKey(r.ctx, fmt.Sprintf("ctrl-alt-f%d", c.tty)); err != nil {
		return nil, fmt.Errorf("select_console(%q): %w", name, err)
	}
	r.console = name
	r.module.Details = append(r.module.Details, schemas.Step{Kind: "info", Result: schemas.ResultPassed,
		Text: fmt.Sprintf("console %s selected (tty%d)", name, c.tty)})
	return starlark.None, nil
}

// current_console(): the name of the selected console, or None.
func (r *runner) currentConsole(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	if err := starlark.UnpackArgs("current_console", args, kwargs); err != nil {
		return nil, err
	}
	if r.console == "" {
		return starlark.None, nil
	}
	return starlark.String(r.console), nil
}

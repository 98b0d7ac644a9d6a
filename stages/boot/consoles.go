package boot

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.starlark.net/starlark"

	"jetqa/schemas"
)

// Consoles, as os-autoinst's distributions add them: main.star names each
// with add_console(name, type, …), and a module switches with
// select_console(name). jetqa has two types: tty-console, a Linux virtual
// terminal on the VM's screen and keyboard, reached with ctrl-alt-f<tty>;
// and virtio-terminal, a serial terminal on the guest's virtio console
// (hvc0), where typing goes to the terminal and wait_serial reads it.

// console is one console main.star added.
type console struct {
	name string
	kind string // consoleTTY or consoleVirtio
	tty  int
}

const (
	consoleTTY    = "tty-console"
	consoleVirtio = "virtio-terminal"
	// consoleScreen is os-autoinst's vnc-base: the machine's screen as it
	// is, with no key to reach it. Perl distributions add them.
	consoleScreen = "vnc-base"
)

// Console types of os-autoinst that jetqa does not have: a test that adds
// one stops before the VM boots, saying so.
var notSupportedConsoles = map[string]string{
	"ssh-xterm":  "jetqa opens no connections into the machine",
	"ssh-serial": "jetqa opens no connections into the machine",
	"ssh-virtsh": "jetqa runs machines in QEMU, not through libvirt",
	"s3270":      "jetqa has no 3270 consoles (s390x)",
	"ipmi-xterm": "jetqa has no IPMI backend",
	"ipmi-sol":   "jetqa has no IPMI backend",
	"vnc-base":   "the VM's screen is the tty-console's screen",
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
		if c.kind != consoleTTY && c.kind != consoleVirtio {
			return nil, fmt.Errorf("add_console(%q, %q): unknown console type: use %s or %s", c.name, c.kind, consoleTTY, consoleVirtio)
		}
		if c.kind == consoleTTY && (c.tty < 1 || c.tty > 12) {
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
	return starlark.None, r.switchConsole(c)
}

// switchConsole makes c the selected console: a tty by its hotkey, the
// screen or the virtio terminal as they are. A console selected already
// stays as it is.
func (r *runner) switchConsole(c console) error {
	if r.console == c.name {
		return nil
	}
	where := "the virtio console"
	switch c.kind {
	case consoleTTY:
		if err := r.vm.SendKey(r.ctx, fmt.Sprintf("ctrl-alt-f%d", c.tty)); err != nil {
			return fmt.Errorf("select_console(%q): %w", c.name, err)
		}
		where = fmt.Sprintf("tty%d", c.tty)
	case consoleScreen:
		where = "the screen"
	}
	r.console = c.name
	r.module.Details = append(r.module.Details, schemas.Step{Kind: "info", Result: schemas.ResultPassed,
		Text: fmt.Sprintf("console %s selected (%s)", c.name, where)})
	return nil
}

// onTerminal says the selected console is a serial terminal.
func (r *runner) onTerminal() bool {
	return r.console != "" && r.consoles[r.console].kind == consoleVirtio
}

// needsVirtioConsole says whether the machine needs a virtio console.
func needsVirtioConsole(consoles map[string]console) bool {
	for _, c := range consoles {
		if c.kind == consoleVirtio {
			return true
		}
	}
	return false
}

// typeRaw types s where the selected console takes it: on the VM's
// keyboard, or into the serial terminal.
func (r *runner) typeRaw(s string, perKey time.Duration) error {
	if r.onTerminal() {
		return r.vm.WriteVirtio(r.ctx, []byte(s))
	}
	return r.vm.TypeString(r.ctx, s, perKey)
}

// terminalKeys are the keys a serial terminal takes, as the characters
// they send.
var terminalKeys = map[string]string{
	"ret": "\n", "enter": "\n", "kp_enter": "\n", "tab": "\t", "esc": "\x1b", "backspace": "\x7f", "spc": " ",
	"ctrl-c": "\x03", "ctrl-d": "\x04", "ctrl-z": "\x1a", "ctrl-l": "\x0c", "ctrl-u": "\x15",
	"up": "\x1b[A", "down": "\x1b[B", "right": "\x1b[C", "left": "\x1b[D",
}

// pressKey presses a key on the selected console.
func (r *runner) pressKey(key string) error {
	if !r.onTerminal() {
		return r.vm.SendKey(r.ctx, key)
	}
	seq, ok := terminalKeys[key]
	if !ok && len([]rune(key)) == 1 {
		seq, ok = key, true
	}
	if !ok {
		return failf("send_key(%q) on the serial terminal %s: it takes characters and %s", key, r.console, strings.Join(slices.Sorted(maps.Keys(terminalKeys)), ", "))
	}
	return r.vm.WriteVirtio(r.ctx, []byte(seq))
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

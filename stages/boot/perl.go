package boot

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// os-autoinst's Perl test side. A job whose PRODUCTDIR (or CASEDIR) holds
// a main.pm and no main.star runs the way openQA runs it: os-autoinst's
// own autotest.pm, testapi.pm and basetest.pm load the distribution and
// run its modules in a Perl process, which asks for everything it does to
// the machine over a socket, in isotovideo's JSON commands. The worker is
// the other end of that socket; see perlcmds.go for the commands.

//go:embed perl/jetqa-autotest.pl
var perlDriver []byte

// perlDriverName is the driver's file in the test side's directory.
const perlDriverName = "jetqa-autotest.pl"

// perlMainFile is the main.pm that makes a job's tests os-autoinst Perl,
// "" when they are jetqa's Starlark (main.star).
func perlMainFile(caseDir, productDir string) string {
	for _, dir := range []string{productDir, caseDir} {
		if dir == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "main.star")); err == nil {
			return ""
		}
		if _, err := os.Stat(filepath.Join(dir, "main.pm")); err == nil {
			return filepath.Join(dir, "main.pm")
		}
	}
	return ""
}

// perlSchedule is what the driver reports once main.pm loaded.
type perlSchedule struct {
	// Interface is os-autoinst's test API interface version.
	Interface  int                    `json:"interface"`
	NeedlesDir string                 `json:"needles_dir"`
	Needles    []string               `json:"needles"` // registered needles' JSON files, relative
	Consoles   map[string]perlConsole `json:"consoles"`
	Tests      []string               `json:"tests"` // the scheduled modules' full names
}

// perlConsole is a console object the distribution added.
type perlConsole struct {
	Class string         `json:"class"`
	Args  map[string]any `json:"args"`
}

// perlSide is a running test side and the socket to it.
type perlSide struct {
	cmd      *exec.Cmd
	conn     net.Conn
	in       *bufio.Reader
	dir      string
	log      *slog.Logger
	schedule perlSchedule
	token    string // of the schedule message, answered when the VM is up

	mu     sync.Mutex
	tail   []string // the test side's last lines of output
	exited chan struct{}
}

// perlMessage is one command of the test side.
type perlMessage struct {
	Cmd   string `json:"cmd"`
	Token string `json:"json_cmd_token"`
	raw   []byte
}

// perlScheduleTime bounds loading main.pm: the schedule code of real
// distributions reads files and git, but never waits on the machine.
const perlScheduleTime = 5 * time.Minute

// startPerl starts the test side in dir with vars as its vars.json and
// waits until it loaded the distribution's schedule, before any VM runs:
// a distribution that does not load stops the job at once, with
// os-autoinst's words for why.
func startPerl(ctx context.Context, dir string, vars map[string]string, log *slog.Logger) (*perlSide, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	data, err := json.MarshalIndent(vars, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, "vars.json"), data, 0o644); err != nil {
		return nil, err
	}
	driver := filepath.Join(dir, perlDriverName)
	if err := os.WriteFile(driver, perlDriver, 0o644); err != nil {
		return nil, err
	}
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket to the test side: %w", err)
	}
	ours, theirs := os.NewFile(uintptr(fds[0]), "worker"), os.NewFile(uintptr(fds[1]), "test side")
	// The worker keeps no copy of the test side's end once it started, so
	// that the socket ends when the test side does.
	defer theirs.Close()
	conn, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		return nil, fmt.Errorf("socket to the test side: %w", err)
	}
	p := &perlSide{conn: conn, in: bufio.NewReaderSize(conn, 1<<16), dir: dir, log: log, exited: make(chan struct{})}
	p.cmd = exec.Command("perl", driver)
	p.cmd.Dir = dir
	p.cmd.Env = append(os.Environ(), "LC_ALL=C.UTF-8", "LANG=C.UTF-8")
	p.cmd.ExtraFiles = []*os.File{theirs} // file descriptor 3
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := p.cmd.StdoutPipe()
	if err != nil {
		conn.Close()
		return nil, err
	}
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("starting os-autoinst's test side: %w (is perl installed?)", err)
	}
	theirs.Close()
	go p.readOutput(out)
	schedCtx, cancel := context.WithTimeout(ctx, perlScheduleTime)
	defer cancel()
	msg, err := p.read(schedCtx)
	if err == nil && msg.Cmd != "jetqa_schedule" {
		err = fmt.Errorf("the test side asked %q before its schedule loaded", msg.Cmd)
	}
	if err == nil {
		err = json.Unmarshal(msg.raw, &p.schedule)
	}
	if err != nil {
		p.stop()
		return nil, fmt.Errorf("loading the distribution's main.pm: %w%s", err, perlLoadHint(osAutoinstDir(), vars["CASEDIR"], err.Error()))
	}
	p.token = msg.Token
	if len(p.schedule.Tests) == 0 {
		p.stop()
		return nil, errors.New("main.pm scheduled no test module: call autotest::loadtest(\"tests/…/name.pm\")")
	}
	log.Info("os-autoinst test side loaded", "interface", p.schedule.Interface, "modules", len(p.schedule.Tests),
		"needles", len(p.schedule.Needles), "consoles", len(p.schedule.Consoles))
	return p, nil
}

// readOutput logs what the test side prints, keeping the last lines for
// the reason of a job it ends.
func (p *perlSide) readOutput(out io.Reader) {
	defer func() {
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	lines := bufio.NewScanner(out)
	lines.Buffer(make([]byte, 64<<10), 1<<20)
	for lines.Scan() {
		line := lines.Text()
		p.log.Info("test side", "line", line)
		p.mu.Lock()
		p.tail = append(p.tail, line)
		if len(p.tail) > 40 {
			p.tail = p.tail[len(p.tail)-40:]
		}
		p.mu.Unlock()
	}
}

// lastWords is what the test side printed last that tells why it stopped:
// its errors and warnings, else its last lines.
func (p *perlSide) lastWords() string {
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var picked []string
	for _, l := range p.tail {
		if strings.Contains(l, " at ") && strings.Contains(l, " line ") || strings.Contains(l, "[error]") ||
			strings.Contains(l, "[warn]") || strings.HasPrefix(l, "Can't ") || strings.Contains(l, "died") {
			picked = append(picked, strings.TrimSpace(l))
		}
	}
	if len(picked) == 0 {
		picked = p.tail[max(len(p.tail)-5, 0):]
	}
	picked = picked[max(len(picked)-5, 0):]
	return strings.Join(picked, " | ")
}

// read is the next command; an error when the test side closed the
// socket or ctx ended first.
func (p *perlSide) read(ctx context.Context) (perlMessage, error) {
	stop := context.AfterFunc(ctx, func() { _ = p.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	line, err := p.in.ReadBytes('\n')
	if err != nil {
		if ctx.Err() != nil {
			return perlMessage{}, context.Cause(ctx)
		}
		status := "it stopped"
		select {
		case <-p.exited:
			status = "it ended: " + p.cmd.ProcessState.String()
		case <-time.After(5 * time.Second):
		}
		return perlMessage{}, fmt.Errorf("the test side closed its socket (%s): %s", status, p.lastWords())
	}
	msg := perlMessage{raw: line}
	if err := json.Unmarshal(line, &msg); err != nil {
		return perlMessage{}, fmt.Errorf("the test side sent what is not a command: %w: %.200q", err, line)
	}
	return msg, nil
}

// reply answers a command: {"ret": ret}, as isotovideo.
func (p *perlSide) reply(token string, ret any) error {
	return p.send(map[string]any{"ret": ret}, token)
}

// send writes msg with the command's token, which interface 59 checks.
func (p *perlSide) send(msg map[string]any, token string) error {
	msg["json_cmd_token"] = token
	data, err := json.Marshal(msg)
	if err != nil {
		return err
	}
	_ = p.conn.SetWriteDeadline(time.Now().Add(time.Minute))
	_, err = p.conn.Write(append(data, '\n'))
	return err
}

// stop ends the test side: it gets the end of its socket, as when
// isotovideo ends, then its process group is killed if it lingers.
func (p *perlSide) stop() {
	p.conn.Close()
	select {
	case <-p.exited:
		return
	case <-time.After(10 * time.Second):
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// perlVars is the test side's vars.json: the job's settings, with the
// worker's paths and what isotovideo's backend adds before the tests run.
func perlVars(settings map[string]string, caseDir, productDir, needlesDir string, scale float64) map[string]string {
	vars := make(map[string]string, len(settings)+8)
	for k, v := range settings {
		vars[k] = v
	}
	vars["CASEDIR"] = caseDir
	vars["PRODUCTDIR"] = productDir
	if needlesDir != "" {
		vars["NEEDLES_DIR"] = needlesDir
	}
	vars["BACKEND"] = "qemu"
	vars["TIMEOUT_SCALE"] = strconv.FormatFloat(scale, 'f', -1, 64)
	if vars["DISTRI"] == "" {
		vars["DISTRI"] = filepath.Base(caseDir)
	}
	return vars
}

// perlBool is a Perl truth value in JSON: true/false, 0/1, "", "0", null.
type perlBool bool

func (b *perlBool) UnmarshalJSON(data []byte) error {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case bool:
		*b = perlBool(v)
	case float64:
		*b = v != 0
	case string:
		*b = v != "" && v != "0"
	default:
		*b = false
	}
	return nil
}

// perlNumber is a Perl number in JSON, which may come as a string.
type perlNumber float64

func (n *perlNumber) UnmarshalJSON(data []byte) error {
	data = bytes.Trim(data, `"`)
	if len(data) == 0 || string(data) == "null" {
		*n = 0
		return nil
	}
	f, err := strconv.ParseFloat(string(data), 64)
	if err != nil {
		return fmt.Errorf("not a number: %s", data)
	}
	*n = perlNumber(f)
	return nil
}

func (n perlNumber) duration() time.Duration { return time.Duration(float64(n) * float64(time.Second)) }

// osAutoinstDir is the os-autoinst whose test side Perl jobs run: the
// worker's JETQA_OS_AUTOINST, else the installed package's.
func osAutoinstDir() string { return cmp.Or(os.Getenv("JETQA_OS_AUTOINST"), defaultOSAutoinst) }

// defaultOSAutoinst is where the os-autoinst package installs it.
const defaultOSAutoinst = "/usr/lib/os-autoinst"

var interfaceVersion = regexp.MustCompile(`(?m)^\s*our\s+\$version\s*=\s*(\d+)`)

// osAutoinstInterface is the interface version of the os-autoinst in
// dir, 0 when it does not say.
func osAutoinstInterface(dir string) int {
	data, err := os.ReadFile(filepath.Join(dir, "OpenQA", "Isotovideo", "Interface.pm"))
	if err != nil {
		return 0
	}
	m := interfaceVersion.FindSubmatch(data)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// Perl's words for a distribution that wants what is not there: a name
// a package does not export or define, or a module not installed.
var (
	perlMissingName   = regexp.MustCompile(`"(\w+)" is not exported by the ([\w:]+) module|Undefined subroutine &([\w:]+)::(\w+) called|Can't locate object method "(\w+)" via package "([\w:]+)"`)
	perlMissingModule = regexp.MustCompile(`Can't locate ([\w/]+)\.pm in @INC`)
)

// perlLoadHint says what to do about a main.pm that did not load, when
// Perl's words (why) show: a name the test side of the os-autoinst in
// dir lacks (the distribution is written for a newer os-autoinst: it
// names the one that ran and how to use another), a module of the
// distribution in caseDir that Perl did not look for there, or a Perl
// module the worker lacks.
func perlLoadHint(dir, caseDir, why string) string {
	ours := func(pkg string) bool {
		path := filepath.Join(dir, filepath.FromSlash(strings.ReplaceAll(pkg, "::", "/")))
		_, err := os.Stat(path + ".pm")
		return err == nil
	}
	newer := func(lacks string) string {
		return fmt.Sprintf(" (%s: the os-autoinst at %s is interface %d, and the distribution is written for a newer one; "+
			"point the worker's JETQA_OS_AUTOINST at one, see docs/openqa-tests.md)", lacks, dir, osAutoinstInterface(dir))
	}
	if m := perlMissingName.FindStringSubmatch(why); m != nil {
		name, pkg := cmp.Or(m[1], m[4], m[5]), cmp.Or(m[2], m[3], m[6])
		if ours(pkg) {
			return newer(fmt.Sprintf("os-autoinst's %s has no %s", pkg, name))
		}
	}
	if m := perlMissingModule.FindStringSubmatch(why); m != nil {
		pkg := strings.ReplaceAll(m[1], "/", "::")
		top, _, _ := strings.Cut(m[1], "/")
		if st, err := os.Stat(filepath.Join(dir, top)); err == nil && st.IsDir() {
			return newer("os-autoinst has no " + pkg)
		}
		if _, err := os.Stat(filepath.Join(caseDir, m[1]+".pm")); err == nil && caseDir != "" {
			return fmt.Sprintf(" (the distribution has %s.pm, but Perl did not look in its CASEDIR: its code expects to be at another path, "+
				"such as openQA's /var/lib/openqa/tests/DISTRI named by a `use lib`)", m[1])
		}
		return fmt.Sprintf(" (the Perl module %s is not installed on the worker: install it, on Debian most often as the package lib%s-perl)",
			pkg, strings.ToLower(strings.ReplaceAll(pkg, "::", "-")))
	}
	return ""
}

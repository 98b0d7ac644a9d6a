package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"jetqa/schemas"
	"jetqa/stages/api"
)

const devUsage = `usage: jetqa dev ID COMMAND — developer mode on a running job, as openQA's
  status                         where the job is: module, paused or running
  screen FILE.png                save the live screen
  pause                          pause before the test's next testapi call
  pause --module NAME            pause when module NAME starts
  pause --on-mismatch FN         pause when assert_screen (FN=assert_screen) or any screen
                                 check (FN=check_screen) fails; --clear drops these rules
  wait [--timeout 10m]           wait until the job is paused (exit status 1 if it ends first)
  keys KEY ...                   press keys on the paused VM (os-autoinst's names: ret, ctrl-c)
  type TEXT                      type text on the paused VM
  retry [NEEDLE.json ...]        run the failed screen check again, with these needles
                                 (their PNG beside them) added to the job's
  resume                         go on: a failed check the job is paused on then fails
Only the job's owner (the user of the API key that created it) or an admin may
pause, type and resume; status and screen are public, as openQA's live view.`

// cmdDev is developer mode from the command line: through the API, which
// passes each command to the worker as a job event.
func cmdDev(args []string, stdout, stderr io.Writer) error {
	if len(args) < 1 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(stderr, devUsage)
		return exitCode(2)
	}
	id, err := oneID(args[:1])
	if err != nil {
		return err
	}
	verb, rest := "status", args[1:]
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		verb, rest = rest[0], rest[1:]
	}
	fs := flag.NewFlagSet("dev "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	apiURL := fs.String("api", envOr("JETQA_API", "http://127.0.0.1:9526"), "jetqa API")
	fs.Func("host", "the server's API, as openqa-cli's --host: URL or HOST[:PORT]", func(v string) error { *apiURL = hostURL(v); return nil })
	module := fs.String("module", "", "pause: when this module starts")
	onMismatch := fs.String("on-mismatch", "", "pause: when assert_screen, or check_screen for any screen check, fails")
	clearRules := fs.Bool("clear", false, "pause: drop the module and mismatch rules")
	timeout := fs.Duration("timeout", 10*time.Minute, "wait: how long")
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	c := client{api: strings.TrimRight(*apiURL, "/")}
	cmd := api.DeveloperRequest{Action: verb}
	switch verb {
	case "status":
		return c.devStatus(ctx, id, stdout)
	case "screen":
		if fs.NArg() != 1 {
			return fmt.Errorf("usage: jetqa dev %d screen FILE.png", id)
		}
		var png []byte
		if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/jobs/%d/live/screen.png", id), nil, &png); err != nil {
			return err
		}
		if err := os.WriteFile(fs.Arg(0), png, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "the screen of job %d in %s\n", id, fs.Arg(0))
		return nil
	case "wait":
		return c.devWait(ctx, id, *timeout, stdout)
	case schemas.DevPause:
		cmd.Module, cmd.OnMismatch, cmd.Clear = *module, *onMismatch, *clearRules
	case schemas.DevKeys:
		cmd.Keys = fs.Args()
	case schemas.DevType:
		cmd.Text = strings.Join(fs.Args(), " ")
	case schemas.DevRetry:
		for _, f := range fs.Args() {
			n, err := readDevNeedle(f)
			if err != nil {
				return err
			}
			cmd.Needles = append(cmd.Needles, n)
		}
	case schemas.DevResume:
	default:
		fmt.Fprintln(stderr, devUsage)
		return exitCode(2)
	}
	body, err := json.Marshal(cmd)
	if err != nil {
		return err
	}
	var raw []byte
	if err := c.send(ctx, http.MethodPost, fmt.Sprintf("/api/v1/jobs/%d/developer", id), "application/json", body, &raw); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "job %d: %s sent\n", id, verb)
	return nil
}

// readDevNeedle reads a needle's JSON and the PNG beside it.
func readDevNeedle(file string) (api.DeveloperNeedle, error) {
	base := strings.TrimSuffix(file, ".json")
	js, err := os.ReadFile(base + ".json")
	if err != nil {
		return api.DeveloperNeedle{}, fmt.Errorf("needle: %w", err)
	}
	png, err := os.ReadFile(base + ".png")
	if err != nil {
		return api.DeveloperNeedle{}, fmt.Errorf("needle %s: its image: %w", file, err)
	}
	return api.DeveloperNeedle{Name: filepath.Base(base), JSON: string(js), PNG: png}, nil
}

func (c client) devStatus(ctx context.Context, id int64, stdout io.Writer) error {
	var live api.LiveView
	if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/jobs/%d/live", id), nil, &live); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "job %d on %s, module %s: ", id, live.Worker, live.Module)
	if p := live.Paused; p != nil {
		fmt.Fprintf(stdout, "paused (%s): %s\n", p.At, p.Reason)
	} else {
		fmt.Fprintln(stdout, "running")
	}
	return nil
}

// devWait polls the job until it is paused or ends.
func (c client) devWait(ctx context.Context, id int64, timeout time.Duration, stdout io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		j, err := c.job(ctx, id)
		if err != nil {
			return err
		}
		if p := j.Paused; p != nil {
			fmt.Fprintf(stdout, "job %d paused in %s (%s): %s\n", id, p.Module, p.At, p.Reason)
			return nil
		}
		if j.State == schemas.StateDone || j.State == schemas.StateCancelled || j.State == schemas.StateUploading {
			fmt.Fprintf(stdout, "job %d ended without pausing: %s\n", id, j.Result)
			return exitCode(1)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("job %d: not paused within %s", id, timeout)
		case <-tick.C:
		}
	}
}

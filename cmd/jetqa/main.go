// Command jetqa tests operating systems: it boots them in QEMU, matches
// their screens against needles and reads their serial console, as an
// event-sourced pipeline on NATS JetStream.
//
//	client/API --JobCreated--> [schedule] --JobAssigned--> [fetch] --JobReady-->
//	[boot] --MatchRequested--> [match] --MatchResolved--> [boot]
//	[boot] --ModuleFinished/TestsFinished--> [upload] --JobFinished--> consumers
//
// Every arrow is a JetStream message; the stages meet nowhere else.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"jetqa/stages/boot"
	"jetqa/streams"
)

const usage = `jetqa — automated operating system testing on NATS JetStream

Usage:
  jetqa up [flags]                 run everything on one host (embedded NATS)
  jetqa server [flags]             API, scheduler and matchers on an embedded NATS
  jetqa worker [flags]             a worker host connecting out to NATS (--nats URL)
  jetqa matcher [flags]            a needle matcher pool connecting out to NATS (--nats URL)
  jetqa job post KEY=VALUE ...     create a job, print its id
  jetqa job list [--state S ...]   list jobs (--result --distri --version --test --worker --since --until)
  jetqa job watch ID               follow a job's events until it finishes
  jetqa job show ID                print a job's state, result and modules
  jetqa job cancel ID              stop a job (its VM within seconds)
  jetqa job restart ID             schedule a clone of a finished job
  jetqa job delete ID              remove a finished job from the lists
  jetqa worker list [--json]       the worker instances, their status and job
  jetqa schedule DISTRI=… VERSION=… FLAVOR=… ARCH=… [KEY=VALUE …]
                                   schedule a product: the jobs its job templates give
  jetqa dev ID pause|keys|type|retry|resume|screen|status
                                   developer mode on a running job (jetqa dev -h)
  jetqa job results ID DIR         download a job's screenshots and logs
  jetqa replay ID                  print a job's timeline from its events
  jetqa events [--since T]         print the events of all jobs and workers in a period
  jetqa watch --name N             finished jobs as they finish, durably (nothing missed while stopped)
  jetqa consume webhook URL|junit DIR --name N   each finished job POSTed as signed JSON, or as JUnit XML
  jetqa asset add [--name N] FILE|URL  store an asset on the server for jobs (ISO=N)
  jetqa asset list                 the registered assets
  jetqa asset fetch --host H NAME|URL  bring an asset into a worker host's cache now
  jetqa cache status               the worker hosts' asset caches: entries, use, hits and misses
  jetqa needle check DIR           list every problem of a needle directory (exit status 1 if any)
  jetqa needle match SCREEN.png DIR --tag T  search needles with tag T on a screenshot
  jetqa admin worker add NAME      issue a worker host's credentials (revoke, list; matcher too)
  jetqa admin consumer add NAME    a result consumer's credentials and durable consumer
  jetqa admin apikey create --user U   an API key for openqa-cli and jetqa's job commands (revoke, list)
  jetqa admin user add --user U    a web UI user; the password on standard input (remove, list)
  jetqa admin templates load GITURL[#REF]  job templates for jetqa schedule (show)
  jetqa admin tls init             a private CA and server certificate for a lab
  jetqa admin rebuild [--compare]  rebuild the read model from the streams
  jetqa version

The job, dev, worker list and schedule commands use the API only, at
$JETQA_API (default http://127.0.0.1:9526), signing with the key for it in
client.conf. The operator's commands (events, replay, asset, cache, admin)
reach NATS at $JETQA_NATS (default nats://127.0.0.1:4222) with the
credentials file $JETQA_CREDS, by default data/admin.creds (the server
writes it into its data directory), and $JETQA_TLS_CA when the server's
certificate is signed by a private CA.
Run "jetqa COMMAND -h" for a command's flags.
`

var version = "dev"

func main() {
	if err := dispatch(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		var ec exitCode
		if errors.As(err, &ec) {
			os.Exit(int(ec))
		}
		fmt.Fprintln(os.Stderr, "jetqa:", err)
		os.Exit(1)
	}
}

// exitCode ends the program with a status and no further message.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func dispatch(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitCode(2)
	}
	switch args[0] {
	case "up":
		return cmdUp(args[1:], stderr)
	case "server":
		return cmdServer(args[1:], stderr)
	case "worker":
		if len(args) > 1 && args[1] == "list" {
			return cmdWorkerList(args[2:], stdout, stderr)
		}
		return cmdWorker(args[1:], stderr)
	case "matcher":
		return cmdMatcher(args[1:], stderr)
	case "job":
		return cmdJob(args[1:], stdout, stderr)
	case "dev":
		return cmdDev(args[1:], stdout, stderr)
	case "replay":
		return cmdReplay(args[1:], stdout, stderr)
	case "events":
		return cmdEvents(args[1:], stdout, stderr)
	case "watch":
		return cmdWatch(args[1:], stdout, stderr)
	case "consume":
		return cmdConsume(args[1:], stdout, stderr)
	case "asset":
		return cmdAsset(args[1:], stdout, stderr)
	case "cache":
		return cmdCache(args[1:], stdout, stderr)
	case "needle":
		return cmdNeedle(args[1:], stdout, stderr)
	case "schedule":
		return cmdSchedule(args[1:], stdout, stderr)
	case "admin":
		return cmdAdmin(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "jetqa", version)
		return nil
	case guestBridgeCommand:
		// QEMU runs it for each connection a guest opens to its job's
		// routes; not for people.
		if len(args) != 2 {
			return fmt.Errorf("usage: jetqa %s SOCKET", guestBridgeCommand)
		}
		return boot.GuestBridge(args[1], os.Stdin, os.Stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return fmt.Errorf("unknown command %q", args[0])
}

func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: l})), nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitCode(0)
		}
		return exitCode(2)
	}
	return nil
}

// connectCLI connects a client command to NATS; ctx ends on Ctrl-C. The
// caller runs done when finished.
func connectCLI(natsURL, name string) (ctx context.Context, bus *streams.Bus, done func(), err error) {
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	bus, err = connectNATS(ctx, natsURL, name)
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	return ctx, bus, func() { bus.Close(); cancel() }, nil
}

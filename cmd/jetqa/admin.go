package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"jetqa/stages/api"
	"jetqa/streams"
)

const adminUsage = `usage:
  jetqa admin worker add NAME [--out FILE] [--instances N]   issue a worker host's credentials file
  jetqa admin worker revoke NAME                             end its access now, open connections too
  jetqa admin worker list                                    the issued worker credentials
  jetqa admin matcher add|revoke|list NAME                   the same for a matcher pool
  jetqa admin consumer add NAME [--from-start]               a result consumer: its credentials and its durable
                                                             consumer of finished jobs (from now on, or all)
  jetqa admin consumer revoke|list NAME                      end it, durable consumer too; list them
  jetqa admin apikey create --user U [--scope own|operator|admin] [--expires 720h|DATE]
                                                             an API key and secret, as openqa-cli uses them;
                                                             own: its user's jobs only; operator (default):
                                                             every job; admin (--admin): developer mode too
  jetqa admin apikey revoke KEY | list                       end a key; list the keys
  jetqa admin user add --user U [--admin] [--password-file F]
                                                             a web UI user, or a new password for one: the password
                                                             is the first line of standard input, or of F
  jetqa admin user remove --user U | list                    end a user; list the users
  jetqa admin templates load GITURL[#REF] [--dry-run]       job templates (openQA's job group YAML) for jetqa schedule
  jetqa admin templates show [--json]                      the loaded job templates
  jetqa admin tls init [--dir DIR] [--hosts H,...]           a private CA and server certificate for a lab
  jetqa admin rebuild [--json] [--compare]                   rebuild the read model from the streams
  jetqa admin retention plan|run [--json]                    what the server's retention policy removes now
                                                             (plan: a dry run), or remove it now`

// cmdAdmin holds the operator's commands.
func cmdAdmin(args []string, stdout, stderr io.Writer) error {
	switch {
	case len(args) >= 1 && (args[0] == streams.RoleWorker || args[0] == streams.RoleMatcher || args[0] == streams.RoleConsumer):
		return cmdAdminCredentials(args[0], args[1:], stdout, stderr)
	case len(args) >= 1 && args[0] == "templates":
		return cmdAdminTemplates(args[1:], stdout, stderr)
	case len(args) >= 1 && args[0] == "apikey":
		return cmdAdminAPIKey(args[1:], stdout, stderr)
	case len(args) >= 1 && args[0] == "user":
		return cmdAdminUser(args[1:], os.Stdin, stdout, stderr)
	case len(args) >= 2 && args[0] == "tls" && args[1] == "init":
		return cmdAdminTLSInit(args[2:], stdout, stderr)
	case len(args) >= 2 && args[0] == "retention" && (args[1] == "plan" || args[1] == "run"):
		return cmdAdminRetention(args[1], args[2:], stdout, stderr)
	case len(args) >= 1 && args[0] == "rebuild":
	default:
		fmt.Fprintln(stderr, adminUsage)
		return exitCode(2)
	}
	fs := flag.NewFlagSet("admin rebuild", flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats", envOr("JETQA_NATS", "nats://127.0.0.1:4222"), "NATS server")
	apiURL := fs.String("api", envOr("JETQA_API", "http://127.0.0.1:9526"), "jetqa API, for --compare")
	asJSON := fs.Bool("json", false, "print the rebuilt read model as the API's job list JSON")
	compare := fs.Bool("compare", false, "then compare the live API's read model with the rebuilt one; exit status 1 when they differ")
	dryRun := fs.Bool("dry-run", false, "rebuild and report, but do not rewrite the read model")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	ctx, bus, done, err := connectCLI(*natsURL, "jetqa-admin")
	if err != nil {
		return err
	}
	defer done()
	start := time.Now()
	jobs, seq, err := api.Rebuild(ctx, bus)
	if err != nil {
		return err
	}
	took := time.Since(start).Round(time.Millisecond)
	live, err := api.LiveViews(ctx, bus)
	if err != nil {
		return err
	}
	changed := 0
	if !*dryRun {
		if changed, err = api.Repair(ctx, bus, jobs, live); err != nil {
			return err
		}
	}
	fmt.Fprintf(stderr, "rebuilt %d jobs from the job stream up to sequence %d in %s; %d of %d stored views rewritten\n", len(jobs), seq, took, changed, len(live))
	rebuilt, err := canonical(jobs)
	if err != nil {
		return err
	}
	if *asJSON {
		fmt.Fprintln(stdout, string(rebuilt))
	}
	if !*compare {
		return nil
	}
	var served struct{ Jobs []api.JobView }
	if err := (client{api: strings.TrimRight(*apiURL, "/")}).do(ctx, http.MethodGet, "/api/v1/jobs", nil, &served); err != nil {
		return err
	}
	liveJSON, err := canonical(served.Jobs)
	if err != nil {
		return err
	}
	if bytes.Equal(rebuilt, liveJSON) {
		fmt.Fprintf(stdout, "identical: the live read model and the one rebuilt from the streams agree on all %d jobs\n", len(jobs))
		return nil
	}
	fmt.Fprintf(stdout, "DIFFERENT: %s\n", firstDifference(jobs, served.Jobs))
	return exitCode(1)
}

// adminVerb starts `jetqa admin NOUN VERB …`: the verb, and a flag set
// for it that has --nats. With no verb it prints the usage and fails.
func adminVerb(noun string, args []string, stderr io.Writer) (verb string, fs *flag.FlagSet, natsURL *string, err error) {
	if len(args) == 0 {
		fmt.Fprintln(stderr, adminUsage)
		return "", nil, nil, exitCode(2)
	}
	fs = flag.NewFlagSet("admin "+noun+" "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL = fs.String("nats", envOr("JETQA_NATS", "nats://127.0.0.1:4222"), "NATS server")
	return args[0], fs, natsURL, nil
}

// canonical renders jobs the same way whatever their source.
func canonical(jobs []api.JobView) ([]byte, error) {
	if jobs == nil {
		jobs = []api.JobView{}
	}
	return json.MarshalIndent(map[string]any{"jobs": jobs}, "", "  ")
}

func firstDifference(rebuilt, live []api.JobView) string {
	if len(rebuilt) != len(live) {
		return fmt.Sprintf("%d jobs rebuilt, %d live (jobs created meanwhile?)", len(rebuilt), len(live))
	}
	for i := range rebuilt {
		a, _ := json.Marshal(rebuilt[i])
		b, _ := json.Marshal(live[i])
		if !bytes.Equal(a, b) {
			return fmt.Sprintf("job %d: rebuilt %s, live %s", rebuilt[i].ID, a, b)
		}
	}
	return "same jobs, different encoding"
}

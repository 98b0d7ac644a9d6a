package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"jetqa/stages/retention"
)

// cmdAdminRetention is `jetqa admin retention plan|run`: the server's
// retention stage answers with what it removes now, and removes it for run.
func cmdAdminRetention(verb string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("admin retention "+verb, flag.ContinueOnError)
	fs.SetOutput(stderr)
	natsURL := fs.String("nats", envOr("JETQA_NATS", "nats://127.0.0.1:4222"), "NATS server")
	asJSON := fs.Bool("json", false, "the plan as JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, bus, done, err := connectCLI(*natsURL, "jetqa-admin")
	if err != nil {
		return err
	}
	defer done()
	subject := retention.SubjectPlan
	if verb == "run" {
		subject = retention.SubjectRun
	}
	data, err := bus.Ask(ctx, subject, nil)
	if err != nil {
		return fmt.Errorf("%w (the server applies retention only with --retention RULES)", err)
	}
	if *asJSON {
		_, err := stdout.Write(append(data, '\n'))
		return err
	}
	var plan retention.Plan
	if err := json.Unmarshal(data, &plan); err != nil {
		return err
	}
	_, err = io.WriteString(stdout, plan.Describe())
	return err
}

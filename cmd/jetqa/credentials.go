package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"jetqa/streams"
)

// cmdAdminCredentials issues, revokes and lists the credentials of worker
// hosts or matcher pools (role).
func cmdAdminCredentials(role string, args []string, stdout, stderr io.Writer) error {
	verb, fs, natsURL, err := adminVerb(role, args, stderr)
	if err != nil {
		return err
	}
	out := fs.String("out", "", "credentials file to write (default NAME.creds)")
	instances := fs.Int("instances", streams.DefaultInstances, "worker instances the credentials cover (1…N)")
	fromStart := fs.Bool("from-start", false, "a consumer's first delivery is the oldest finished job, not the next one")
	// NAME may come before the flags, as people write it.
	rest, name := args[1:], ""
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		name, rest = rest[0], rest[1:]
	}
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	if name == "" {
		name = fs.Arg(0)
	} else if fs.NArg() > 0 {
		name = ""
	}
	if verb != "list" && (name == "" || fs.NArg() > 1) {
		fmt.Fprintf(stderr, "jetqa admin %s %s: give one NAME\n", role, verb)
		return exitCode(2)
	}
	ctx, bus, done, err := connectCLI(*natsURL, "jetqa-admin")
	if err != nil {
		return err
	}
	defer done()
	dial, err := cliDial(*natsURL)
	if err != nil {
		return err
	}
	switch verb {
	case "add":
		path := *out
		if path == "" {
			path = name + ".creds"
		}
		if role == streams.RoleConsumer {
			if err := bus.CreateResultsConsumer(ctx, name, *fromStart); err != nil {
				return err
			}
		}
		if err := issueCredentials(ctx, bus, dial, role, name, *instances, path); err != nil {
			if role == streams.RoleConsumer {
				_ = bus.DeleteResultsConsumer(context.WithoutCancel(ctx), name)
			}
			return err
		}
		fmt.Fprintf(stdout, "%s %q may connect now with %s\n", role, name, path)
		if role == streams.RoleConsumer {
			fmt.Fprintf(stdout, "consume with: jetqa watch|consume … --name %s --nats URL --creds %s\n", name, path)
			return nil
		}
		fmt.Fprintf(stdout, "copy it to the %s's host and start: jetqa %s --nats URL --creds %s\n", role, role, path)
		return nil
	case "revoke":
		if err := bus.RevokeCredential(ctx, role, name); err != nil {
			return err
		}
		if role == streams.RoleConsumer {
			if err := bus.DeleteResultsConsumer(ctx, name); err != nil {
				return err
			}
		}
		fmt.Fprintf(stdout, "%s %q revoked: its connections are closed and it cannot connect again\n", role, name)
		return nil
	case "list":
		all, err := bus.Credentials(ctx)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tINSTANCES\tISSUED\tKEY")
		for _, c := range all {
			if c.Role == role {
				fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", c.Name, c.Instances, c.Created.Format(time.RFC3339), c.NKey)
			}
		}
		return tw.Flush()
	}
	fmt.Fprintln(stderr, adminUsage)
	return exitCode(2)
}

// issueCredentials makes a key for role and name, records it on the
// server and writes the credentials file; it returns once the server,
// dialled as d says, lets the key connect.
func issueCredentials(ctx context.Context, bus *streams.Bus, d streams.Dial, role, name string, instances int, path string) error {
	if role == streams.RoleWorker && instances < 1 {
		return fmt.Errorf("--instances %d: need at least 1", instances)
	}
	id, err := streams.NewIdentity(role, name)
	if err != nil {
		return err
	}
	c := id.Credential(instances)
	if role != streams.RoleWorker {
		c.Instances = 0
	}
	if err := bus.AddCredential(ctx, c); err != nil {
		return err
	}
	if err := id.WriteFile(path, "jetqa server at "+bus.NC.ConnectedUrl()); err != nil {
		_ = bus.RevokeCredential(context.WithoutCancel(ctx), role, name)
		return fmt.Errorf("credentials file: %w", err)
	}
	// Every server takes the new key when the bucket changes: wait until
	// the one we talk to has.
	deadline, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	d.Identity = &id
	for {
		probe, err := streams.ConnectTo(deadline, d, "jetqa-admin-probe", nil)
		if err == nil {
			probe.Close()
			return nil
		}
		select {
		case <-deadline.Done():
			return errors.Join(fmt.Errorf("credentials of %s %q written to %s, but the server does not accept them yet", role, name, path), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

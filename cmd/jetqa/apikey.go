package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// cmdAdminAPIKey creates, revokes and lists API keys, as openQA's API keys
// page does: a key and secret a user signs API requests with.
func cmdAdminAPIKey(args []string, stdout, stderr io.Writer) error {
	verb, fs, natsURL, err := adminVerb("apikey", args, stderr)
	if err != nil {
		return err
	}
	user := fs.String("user", "", "the user the key signs for (create)")
	scopeName := fs.String("scope", string(schemas.ScopeOperator), "what the key may change: own (post jobs; cancel, restart, delete only its user's), operator (every job) or admin (developer mode on every job too) (create)")
	admin := fs.Bool("admin", false, "the same as --scope admin (create)")
	expires := fs.String("expires", "", "when the key ends: a duration (720h) or a date (2027-06-30); default never (create)")
	rest, key := args[1:], ""
	if verb == "revoke" && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		key, rest = rest[0], rest[1:]
	}
	if err := parseFlags(fs, rest); err != nil {
		return err
	}
	if verb == "revoke" && key == "" {
		key = fs.Arg(0)
	}
	scope, err := schemas.ParseKeyScope(*scopeName)
	if err != nil {
		return fmt.Errorf("--scope: %w", err)
	}
	if *admin {
		scope = schemas.ScopeAdmin
	}
	var until time.Time
	if *expires != "" {
		if until, err = parseExpiry(*expires, time.Now()); err != nil {
			return err
		}
	}
	switch {
	case verb == "create" && *user == "":
		fmt.Fprintln(stderr, "jetqa admin apikey create: give --user NAME")
		return exitCode(2)
	case verb == "revoke" && key == "":
		fmt.Fprintln(stderr, "jetqa admin apikey revoke: give the KEY (`jetqa admin apikey list` lists them)")
		return exitCode(2)
	case verb != "create" && verb != "revoke" && verb != "list":
		fmt.Fprintln(stderr, adminUsage)
		return exitCode(2)
	}
	ctx, bus, done, err := connectCLI(*natsURL, "jetqa-admin")
	if err != nil {
		return err
	}
	defer done()
	switch verb {
	case "create":
		k, err := bus.CreateAPIKey(ctx, *user, until, scope)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "key = %s\nsecret = %s\n", k.Key, k.Secret)
		if k.Expires != nil {
			fmt.Fprintf(stdout, "# expires %s\n", k.Expires.Format(time.RFC3339))
		}
		fmt.Fprintf(stderr, "API key for %s, scope %s: put the two lines under [HOST] in ~/.config/openqa/client.conf for openqa-cli\n", k.User, k.Grants())
		return nil
	case "revoke":
		if err := bus.RevokeAPIKey(ctx, key); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "API key %s revoked: requests signed with it are refused\n", key)
		return nil
	}
	keys, err := bus.APIKeys(ctx)
	if err != nil {
		return err
	}
	list := slices.SortedFunc(func(yield func(streams.APIKey) bool) {
		for _, k := range keys {
			if !yield(k) {
				return
			}
		}
	}, func(a, b streams.APIKey) int { return a.Created.Compare(b.Created) })
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tUSER\tSCOPE\tCREATED\tEXPIRES\tSTATE")
	now := time.Now()
	for _, k := range list {
		exp, state := "never", "valid"
		if k.Expires != nil {
			exp = k.Expires.Format(time.RFC3339)
		}
		switch {
		case k.Revoked:
			state = "revoked"
		case !k.Valid(now):
			state = "expired"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.Key, k.User, k.Grants(), k.Created.Format(time.RFC3339), exp, state)
	}
	return tw.Flush()
}

// parseExpiry reads --expires: a duration from now, or a date or time.
func parseExpiry(s string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d <= 0 {
			return time.Time{}, fmt.Errorf("--expires %s: a key must live a while", s)
		}
		return now.Add(d), nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			if !t.After(now) {
				return time.Time{}, fmt.Errorf("--expires %s is in the past", s)
			}
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("--expires %q: give a duration (720h) or a date (2027-06-30)", s)
}

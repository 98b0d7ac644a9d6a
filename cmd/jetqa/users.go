package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/term"
)

// cmdAdminUser adds, removes and lists the web UI's local users: the
// names and passwords people sign in with, as openQA's local accounts.
func cmdAdminUser(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	verb, fs, natsURL, err := adminVerb("user", args, stderr)
	if err != nil {
		return err
	}
	user := fs.String("user", "", "the name the user signs in with (add, remove)")
	admin := fs.Bool("admin", false, "the user may act on every job, as openQA's admins (add)")
	passwordFile := fs.String("password-file", "", "read the password from the first line of this file instead of standard input (add)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	switch {
	case verb != "add" && verb != "remove" && verb != "list":
		fmt.Fprintln(stderr, adminUsage)
		return exitCode(2)
	case verb != "list" && *user == "":
		fmt.Fprintf(stderr, "jetqa admin user %s: give --user NAME\n", verb)
		return exitCode(2)
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "jetqa admin user %s: %q is not a flag; the name goes after --user\n", verb, fs.Arg(0))
		return exitCode(2)
	}
	var password string
	if verb == "add" {
		if password, err = readPassword(*user, *passwordFile, stdin, stderr); err != nil {
			return err
		}
	}
	ctx, bus, done, err := connectCLI(*natsURL, "jetqa-admin")
	if err != nil {
		return err
	}
	defer done()
	users, err := bus.Users(ctx)
	if err != nil {
		return err
	}
	switch verb {
	case "add":
		if err := bus.SetUser(ctx, *user, password, *admin); err != nil {
			return err
		}
		if _, had := users[*user]; had {
			fmt.Fprintf(stdout, "user %s: new password set; the old one signs in no more\n", *user)
		} else {
			fmt.Fprintf(stdout, "user %s added: signs in to the web UI with the password given\n", *user)
		}
		return nil
	case "remove":
		if err := bus.RemoveUser(ctx, *user); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "user %s removed: their password signs nobody in\n", *user)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tROLE\tPASSWORD SET")
	for _, name := range slices.Sorted(maps.Keys(users)) {
		u := users[name]
		role := "user"
		if u.Admin {
			role = "admin"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\n", u.Name, role, u.PasswordSet.Local().Format(time.RFC3339))
	}
	return tw.Flush()
}

// readPassword reads a new password for user: the first line of file,
// else of stdin. A person at a terminal is asked for it twice, unechoed.
func readPassword(user, file string, stdin io.Reader, stderr io.Writer) (string, error) {
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("password file: %w", err)
		}
		defer f.Close()
		return firstLine(f, file)
	}
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		var typed [2]string
		for i, prompt := range []string{"password for " + user + ": ", "the same again: "} {
			fmt.Fprint(stderr, prompt)
			b, err := term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(stderr)
			if err != nil {
				return "", fmt.Errorf("read the password: %w", err)
			}
			typed[i] = string(b)
		}
		if typed[0] != typed[1] {
			return "", errors.New("the two passwords differ; nothing changed")
		}
		return typed[0], nil
	}
	return firstLine(stdin, "standard input")
}

// firstLine is the first line of r, without its line end.
func firstLine(r io.Reader, name string) (string, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read the password from %s: %w", name, err)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return "", fmt.Errorf("no password on %s: give it as one line (echo … | jetqa admin user add --user NAME), or --password-file FILE", name)
	}
	return line, nil
}

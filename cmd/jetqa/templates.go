package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"jetqa/schemas"
	"jetqa/stages/api/templates"
	"jetqa/stages/fetch"
	"jetqa/stages/fetch/gitmirror"
	"jetqa/streams"
)

// cmdAdminTemplates loads job templates from a git repository, as
// openQA's openqa-load-templates loads them from a file, and shows what is
// loaded.
func cmdAdminTemplates(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "load" && args[0] != "show" {
		fmt.Fprintln(stderr, adminUsage)
		return exitCode(2)
	}
	verb := args[0]
	fset := flag.NewFlagSet("admin templates "+verb, flag.ContinueOnError)
	fset.SetOutput(stderr)
	natsURL := fset.String("nats", envOr("JETQA_NATS", "nats://127.0.0.1:4222"), "NATS server")
	dryRun := fset.Bool("dry-run", false, "load: check the repository and print what it holds, but store nothing")
	asJSON := fset.Bool("json", false, "show: print the loaded set as JSON")
	rest, source := args[1:], ""
	if verb == "load" && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		source, rest = rest[0], rest[1:]
	}
	if err := parseFlags(fset, rest); err != nil {
		return err
	}
	if verb == "load" && source == "" {
		source = fset.Arg(0)
	}
	if verb == "load" {
		if source == "" {
			fmt.Fprintln(stderr, "jetqa admin templates load: give the repository, GITURL[#REF]")
			return exitCode(2)
		}
		return loadTemplates(source, *natsURL, *dryRun, stdout, stderr)
	}
	ctx, bus, done, err := connectCLI(*natsURL, "jetqa-admin")
	if err != nil {
		return err
	}
	defer done()
	t, err := bus.LatestTemplates(ctx)
	if err != nil {
		return err
	}
	set, err := parseTemplateFiles(t.Files)
	if err != nil {
		return fmt.Errorf("the loaded templates (%s at %s) do not parse: %w", t.URL, t.Commit, err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(map[string]any{"url": t.URL, "ref": t.Ref, "commit": t.Commit, "loaded": t.Loaded, "by": t.By, "set": set})
	}
	fmt.Fprintf(stdout, "%s#%s at %s, loaded %s by %s\n%s\n", t.URL, t.Ref, t.Commit, t.Loaded.Local().Format(time.DateTime), t.By, set.Summary())
	printTemplateSet(set, stdout)
	return nil
}

// loadTemplates checks out the repository, checks every file, and stores
// them as one event.
func loadTemplates(source, natsURL string, dryRun bool, stdout, stderr io.Writer) error {
	ctx := context.Background()
	url, ref := fetch.SplitRef(source)
	if !strings.Contains(url, "://") && !strings.Contains(url, "@") {
		if abs, err := filepath.Abs(url); err == nil {
			url = abs
		}
	}
	tmp, err := os.MkdirTemp("", "jetqa-templates-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	mirrors, err := gitmirror.New(gitmirror.Config{Dir: filepath.Join(tmp, "mirrors")})
	if err != nil {
		return err
	}
	checkout := filepath.Join(tmp, "checkout")
	res, err := mirrors.Checkout(ctx, url, ref, checkout)
	if err != nil {
		return fmt.Errorf("templates repository: %w", err)
	}
	files, err := readTemplateFiles(checkout)
	if err != nil {
		return err
	}
	set, err := parseTemplateFiles(files)
	if err != nil {
		return fmt.Errorf("%s at %s: the job templates are refused, nothing was loaded:\n%w", url, res.Commit, err)
	}
	for _, w := range set.Warnings {
		fmt.Fprintln(stderr, "warning:", w)
	}
	fmt.Fprintf(stdout, "%s at %s: %s\n", url, res.Commit, set.Summary())
	printTemplateSet(set, stdout)
	if dryRun {
		fmt.Fprintln(stdout, "dry run: nothing stored")
		return nil
	}
	ctx, bus, done, err := connectCLI(natsURL, "jetqa-admin")
	if err != nil {
		return err
	}
	defer done()
	by := "admin"
	if u, err := user.Current(); err == nil {
		by = u.Username
	}
	if _, err := bus.LoadTemplates(ctx, schemas.TemplatesLoaded{URL: url, Ref: ref, Commit: res.Commit, Files: files, By: by}); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "loaded: POST /api/v1/isos schedules products with these templates now")
	return nil
}

// readTemplateFiles reads the YAML and JSON files of a checkout, skipping
// hidden files and directories.
func readTemplateFiles(dir string) (map[string]string, error) {
	files := map[string]string{}
	size := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && p != dir {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(p) {
		case ".yaml", ".yml", ".json":
		default:
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		files[filepath.ToSlash(rel)] = string(data)
		size += len(rel) + len(data)
		if size > streams.MaxTemplatesBytes {
			return fmt.Errorf("the repository's YAML and JSON files hold more than %d bytes, more than one load may: keep only job groups, machines and test suites in it", streams.MaxTemplatesBytes)
		}
		return nil
	})
	if err == nil && len(files) == 0 {
		err = errors.New("the repository has no YAML or JSON files: put job groups (JobTemplates-01 YAML) in it")
	}
	return files, err
}

func parseTemplateFiles(files map[string]string) (*templates.Set, error) {
	raw := make(map[string][]byte, len(files))
	for p, f := range files {
		raw[p] = []byte(f)
	}
	return templates.Parse(raw)
}

func printTemplateSet(set *templates.Set, w io.Writer) {
	for _, g := range set.Groups {
		products := map[string]bool{}
		for _, t := range g.Templates {
			products[t.Product.Name+" ("+t.Product.Arch+")"] = true
		}
		fmt.Fprintf(w, "  job group %d %s (%s): %d templates for %d products\n", g.ID, g.Name, g.File, len(g.Templates), len(products))
	}
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"jetqa/stages/boot"
	"jetqa/stages/fetch"
	"jetqa/stages/fetch/gitmirror"
	"jetqa/streams"
)

// rematch is `jetqa replay ID --needles GITURL#REF`: the job's recorded
// screen matches decided again against other needles, without a VM.
func rematch(ctx context.Context, bus *streams.Bus, id int64, needles, apiURL string, asJSON bool, stdout io.Writer) error {
	agg, err := bus.LoadJob(ctx, id)
	if err != nil {
		return err
	}
	if !agg.Final() {
		return fmt.Errorf("job %d is %s: replay its matches once it has finished", id, agg.State)
	}
	dir, commit, cleanup, err := needlesAt(ctx, needles)
	if err != nil {
		return err
	}
	defer cleanup()
	api := client{api: strings.TrimRight(apiURL, "/")}
	screen := func(ctx context.Context, name string) ([]byte, error) {
		var data []byte
		// ?seq: the API's view may be a moment behind the events read here.
		err := api.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/jobs/%d/file/%s?seq=%d", id, url.PathEscape(name), agg.Seq), nil, &data)
		return data, err
	}
	report, err := boot.Rematch(ctx, bus, id, agg.Result, agg.Modules, dir, commit, screen)
	if err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(stdout).Encode(report)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODULE\tSTEP\tCALL\tTAGS\tRECORDED\tNOW\tNEEDLE\tSIMILARITY")
	for _, s := range report.Steps {
		now, mark := s.After, ""
		if s.Error != "" {
			now = "?"
		}
		if s.Changed() {
			mark = "  ← changed"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%.0f%%%s\n", s.Module, s.Step, s.Call, strings.Join(s.Tags, ","), s.Before, now, s.AfterBy, s.Similarity*100, mark)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, why := range report.Why {
		fmt.Fprintln(stdout, "note:", why)
	}
	verdict := "would not pass"
	if report.WouldPass {
		verdict = "would pass"
	}
	fmt.Fprintf(stdout, "job %d (%s) %s with needles %s", id, report.Result, verdict, needles)
	if commit != "" {
		fmt.Fprintf(stdout, " at %s", commit[:min(12, len(commit))])
	}
	fmt.Fprintln(stdout)
	return nil
}

// needlesAt makes the needles of GITURL[#REF] or a directory readable: a
// repository is checked out into a temporary directory, whose needles/
// holds the needles if there is one, as in openQA's test repositories.
func needlesAt(ctx context.Context, value string) (dir, commit string, cleanup func(), err error) {
	if st, err := os.Stat(value); err == nil && st.IsDir() && !strings.Contains(value, "#") {
		if _, gerr := os.Stat(filepath.Join(value, ".git")); gerr != nil {
			return needlesIn(value), "", func() {}, nil
		}
	}
	tmp, err := os.MkdirTemp("", "jetqa-rematch-")
	if err != nil {
		return "", "", nil, err
	}
	cleanup = func() { _ = os.RemoveAll(tmp) }
	mirrors, err := gitmirror.New(gitmirror.Config{Dir: filepath.Join(tmp, "mirrors")})
	if err != nil {
		cleanup()
		return "", "", nil, err
	}
	repo, ref := fetch.SplitRef(value)
	res, err := mirrors.Checkout(ctx, repo, ref, filepath.Join(tmp, "needles"))
	if err != nil {
		cleanup()
		return "", "", nil, fmt.Errorf("--needles %s: %w", value, err)
	}
	return needlesIn(filepath.Join(tmp, "needles")), res.Commit, cleanup, nil
}

// needlesIn is dir's needles/ subdirectory if it has one, else dir.
func needlesIn(dir string) string {
	if st, err := os.Stat(filepath.Join(dir, "needles")); err == nil && st.IsDir() {
		return filepath.Join(dir, "needles")
	}
	return dir
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"jetqa/schemas"
	"jetqa/stages/api"
	"jetqa/stages/upload"
)

func cmdJob(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitCode(2)
	}
	fs := flag.NewFlagSet("job "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	apiURL := fs.String("api", envOr("JETQA_API", "http://127.0.0.1:9526"), "jetqa API")
	fs.Func("host", "the server's API, as openqa-cli's --host: URL or HOST[:PORT]", func(v string) error { *apiURL = hostURL(v); return nil })
	filters := url.Values{}
	if args[0] == "list" {
		for _, f := range []string{"state", "result", "distri", "version", "flavor", "arch", "build", "machine", "test", "worker", "since", "until", "limit", "offset"} {
			fs.Func(f, "list only jobs with this "+f, func(v string) error { filters.Set(f, v); return nil })
		}
	}
	asJSON := fs.Bool("json", false, "print the API's JSON answer, for scripts")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	c := client{api: strings.TrimRight(*apiURL, "/"), asJSON: *asJSON}
	rest := fs.Args()
	switch args[0] {
	case "post":
		return c.post(ctx, rest, stdout)
	case "list":
		return c.list(ctx, filters, *asJSON, stdout)
	case "watch":
		id, err := oneID(rest)
		if err != nil {
			return err
		}
		return c.watch(ctx, id, stdout)
	case "show":
		id, err := oneID(rest)
		if err != nil {
			return err
		}
		if *asJSON {
			var raw []byte
			if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/jobs/%d", id), nil, &raw); err != nil {
				return err
			}
			_, err = stdout.Write(raw)
			return err
		}
		return c.show(ctx, id, stdout)
	case "cancel", "restart":
		id, err := oneID(rest)
		if err != nil {
			return err
		}
		return c.action(ctx, id, args[0], stdout)
	case "delete":
		id, err := oneID(rest)
		if err != nil {
			return err
		}
		var raw []byte
		if err := c.do(ctx, http.MethodDelete, fmt.Sprintf("/api/v1/jobs/%d", id), nil, &raw); err != nil {
			return err
		}
		return c.print(stdout, raw, func() { fmt.Fprintf(stdout, "job %d deleted\n", id) })
	case "results":
		if len(rest) != 2 {
			return fmt.Errorf("usage: jetqa job results ID DIR")
		}
		id, err := oneID(rest[:1])
		if err != nil {
			return err
		}
		return c.results(ctx, id, rest[1], stdout)
	}
	return fmt.Errorf("unknown job command %q: use post, list, watch, show, cancel, restart or results", args[0])
}

func oneID(args []string) (int64, error) {
	if len(args) != 1 {
		return 0, fmt.Errorf("give one job id")
	}
	id, err := strconv.ParseInt(args[0], 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("job id %q: want a positive integer", args[0])
	}
	return id, nil
}

// client talks to a running jetqa through its API only.
type client struct {
	api string
	// asJSON prints the API's answers as they are, for scripts.
	asJSON bool
}

// print writes an answer: as it came with --json, else as human says.
func (c client) print(w io.Writer, raw []byte, human func()) error {
	if c.asJSON {
		_, err := w.Write(raw)
		return err
	}
	human()
	return nil
}

func (c client) do(ctx context.Context, method, path string, body url.Values, out any) error {
	if body == nil {
		return c.send(ctx, method, path, "", nil, out)
	}
	return c.send(ctx, method, path, "application/x-www-form-urlencoded", []byte(body.Encode()), out)
}

// send makes a request with a body of contentType ("" for none), signed
// unless it is a GET, and decodes the JSON answer into out (or gives it
// as it is, to a *[]byte).
func (c client) send(ctx context.Context, method, path, contentType string, data []byte, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.api+path, bytes.NewReader(data))
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	var signedBy string
	if method != http.MethodGet {
		cred, err := credentialFor(c.api)
		switch {
		case err == nil:
			api.Sign(req, cred.key, cred.secret, data)
			signedBy = cred.file
		case !errors.Is(err, os.ErrNotExist):
			return err
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("jetqa API at %s: %w (is `jetqa up` running?)", c.api, err)
	}
	defer resp.Body.Close()
	data, err = io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			if resp.StatusCode == http.StatusForbidden {
				return fmt.Errorf("%s\n%s", e.Error, signHint(c.api, signedBy))
			}
			return fmt.Errorf("%s", e.Error)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = data
		return nil
	}
	return json.Unmarshal(data, out)
}

// signHint says where the key of a refused request came from, or where to
// put one.
func signHint(apiURL, file string) string {
	if file != "" {
		return "the request was signed with the key in " + file
	}
	u, _ := url.Parse(apiURL)
	host := apiURL
	if u != nil && u.Host != "" {
		host = u.Host
	}
	return fmt.Sprintf("no API key for %s: get one with `jetqa admin apikey create --user NAME` and put its key and secret under [%s] in ~/.config/jetqa/client.conf", host, host)
}

func (c client) post(ctx context.Context, args []string, stdout io.Writer) error {
	form := url.Values{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return fmt.Errorf("job setting %q: write KEY=VALUE", a)
		}
		form.Set(k, v)
	}
	if len(form) == 0 {
		return fmt.Errorf("give job settings as KEY=VALUE, e.g. DISTRI=testos TEST=demo ISO=PATH CASEDIR=REPO")
	}
	var raw []byte
	if err := c.do(ctx, http.MethodPost, "/api/v1/jobs", form, &raw); err != nil {
		return err
	}
	var out struct{ ID int64 }
	if err := json.Unmarshal(raw, &out); err != nil {
		return fmt.Errorf("POST /api/v1/jobs answered %q: %w", raw, err)
	}
	return c.print(stdout, raw, func() { fmt.Fprintln(stdout, out.ID) })
}

func (c client) job(ctx context.Context, id int64) (api.JobView, error) {
	var out struct{ Job api.JobView }
	err := c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/jobs/%d", id), nil, &out)
	return out.Job, err
}

func (c client) show(ctx context.Context, id int64, stdout io.Writer) error {
	j, err := c.job(ctx, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "job %d  %s\n", j.ID, j.Name)
	fmt.Fprintf(stdout, "state:   %s\nresult:  %s\n", j.State, j.Result)
	if j.Reason != "" {
		fmt.Fprintf(stdout, "reason:  %s\n", j.Reason)
	}
	if j.Waiting != "" {
		fmt.Fprintf(stdout, "waiting: %s\n", j.Waiting)
	}
	if j.Worker != "" {
		fmt.Fprintf(stdout, "worker:  %s %s\n", j.Worker, j.Accel)
		if j.TestSide != "" {
			fmt.Fprintf(stdout, "tests:   %s\n", j.TestSide)
		}
	}
	if j.CloneOf != 0 {
		fmt.Fprintf(stdout, "clone of job %d\n", j.CloneOf)
	}
	if j.Clone != 0 {
		fmt.Fprintf(stdout, "restarted as job %d\n", j.Clone)
	}
	if j.Started != nil && j.Finished != nil {
		fmt.Fprintf(stdout, "ran:     %s\n", j.Finished.Sub(j.Started.Time).Round(100*time.Millisecond))
	}
	for _, r := range j.Repos {
		fmt.Fprintf(stdout, "%-8s %s @ %s\n", r.Setting+":", r.URL, r.Commit)
	}
	if len(j.Modules) > 0 {
		fmt.Fprintln(stdout, "modules:")
		for _, m := range j.Modules {
			fmt.Fprintf(stdout, "  %-20s %-10s %s\n", m.Name, m.Result, m.Reason)
		}
	}
	if len(j.Files) > 0 {
		names := make([]string, 0, len(j.Files))
		for n := range j.Files {
			if !strings.HasPrefix(n, upload.ThumbPrefix) {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		fmt.Fprintf(stdout, "files:   %s\n         (jetqa job results %d DIR downloads them; %s/api/v1/jobs/%d/file/NAME serves one)\n", strings.Join(names, " "), id, c.api, id)
	}
	return nil
}

// list prints the jobs that pass the filters, newest first.
func (c client) list(ctx context.Context, filters url.Values, asJSON bool, stdout io.Writer) error {
	for _, f := range []string{"since", "until"} {
		if v := filters.Get(f); v != "" {
			t, err := parseWhen(v, time.Now())
			if err != nil {
				return fmt.Errorf("--%s: %w", f, err)
			}
			filters.Set(f, t.UTC().Format(time.RFC3339))
		}
	}
	var raw []byte
	if err := c.do(ctx, http.MethodGet, "/api/v1/jobs?"+filters.Encode(), nil, &raw); err != nil {
		return err
	}
	if asJSON {
		_, err := stdout.Write(raw)
		return err
	}
	var out struct{ Jobs []api.JobView }
	if err := json.Unmarshal(raw, &out); err != nil {
		return err
	}
	for _, j := range out.Jobs {
		fmt.Fprintf(stdout, "%6d  %-10s %-16s %-12s %s  %s\n", j.ID, j.State, j.Result, j.Worker, j.Created.Local().Format("2006-01-02 15:04:05"), j.Name)
	}
	return nil
}

// workers prints the worker instances the server knows (GET /api/v1/workers).
func (c client) workers(ctx context.Context, asJSON bool, stdout io.Writer) error {
	var raw []byte
	if err := c.do(ctx, http.MethodGet, "/api/v1/workers", nil, &raw); err != nil {
		return err
	}
	if asJSON {
		_, err := stdout.Write(raw)
		return err
	}
	var out struct{ Workers []api.WorkerInfo }
	if err := json.Unmarshal(raw, &out); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tWORKER\tSTATUS\tJOB\tWORKER_CLASS\tLAST SEEN")
	for _, w := range out.Workers {
		job := "-"
		if w.JobID != 0 {
			job = strconv.FormatInt(w.JobID, 10)
		}
		fmt.Fprintf(tw, "%d\t%s:%d\t%s\t%s\t%s\t%s\n", w.ID, w.Host, w.Instance, w.Status, job, w.Properties["WORKER_CLASS"], w.Seen.Local().Format("2006-01-02 15:04:05"))
	}
	return tw.Flush()
}

// action cancels or restarts a job.
func (c client) action(ctx context.Context, id int64, what string, stdout io.Writer) error {
	var raw []byte
	if err := c.do(ctx, http.MethodPost, fmt.Sprintf("/api/v1/jobs/%d/%s", id, what), url.Values{}, &raw); err != nil {
		return err
	}
	var out struct{ ID int64 }
	if err := json.Unmarshal(raw, &out); err != nil {
		return fmt.Errorf("POST %s answered %q: %w", what, raw, err)
	}
	return c.print(stdout, raw, func() {
		if what == "restart" {
			fmt.Fprintf(stdout, "job %d restarted as job %d\n", id, out.ID)
		} else {
			fmt.Fprintf(stdout, "job %d: cancel requested\n", id)
		}
	})
}

func (c client) results(ctx context.Context, id int64, dir string, stdout io.Writer) error {
	j, err := c.job(ctx, id)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name := range j.Files {
		var data []byte
		if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/api/v1/jobs/%d/file/%s", id, url.PathEscape(name)), nil, &data); err != nil {
			return err
		}
		// Thumbnails go to .thumbs/ and the guest's uploads to ulogs/,
		// as os-autoinst writes them.
		target := filepath.Join(dir, filepath.Base(name))
		if sub, _, ok := strings.Cut(name, "/"); ok && (sub == schemas.ThumbsDir || sub == schemas.ULogsDir) {
			if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
				return err
			}
			target = filepath.Join(dir, sub, filepath.Base(name))
		}
		if err := os.WriteFile(target, data, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "%d files of job %d in %s\n", len(j.Files), id, dir)
	return nil
}

// watch prints the job's events as they happen, from its first, and ends
// when the job finishes: exit status 0 when it passed (or softfailed). It
// follows the API's event stream (Server-Sent Events), picking up where it
// was when the connection drops.
func (c client) watch(ctx context.Context, id int64, stdout io.Writer) error {
	view := newProgressView(stdout)
	defer view.Close()
	var after uint64
	result := ""
	for failures := 0; result == ""; {
		err := c.followEvents(ctx, id, after, func(e api.StreamedEvent, p schemas.Payload) {
			if prog, ok := p.(*schemas.AssetProgress); ok {
				view.Update(prog)
				return
			}
			after = e.Seq
			view.Println(fmt.Sprintf("%s  %-22s %s", e.Time.Local().Format("15:04:05.000"), e.Kind, summary(p)))
			if f, ok := p.(*schemas.JobFinished); ok {
				result = f.Result
			}
		})
		var status statusError
		switch {
		case result != "":
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &status):
			return err // no such job, or a bad request: trying again will not help
		case failures >= 30:
			return fmt.Errorf("job %d: the event stream of %s keeps failing: %v", id, c.api, err)
		default:
			failures++
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Second):
			}
		}
	}
	if result != schemas.ResultPassed && result != schemas.ResultSoftfailed {
		return exitCode(1)
	}
	return nil
}

// statusError is an answer of the API that is not 200.
type statusError struct{ msg string }

func (e statusError) Error() string { return e.msg }

// followEvents reads GET /api/v1/jobs/ID/events after the event of stream
// sequence after, calling fn with each, until the stream ends.
func (c client) followEvents(ctx context.Context, id int64, after uint64, fn func(api.StreamedEvent, schemas.Payload)) error {
	path := fmt.Sprintf("/api/v1/jobs/%d/events", id)
	if after > 0 {
		path += fmt.Sprintf("?after=%d", after)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.api+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("jetqa API at %s: %w (is `jetqa up` running?)", c.api, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		data, _ := io.ReadAll(resp.Body)
		var e struct{ Error string }
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return statusError{e.Error}
		}
		return statusError{fmt.Sprintf("GET %s: %s", path, resp.Status)}
	}
	lines := bufio.NewScanner(resp.Body)
	lines.Buffer(make([]byte, 64<<10), 16<<20)
	var data []byte
	for lines.Scan() {
		line := lines.Bytes()
		switch {
		case bytes.HasPrefix(line, []byte("data: ")):
			data = append(data, line[len("data: "):]...)
		case len(line) == 0 && len(data) > 0:
			var e struct {
				api.StreamedEvent
				Data json.RawMessage `json:"data"`
			}
			if err := json.Unmarshal(data, &e); err != nil {
				return fmt.Errorf("job %d: an event the API sent is unreadable: %w", id, err)
			}
			data = data[:0]
			p, err := schemas.Event{Kind: e.Kind, Job: e.Job, Time: e.Time, Data: e.Data}.Decode()
			if err != nil {
				continue // a kind this build does not know
			}
			fn(e.StreamedEvent, p)
		}
	}
	return lines.Err()
}

// summary is the one-line description of an event in `job watch`.
func summary(p schemas.Payload) string {
	switch e := p.(type) {
	case *schemas.JobCreated:
		keys := make([]string, 0, len(e.Settings))
		for k := range e.Settings {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, k+"="+e.Settings[k])
		}
		return strings.Join(parts, " ")
	case *schemas.JobAssigned:
		return "to " + e.Worker.String()
	case *schemas.JobUnassigned:
		return "from " + e.Worker.String() + ": " + e.Reason
	case *schemas.JobCancelRequested:
		return "by " + e.By
	case *schemas.JobRestarted:
		return fmt.Sprintf("as job %d (%s)", e.Clone, e.By)
	case *schemas.AssetFetched:
		how := "fetched"
		if e.Cached {
			how = "cached"
		}
		return fmt.Sprintf("%s=%s %s (%d bytes, sha256 %.12s)", e.Setting, e.Source, how, e.Size, e.SHA256)
	case *schemas.RepoCheckedOut:
		return fmt.Sprintf("%s=%s at %s", e.Setting, e.URL, e.Commit)
	case *schemas.JobReady:
		return "setup done on " + e.Worker.String()
	case *schemas.JobStarted:
		if e.TestSide != "" {
			return "VM booting (" + e.Accel + "), tests on " + e.TestSide
		}
		return "VM booting (" + e.Accel + ")"
	case *schemas.ModuleStarted:
		return e.Module
	case *schemas.ModuleFinished:
		s := fmt.Sprintf("%s %s in %s", e.Name, e.Result, e.Duration.Round(100*time.Millisecond))
		if e.Reason != "" {
			s += ": " + e.Reason
		}
		return s
	case *schemas.TestsFinished:
		return e.Result
	case *schemas.JobFinished:
		s := e.Result
		if e.Reason != "" {
			s += ": " + e.Reason
		}
		return s
	}
	return ""
}

// cmdWorkerList lists the worker instances through the API.
func cmdWorkerList(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("worker list", flag.ContinueOnError)
	fs.SetOutput(stderr)
	apiURL := fs.String("api", envOr("JETQA_API", "http://127.0.0.1:9526"), "jetqa API")
	fs.Func("host", "the server's API, as openqa-cli's --host: URL or HOST[:PORT]", func(v string) error { *apiURL = hostURL(v); return nil })
	asJSON := fs.Bool("json", false, "print the API's JSON")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	return client{api: strings.TrimRight(*apiURL, "/")}.workers(ctx, *asJSON, stdout)
}

// hostURL turns openqa-cli's --host (a URL, or a host with or without a
// port) into the API's URL; jetqa's API listens on 9526.
func hostURL(v string) string {
	if strings.Contains(v, "://") {
		return v
	}
	if _, _, err := net.SplitHostPort(v); err != nil {
		v = net.JoinHostPort(v, "9526")
	}
	return "http://" + v
}

package main

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"jetqa/schemas"
	"jetqa/streams"
)

const consumeUsage = `usage:
  jetqa watch --name N [--result R,…] [--distri D,…] [--json]
                                  print finished jobs as they finish
  jetqa consume webhook URL --name N [--secret-file F] [--api URL] [--result R,…] [--distri D,…]
                                  POST each finished job as JSON, signed, retried with back-off
  jetqa consume junit DIR --name N [--result R,…] [--distri D,…]
                                  write DIR/job-ID.xml (JUnit XML) for each finished job
N is a result consumer made by ` + "`jetqa admin consumer add N`" + ` on the server; its
credentials come with --creds (or $JETQA_CREDS). It misses nothing while it
is stopped: started again, it goes on with the first job it had not handled.`

// finishedJob is what a result consumer hands on about one finished job.
type finishedJob struct {
	ID       int64                  `json:"id"`
	Name     string                 `json:"name"`
	Result   string                 `json:"result"`
	Reason   string                 `json:"reason,omitempty"`
	Settings map[string]string      `json:"settings"`
	Modules  []schemas.ModuleResult `json:"modules"`
	// Files maps each result file to its URL (with --api) or blob key.
	Files    map[string]string `json:"files,omitempty"`
	Finished time.Time         `json:"t_finished"`
	// Sequence is the verdict's place in the job stream: the same for a
	// delivery repeated after a crash, so receivers can drop repeats.
	Sequence uint64 `json:"sequence"`
}

// resultConsumer is a running result consumer: its durable, its filters
// and what it does with each job.
type resultConsumer struct {
	name    string
	results []string
	distris []string
	api     string
}

func (c resultConsumer) wants(j finishedJob) bool {
	return (len(c.results) == 0 || slices.Contains(c.results, j.Result)) &&
		(len(c.distris) == 0 || slices.Contains(c.distris, j.Settings["DISTRI"]))
}

// run hands each finished job the filters let through to handle, in the
// order they finished, until ctx ends. A job is acknowledged once handle
// returns nil; an error brings it again after the consumer's retry delay.
func (c resultConsumer) run(ctx context.Context, bus *streams.Bus, handle func(context.Context, finishedJob) error) error {
	bus.UseOnly()
	return bus.Consume(ctx, streams.ResultsConfig(c.name), func(ctx context.Context, ev schemas.Event, p schemas.Payload, d streams.Delivery) error {
		fin, ok := p.(*schemas.JobFinished)
		if !ok {
			return nil
		}
		settings, err := bus.JobSettings(ctx, ev.Job)
		if err != nil {
			return err
		}
		j := finishedJob{
			ID: ev.Job, Name: schemas.JobCreated{Settings: settings}.Name(), Result: fin.Result, Reason: fin.Reason,
			Settings: settings, Modules: fin.Modules, Files: map[string]string{}, Finished: ev.Time, Sequence: d.Sequence,
		}
		for name, key := range fin.Files {
			if c.api != "" {
				key = strings.TrimSuffix(c.api, "/") + "/tests/" + strconv.FormatInt(ev.Job, 10) + "/file/" + name
			}
			j.Files[name] = key
		}
		if !c.wants(j) {
			return nil
		}
		return handle(ctx, j)
	})
}

// cmdWatch is `jetqa watch`.
func cmdWatch(args []string, stdout, stderr io.Writer) error {
	return consumeWith("watch", args, stderr, func(fs *flag.FlagSet) (func(context.Context, finishedJob) error, error) {
		asJSON := fs.Bool("json", false, "one JSON object per job")
		return func(_ context.Context, j finishedJob) error {
			if *asJSON {
				return json.NewEncoder(stdout).Encode(j)
			}
			_, err := fmt.Fprintf(stdout, "%d\t%s\t%s\t%s\n", j.ID, j.Result, j.Name, j.Reason)
			return err
		}, nil
	})
}

// cmdConsume is `jetqa consume webhook|junit`.
func cmdConsume(args []string, stdout, stderr io.Writer) error {
	if len(args) < 2 || (args[0] != "webhook" && args[0] != "junit") || strings.HasPrefix(args[1], "-") {
		fmt.Fprintln(stderr, consumeUsage)
		return exitCode(2)
	}
	kind, target := args[0], args[1]
	return consumeWith("consume "+kind, args[2:], stderr, func(fs *flag.FlagSet) (func(context.Context, finishedJob) error, error) {
		if kind == "junit" {
			return func(_ context.Context, j finishedJob) error { return writeJUnit(target, j) }, nil
		}
		secretFile := fs.String("secret-file", "", "file holding the secret that signs each body (X-Jetqa-Signature: sha256=HMAC)")
		// Read once, at the first job: the flag is parsed after this.
		secret := sync.OnceValues(func() ([]byte, error) {
			if *secretFile == "" {
				return nil, nil
			}
			s, err := os.ReadFile(*secretFile)
			if err != nil {
				return nil, fmt.Errorf("--secret-file: %w", err)
			}
			return bytes.TrimSpace(s), nil
		})
		return func(ctx context.Context, j finishedJob) error {
			key, err := secret()
			if err != nil {
				return err
			}
			return webhook{url: target, secret: key, log: stderr}.deliver(ctx, j)
		}, nil
	})
}

// consumeWith parses a result consumer's flags (with those addFlags adds),
// connects and runs it until a signal.
func consumeWith(what string, args []string, stderr io.Writer, addFlags func(*flag.FlagSet) (func(context.Context, finishedJob) error, error)) error {
	fs := flag.NewFlagSet(what, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, consumeUsage); fs.PrintDefaults() }
	var r remote
	remoteFlags(fs, &r, "consumer")
	var c resultConsumer
	fs.StringVar(&c.name, "name", "", "the result consumer (default: the one the credentials are for)")
	results := fs.String("result", "", "only jobs with these results, comma-separated (passed, failed, …)")
	distris := fs.String("distri", "", "only jobs of these DISTRIs, comma-separated")
	fs.StringVar(&c.api, "api", os.Getenv("JETQA_API"), "jetqa API whose URLs the files are given as")
	handle, err := addFlags(fs)
	if err != nil {
		return err
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	c.results, c.distris = splitList(*results), splitList(*distris)
	d, id, err := r.dial()
	if err != nil {
		return err
	}
	if c.name == "" && id != nil && id.Role == streams.RoleConsumer {
		c.name = id.Name
	}
	if c.name == "" {
		return fmt.Errorf("%s: give --name, the result consumer made by `jetqa admin consumer add NAME`", what)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	bus, err := streams.ConnectTo(ctx, d, what+"@"+c.name, nil)
	if err != nil {
		return err
	}
	defer bus.Close()
	err = c.run(ctx, bus, handle)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return fmt.Errorf("no result consumer %q: make it on the server with `jetqa admin consumer add %s`", c.name, c.name)
	}
	return err
}

// webhook POSTs a finished job as JSON to url.
type webhook struct {
	url    string
	secret []byte
	log    io.Writer
}

// deliver POSTs j until the receiver answers 2xx, waiting 1 s, 2 s, 4 s …
// up to 5 minutes between tries, for as long as ctx lasts: a receiver
// down for a day gets every job when it is back, in order.
func (w webhook) deliver(ctx context.Context, j finishedJob) error {
	body, err := json.Marshal(j)
	if err != nil {
		return err
	}
	wait := time.Second
	for {
		err := w.post(ctx, j, body)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		fmt.Fprintf(w.log, "webhook %s, job %d: %v; again in %s\n", w.url, j.ID, err, wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Minute)
	}
}

func (w webhook) post(ctx context.Context, j finishedJob, body []byte) error {
	// A POST under way when the consumer is stopped is finished, not cut:
	// cut, the receiver may have taken it while the consumer cannot know,
	// and would get it again.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "jetqa-webhook")
	req.Header.Set("X-Jetqa-Event", "job.finished")
	req.Header.Set("X-Jetqa-Delivery", strconv.FormatUint(j.Sequence, 10))
	if w.secret != nil {
		mac := hmac.New(sha256.New, w.secret)
		mac.Write(body)
		req.Header.Set("X-Jetqa-Signature", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("answered %s", resp.Status)
	}
	return nil
}

// JUnit XML as CI systems read it: one suite per job, one case per module.
type junitSuites struct {
	XMLName xml.Name     `xml:"testsuites"`
	Suites  []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name       string          `xml:"name,attr"`
	ID         int64           `xml:"id,attr"`
	Tests      int             `xml:"tests,attr"`
	Failures   int             `xml:"failures,attr"`
	Skipped    int             `xml:"skipped,attr"`
	Time       string          `xml:"time,attr"`
	Timestamp  string          `xml:"timestamp,attr"`
	Properties []junitProperty `xml:"properties>property"`
	Cases      []junitCase     `xml:"testcase"`
}

type junitProperty struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitMessage `xml:"failure,omitempty"`
	Skipped   *junitMessage `xml:"skipped,omitempty"`
}

type junitMessage struct {
	Message string `xml:"message,attr,omitempty"`
	Type    string `xml:"type,attr,omitempty"`
}

// writeJUnit writes dir/job-ID.xml for j, whole or not at all.
func writeJUnit(dir string, j finishedJob) error {
	suite := junitSuite{Name: j.Name, ID: j.ID, Timestamp: j.Finished.UTC().Format(time.RFC3339)}
	var total time.Duration
	for _, m := range j.Modules {
		c := junitCase{Name: m.Name, Classname: j.Name, Time: seconds(m.Duration)}
		total += m.Duration
		switch m.Result {
		case schemas.ResultFailed, schemas.ResultIncomplete:
			c.Failure = &junitMessage{Message: cmp.Or(m.Reason, "module "+m.Result), Type: m.Result}
			suite.Failures++
		case schemas.ResultSkipped, schemas.ResultNone:
			c.Skipped = &junitMessage{Message: m.Result}
			suite.Skipped++
		}
		suite.Cases = append(suite.Cases, c)
	}
	if len(j.Modules) == 0 || j.Result == schemas.ResultIncomplete && suite.Failures == 0 {
		// A job that ended before or between its modules is a failure too.
		suite.Cases = append(suite.Cases, junitCase{Name: "job", Classname: j.Name, Time: "0",
			Failure: failureIf(j.Result != schemas.ResultPassed && j.Result != schemas.ResultSoftfailed, j)})
		if suite.Cases[len(suite.Cases)-1].Failure != nil {
			suite.Failures++
		}
	}
	suite.Tests, suite.Time = len(suite.Cases), seconds(total)
	suite.Properties = []junitProperty{{"result", j.Result}, {"reason", j.Reason}}
	for _, k := range []string{"DISTRI", "VERSION", "FLAVOR", "ARCH", "BUILD", "TEST", "MACHINE"} {
		if v := j.Settings[k]; v != "" {
			suite.Properties = append(suite.Properties, junitProperty{k, v})
		}
	}
	data, err := xml.MarshalIndent(junitSuites{Suites: []junitSuite{suite}}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".job-*.xml")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append([]byte(xml.Header), data...)); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, fmt.Sprintf("job-%d.xml", j.ID)))
}

func failureIf(failed bool, j finishedJob) *junitMessage {
	if !failed {
		return nil
	}
	return &junitMessage{Message: cmp.Or(j.Reason, "job "+j.Result), Type: j.Result}
}

func seconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) }

package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// cmdSchedule schedules a product, as `openqa-cli api -X POST isos` does:
// the jobs the job templates give for DISTRI, VERSION, FLAVOR and ARCH.
func cmdSchedule(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("schedule", flag.ContinueOnError)
	fs.SetOutput(stderr)
	apiURL := fs.String("api", envOr("JETQA_API", "http://127.0.0.1:9526"), "jetqa API")
	fs.Func("host", "the server's API, as openqa-cli's --host: URL or HOST[:PORT]", func(v string) error { *apiURL = hostURL(v); return nil })
	asJSON := fs.Bool("json", false, "print the API's JSON answer")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	form := url.Values{}
	for _, a := range fs.Args() {
		k, v, ok := strings.Cut(a, "=")
		if !ok || k == "" {
			return fmt.Errorf("product setting %q: write KEY=VALUE", a)
		}
		form.Set(k, v)
	}
	if len(form) == 0 {
		return fmt.Errorf("give the product as DISTRI=… VERSION=… FLAVOR=… ARCH=… BUILD=… ISO=…")
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	c := client{api: strings.TrimRight(*apiURL, "/"), asJSON: *asJSON}
	var raw []byte
	if err := c.do(ctx, http.MethodPost, "/api/v1/isos", form, &raw); err != nil {
		return err
	}
	if *asJSON {
		_, err := stdout.Write(raw)
		return err
	}
	var out struct {
		Count  int
		IDs    []int64
		Failed []struct {
			Name  string `json:"job_name"`
			Error string `json:"error_message"`
		}
		Error     string
		Obsoleted []int64
	}
	if err := json.Unmarshal(raw, &out); err != nil {
		return fmt.Errorf("POST /api/v1/isos answered %q: %w", raw, err)
	}
	if out.Error != "" {
		return fmt.Errorf("%s", out.Error)
	}
	fmt.Fprintf(stdout, "%d jobs created:\n", out.Count)
	for _, id := range out.IDs {
		fmt.Fprintf(stdout, " - %s/tests/%d\n", c.api, id)
	}
	if len(out.Obsoleted) > 0 {
		fmt.Fprintf(stdout, "%d older jobs of the product obsoleted: %v\n", len(out.Obsoleted), out.Obsoleted)
	}
	for _, f := range out.Failed {
		fmt.Fprintf(stderr, "not created: %s: %s\n", f.Name, f.Error)
	}
	if len(out.Failed) > 0 {
		return exitCode(1)
	}
	return nil
}

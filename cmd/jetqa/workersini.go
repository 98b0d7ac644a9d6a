package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// workersINI is a worker host's configuration in openQA's workers.ini
// format: [global] with HOST (the servers' NATS URLs, space-separated),
// WORKER_CLASS, CACHEDIRECTORY, CACHELIMIT and CACHEWORKERS; a section
// per server URL with CREDENTIALS and TLS_CA; a section per instance
// number whose keys override [global] for that instance.
type workersINI struct {
	sections map[string]map[string]string
}

func readWorkersINI(path string) (*workersINI, error) {
	// Names in any case, as openQA takes them.
	sections, err := readINI(path, "global", strings.ToUpper)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	return &workersINI{sections: sections}, nil
}

// get is key in section, or "".
func (w *workersINI) get(section, key string) string { return w.sections[section][key] }

// instance is key for one instance: its own section first, then [global].
func (w *workersINI) instance(n int, key string) string {
	if v, ok := w.sections[strconv.Itoa(n)][key]; ok {
		return v
	}
	return w.get("global", key)
}

// apply fills what the command line did not set, and returns the
// servers to serve: r alone when --nats was given, else one per HOST
// entry with its section's CREDENTIALS and TLS_CA.
func (w *workersINI) apply(c *workerConfig, r remote, set map[string]bool) ([]remote, error) {
	servers := []remote{r}
	if hosts := strings.Fields(w.get("global", "HOST")); len(hosts) > 0 && !set["nats"] {
		servers = nil
		for _, h := range hosts {
			srv := remote{nats: h, creds: w.get(h, "CREDENTIALS"), ca: w.get(h, "TLS_CA")}
			if len(hosts) == 1 {
				// One server: the command line's --creds and --tls-ca win.
				if set["creds"] || srv.creds == "" {
					srv.creds = r.creds
				}
				if set["tls-ca"] || srv.ca == "" {
					srv.ca = r.ca
				}
			} else if srv.creds == "" {
				return nil, fmt.Errorf("--config: HOST names %d servers; give each its own [%s] section with CREDENTIALS", len(hosts), h)
			}
			servers = append(servers, srv)
		}
	}
	if v := w.get("global", "WORKER_CLASS"); v != "" && !set["worker-class"] {
		c.WorkerClass = v
	}
	if v := w.get("global", "FORBID_SETTINGS"); v != "" && !set["forbid-settings"] {
		c.ForbidSettings = v
	}
	if v := w.get("global", "ASSET_PATHS"); v != "" && !set["asset-paths"] {
		c.AssetPaths = v
	}
	if v := w.get("global", "FORBID_NETWORKS"); v != "" && !set["forbid-networks"] {
		c.ForbidNetworks = v
	}
	if v := w.get("global", "CACHEDIRECTORY"); v != "" && !set["cache-dir"] {
		c.CacheDir = v
	}
	if v := w.get("global", "CACHELIMIT"); v != "" && !set["cache-limit"] {
		limit, err := strconv.ParseFloat(v, 64)
		if err != nil || !(limit > 0) || math.IsInf(limit, 0) {
			return nil, fmt.Errorf("--config: CACHELIMIT = %q: give GiB as a positive number", v)
		}
		c.CacheLimitGiB = limit
	}
	if v := w.get("global", "CACHEWORKERS"); v != "" && !set["cache-workers"] {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--config: CACHEWORKERS = %q: give a number of at least 1", v)
		}
		c.CacheWorkers = n
	}
	c.ClassOf = func(n int) string { return w.instance(n, "WORKER_CLASS") }
	return servers, nil
}

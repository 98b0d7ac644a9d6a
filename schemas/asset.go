package schemas

import (
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
)

// AssetRegistered says an asset (ISO, disk image, kernel, …) is stored on
// the server under a name that jobs can use in ISO=, HDD_1=, KERNEL=, ….
// Registering the same name again replaces it for later jobs.
type AssetRegistered struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
	Size   int64  `json:"size"`
	// Source is where the bytes came from: a file name or a URL.
	Source string `json:"source,omitempty"`
}

func (AssetRegistered) Kind() string { return "asset.registered.v1" }

// assetName is a plain file name a job may publish an asset under.
var assetName = regexp.MustCompile(`^[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,199}$`)

// CheckAssetName says whether a job may publish an asset named name: the
// worker checks it before the VM starts, the server when it stores it.
func CheckAssetName(name string) error {
	if !assetName.MatchString(name) {
		return fmt.Errorf("%q is not a plain file name (letters, digits, . _ + -)", name)
	}
	return nil
}

// AssetProgress reports how far a worker host got fetching a job's asset.
// It is sent a few times a second while bytes flow, and once at the end.
type AssetProgress struct {
	Worker  WorkerRef `json:"worker"`
	Job     int64     `json:"job"`
	Setting string    `json:"setting"`
	Source  string    `json:"source"`
	Done    int64     `json:"done"`
	Total   int64     `json:"total"` // -1 when unknown
}

func (e AssetProgress) Target() WorkerRef { return e.Worker }

func (AssetProgress) Kind() string { return "asset.progress.v1" }

// CacheStatus is a snapshot of a worker host's asset cache, sent when it
// changes, for `jetqa cache status`.
type CacheStatus struct {
	Host         string        `json:"host"`
	Dir          string        `json:"dir"`
	LimitBytes   int64         `json:"limit_bytes"`
	TotalBytes   int64         `json:"total_bytes"`
	PartialBytes int64         `json:"partial_bytes"`
	Entries      []CachedAsset `json:"entries"`
	Hits         int64         `json:"hits"`
	Misses       int64         `json:"misses"`
	Downloads    int64         `json:"downloads"`
	BytesFetched int64         `json:"bytes_fetched"`
}

// CachedAsset is one entry of a worker host's cache.
type CachedAsset struct {
	Source  string    `json:"source"`
	SHA256  string    `json:"sha256"`
	Size    int64     `json:"size"`
	LastUse time.Time `json:"last_use"`
	Users   int       `json:"users"` // jobs using it: never evicted while > 0
}

// Target is instance 0 of the host: the cache belongs to the whole host.
func (e CacheStatus) Target() WorkerRef { return WorkerRef{Host: e.Host} }

func (CacheStatus) Kind() string { return "cache.status.v1" }

// AssetPrefetchRequested asks a worker host to bring an asset into its
// cache ahead of the jobs that will need it (`jetqa asset fetch`).
type AssetPrefetchRequested struct {
	Host   string `json:"host"`
	ID     string `json:"id"`
	Source string `json:"source"` // a registered name or a URL, as in a job's settings
	SHA256 string `json:"sha256,omitempty"`
}

func (e AssetPrefetchRequested) Target() WorkerRef { return WorkerRef{Host: e.Host} }

func (AssetPrefetchRequested) Kind() string { return "asset.prefetch_requested.v1" }

// AssetPrefetched answers an AssetPrefetchRequested.
type AssetPrefetched struct {
	Host   string `json:"host"`
	ID     string `json:"id"`
	Source string `json:"source"`
	SHA256 string `json:"sha256,omitempty"`
	Size   int64  `json:"size,omitempty"`
	Hit    bool   `json:"hit,omitempty"` // it was in the cache already
	Error  string `json:"error,omitempty"`
}

func (e AssetPrefetched) Target() WorkerRef { return WorkerRef{Host: e.Host} }

func (AssetPrefetched) Kind() string { return "asset.prefetched.v1" }

// AssetsByType names a job's assets by openQA's asset types, as its API
// shows them: iso (ISO, ISO_n), hdd (HDD_n, UEFI_PFLASH_VARS but for a
// host path), repo
// (REPO_n), other (KERNEL, INITRD, ASSET_n).
func AssetsByType(settings map[string]string) map[string][]string {
	out := map[string][]string{}
	for k, v := range settings {
		if v == "" {
			continue
		}
		var typ string
		switch {
		case k == "ISO" || numbered(k, "ISO_"):
			typ = "iso"
		case numbered(k, "HDD_") || k == "UEFI_PFLASH_VARS" && !strings.HasPrefix(v, "/"):
			typ = "hdd"
		case numbered(k, "REPO_"):
			typ = "repo"
		case k == "KERNEL" || k == "INITRD" || numbered(k, "ASSET_"):
			typ = "other"
		default:
			continue
		}
		out[typ] = append(out[typ], path.Base(v))
	}
	for _, names := range out {
		slices.Sort(names)
	}
	return out
}

func numbered(k, prefix string) bool {
	n, ok := strings.CutPrefix(k, prefix)
	if !ok || n == "" {
		return false
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

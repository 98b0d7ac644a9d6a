package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// On disk, an entry is two files in Dir:
//
//	<key hash>-<sha256 prefix>-<base name>        the asset, read-only
//	<key hash>-<sha256 prefix>-<base name>.entry  its sidecar (JSON)
//
// The sidecar is written, by temp file and rename, only after the asset
// was verified and renamed into place, so a sidecar never describes bytes
// that were not checked; its modification time is the entry's last use.
// A download in progress, or one interrupted, is <key hash>-<base>.part.
// Open trusts nothing else: an asset without a sidecar, or whose size is
// not the sidecar's, is deleted.
const (
	partSuffix    = ".part"
	sidecarSuffix = ".entry"
	tempSuffix    = ".tmp"
)

// dataFile matches the names of asset files, so that Open deletes only
// its own orphans if Dir holds anything else.
var dataFile = regexp.MustCompile(`^[0-9a-f]{16}-[0-9a-f]{16}-`)

func ourSuffix(name string) bool {
	return strings.HasSuffix(name, partSuffix) || strings.HasSuffix(name, sidecarSuffix) || strings.HasSuffix(name, tempSuffix)
}

// sidecar describes one verified asset.
type sidecar struct {
	Key    string    `json:"key"`
	Source string    `json:"source"`
	SHA256 string    `json:"sha256"`
	Size   int64     `json:"size"`
	Stored time.Time `json:"stored"`
	// Boot is the kernel boot the asset was written in. Assets are not
	// fsynced (that would double the cost of a download); after a power
	// cut a file can keep its size but lose its bytes, so an entry from
	// an earlier boot is re-hashed once before it is served, and then
	// marked Durable: what was read back came from the disk.
	Boot    string `json:"boot,omitempty"`
	Durable bool   `json:"durable,omitempty"`
}

func keyHash(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:8])
}

func partName(key, source string) string {
	return keyHash(key) + "-" + baseName(source) + partSuffix
}

func dataName(key, sum, source string) string {
	return keyHash(key) + "-" + sum[:16] + "-" + baseName(source)
}

// baseName is the last path element of a URL or name, reduced to
// characters safe in a file name, so that the cache directory stays
// readable (…-openSUSE-Tumbleweed-DVD-x86_64.iso).
func baseName(source string) string {
	s := source
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	s = strings.TrimRight(s, "/")
	if i := strings.LastIndex(s, "/"); i >= 0 {
		s = s[i+1:]
	}
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_' || c == '+') {
			b[i] = '_'
		}
	}
	s = string(b)
	if len(s) > 80 {
		s = s[len(s)-80:]
	}
	s = strings.TrimLeft(s, ".")
	if ourSuffix(s) {
		s += "_"
	}
	if s == "" {
		s = "asset"
	}
	return s
}

// writeSidecar writes the sidecar of the asset at path by temp file and
// rename, and sets its modification time to lastUse.
func writeSidecar(path string, meta sidecar, lastUse time.Time) error {
	b, err := json.MarshalIndent(meta, "", "  ")
	if err != nil {
		return err
	}
	name := path + sidecarSuffix
	tmp := name + tempSuffix
	if err := os.WriteFile(tmp, append(b, '\n'), 0o644); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Chtimes(tmp, lastUse, lastUse); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// readSidecar reads the sidecar of the asset at path and checks that it
// can describe that file.
func readSidecar(path string) (sidecar, time.Time, error) {
	var meta sidecar
	name := path + sidecarSuffix
	fi, err := os.Stat(name)
	if err != nil {
		return meta, time.Time{}, err
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return meta, time.Time{}, err
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		return meta, time.Time{}, err
	}
	switch {
	case meta.Key == "":
		return meta, time.Time{}, errors.New("no key")
	case !isSHA256(meta.SHA256):
		return meta, time.Time{}, fmt.Errorf("bad SHA-256 %q", meta.SHA256)
	case meta.Size < 0:
		return meta, time.Time{}, fmt.Errorf("bad size %d", meta.Size)
	case !strings.HasPrefix(filepath.Base(path), keyHash(meta.Key)+"-"+meta.SHA256[:16]+"-"):
		return meta, time.Time{}, errors.New("it names another asset than its file")
	}
	return meta, fi.ModTime(), nil
}

func isSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// bootID tells one run of the kernel from the next; "" where it is not
// known, and then no entry is trusted without a re-hash after a restart.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

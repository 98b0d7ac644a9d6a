package main

import (
	"fmt"
	"maps"
	"math"
	"sort"
	"strings"
	"testing"
)

// FuzzINI reads client.conf and workers.ini text from anywhere: it never
// panics, keeps names and values trimmed, and what it read, written back
// as INI, reads the same. A workers.ini it reads applies to a worker's
// configuration or is refused with an error, and never gives a cache
// limit that is not a positive number.
func FuzzINI(f *testing.F) {
	for _, seed := range []string{
		"[localhost:9526]\nkey = 0123\nsecret = abcd\n",
		"# comment\n; other\n[global]\nHOST = nats://a:4222 nats://b:4222\nWORKER_CLASS = qemu_x86_64\nCACHELIMIT = 50\n[nats://a:4222]\nCREDENTIALS = a.creds\n[1]\nWORKER_CLASS = special\n",
		"CACHELIMIT = NaN\n", "CACHEWORKERS = 0\n", "[x]\n=\n", "[]\n a = b = c \n",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, text string) {
		for _, implicit := range []string{"", "global"} {
			sections, err := parseINI(strings.NewReader(text), "fuzz.ini", implicit, nil)
			if err != nil {
				continue
			}
			var out strings.Builder
			for _, name := range sortedKeys(sections) {
				fmt.Fprintf(&out, "[%s]\n", name)
				for _, k := range sortedKeys(sections[name]) {
					v := sections[name][k]
					if k != strings.TrimSpace(k) || v != strings.TrimSpace(v) {
						t.Fatalf("untrimmed %q = %q", k, v)
					}
					fmt.Fprintf(&out, "%s = %s\n", k, v)
				}
			}
			again, err := parseINI(strings.NewReader(out.String()), "again.ini", implicit, nil)
			if err != nil {
				// A section name or key that cannot be written back
				// (a bracket, a comment mark, an "=") is no loss of
				// meaning: check only what can be.
				continue
			}
			if !maps.EqualFunc(sections, again, maps.Equal) {
				t.Fatalf("read %v, written back and read again %v", sections, again)
			}
		}
		sections, err := parseINI(strings.NewReader(text), "workers.ini", "global", strings.ToUpper)
		if err != nil {
			return
		}
		var c workerConfig
		if _, err := (&workersINI{sections: sections}).apply(&c, remote{}, map[string]bool{}); err == nil && c.CacheLimitGiB != 0 && (!(c.CacheLimitGiB > 0) || math.IsInf(c.CacheLimitGiB, 0)) {
			t.Fatalf("cache limit %v taken", c.CacheLimitGiB)
		}
	})
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

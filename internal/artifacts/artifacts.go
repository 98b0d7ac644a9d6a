// Package artifacts is where tests keep what a person looks at after a
// run: browser screenshots, the logs of the jetqa processes a test
// started.
package artifacts

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Dir makes and returns the test's artifacts directory:
// $JETQA_ARTIFACTS/<test name> (`make test` sets it to artifacts/ in the
// checkout), else jetqa-artifacts/<test name> in the temporary directory.
// A subtest's name has slashes: each level is a directory.
func Dir(t testing.TB) (string, error) {
	dir := os.Getenv("JETQA_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(os.TempDir(), "jetqa-artifacts")
	}
	for _, part := range strings.Split(t.Name(), "/") {
		dir = filepath.Join(dir, FileName(part))
	}
	return dir, os.MkdirAll(dir, 0o755)
}

// FileName keeps letters, digits, '-', '_' and '.' of s, so that a test's
// or an artifact's name is one safe path element.
func FileName(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r == '.' || '0' <= r && r <= '9' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' {
			return r
		}
		return '_'
	}, s)
	if strings.Trim(s, ".") == "" {
		return "_" + s
	}
	return s
}

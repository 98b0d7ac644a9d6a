package schemas

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// Limits on files read from a test or needle repository, which anybody
// who can post a job may name: a test file is text, a needle's image a
// screen.
const (
	MaxTestFileBytes   = 16 << 20
	MaxNeedleFileBytes = 64 << 20
)

// ReadRepoFile reads path, a file of the repository checked out at root,
// refusing what a hostile repository could hide there: a symbolic link
// that leads out of root (to the host's files), anything that is not a
// regular file (a link to /dev/zero, a FIFO), and a file over limit bytes.
func ReadRepoFile(root, path string, limit int64) ([]byte, error) {
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return nil, err
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, err
	}
	if rel, err := filepath.Rel(realRoot, real); err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
		return nil, fmt.Errorf("%s is a link to %s, outside the repository: refusing it", path, real)
	}
	// Not blocking: opening a FIFO would wait for a writer for good.
	f, err := os.OpenFile(real, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file (%s): refusing it", path, fi.Mode().Type())
	}
	if fi.Size() > limit {
		return nil, fmt.Errorf("%s has %d bytes, over the %d a repository's file may have", path, fi.Size(), limit)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, errors.New(path + " grew past its limit while read")
	}
	return data, nil
}

// Package blobs is where jetqa keeps the large things a job leaves behind
// (screenshots, logs, videos, result details): a Store, with one
// implementation on the JetStream object store (the embedded default) and
// one on S3. The server's authority writes to it; the API reads from it.
package blobs

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"regexp"
	"time"
)

// ErrNotFound is returned for a key the store does not hold.
var ErrNotFound = errors.New("blob not found")

// ErrCorrupt is returned by Put when what was read does not match the
// size or the SHA-256 it was announced with: nothing is stored.
var ErrCorrupt = errors.New("blob does not match its announced size or hash")

// Info describes one stored blob.
type Info struct {
	Key  string
	Size int64
	// SHA256 is the hex SHA-256 of the content.
	SHA256   string
	Modified time.Time
}

// Store keeps blobs by key. Every implementation passes the conformance
// suite in blobstest.
type Store interface {
	// Put stores size bytes read from r under key, streaming them with
	// bounded memory. If sha256 is set (hex), the content must hash to
	// it, or Put fails with ErrCorrupt and stores nothing; a key is never
	// seen half written. Putting a key again replaces it.
	Put(ctx context.Context, key string, r io.Reader, size int64, sha256 string) (Info, error)
	// Open streams a blob from offset on; the caller closes it.
	Open(ctx context.Context, key string, offset int64) (io.ReadCloser, Info, error)
	// Stat describes a blob, or fails with ErrNotFound.
	Stat(ctx context.Context, key string) (Info, error)
	// Delete removes a blob; deleting a missing one is not an error.
	Delete(ctx context.Context, key string) error
	// List calls fn for every blob whose key starts with prefix, in key
	// order, until fn returns an error.
	List(ctx context.Context, prefix string, fn func(Info) error) error
	// Describe names the store for logs and errors.
	Describe() string
}

// ContentKey is where content with the given hex SHA-256 is stored: the
// same screenshot of many steps and jobs is one blob.
func ContentKey(sum string) string { return "sha256/" + sum[:2] + "/" + sum }

var contentKeyRe = regexp.MustCompile(`^sha256/([0-9a-f]{2})/([0-9a-f]{64})$`)

// ContentSum is the hex SHA-256 a content key names, or "" for another key.
func ContentSum(key string) string {
	m := contentKeyRe.FindStringSubmatch(key)
	if m == nil || m[2][:2] != m[1] {
		return ""
	}
	return m[2]
}

// verified reads exactly size bytes from r, hashing them, and fails the
// read that reaches the end if the count or the hash is not what was
// announced: a store writing from it then aborts instead of keeping it.
type verified struct {
	r    io.Reader
	left int64
	sum  hash.Hash
	want string
	key  string
}

func verify(key string, r io.Reader, size int64, sha string) *verified {
	return &verified{r: r, left: size, sum: sha256.New(), want: sha, key: key}
}

func (v *verified) Read(p []byte) (int, error) {
	if v.left <= 0 {
		// One byte more than announced is corruption too.
		var one [1]byte
		if n, _ := io.ReadFull(v.r, one[:]); n > 0 {
			return 0, fmt.Errorf("%s: %w: more than the announced bytes", v.key, ErrCorrupt)
		}
		if err := v.check(); err != nil {
			return 0, err
		}
		return 0, io.EOF
	}
	if int64(len(p)) > v.left {
		p = p[:v.left]
	}
	n, err := v.r.Read(p)
	v.sum.Write(p[:n])
	v.left -= int64(n)
	if err == io.EOF {
		if v.left > 0 {
			return n, fmt.Errorf("%s: %w: %d bytes short", v.key, ErrCorrupt, v.left)
		}
		if cerr := v.check(); cerr != nil {
			return n, cerr
		}
	}
	return n, err
}

func (v *verified) check() error {
	if v.want != "" && v.hex() != v.want {
		return fmt.Errorf("%s: %w: content hashes to %s, not %s", v.key, ErrCorrupt, v.hex(), v.want)
	}
	return nil
}

func (v *verified) hex() string { return hex.EncodeToString(v.sum.Sum(nil)) }

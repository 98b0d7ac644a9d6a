package cache

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
)

// Source is where an asset's bytes come from: an HTTP(S) URL, or (supplied
// by the caller) the server's object store.
type Source interface {
	// Key names the asset in the cache, stable across restarts
	// (e.g. "url:"+url, or "obj:"+name+"@"+sha256).
	Key() string
	// Open returns the bytes from offset on, and the total size of the
	// asset if known (-1 if not). A source that cannot start at offset
	// returns ErrNoResume, and the cache asks again from 0. Errors that
	// trying again cannot fix are marked with Permanent.
	Open(ctx context.Context, offset int64) (io.ReadCloser, int64, error)
	// String names the asset in messages: the URL or name.
	String() string
}

// ErrNoResume is returned by Source.Open when it cannot continue at the
// offset asked for; the cache discards what it has and starts from 0.
var ErrNoResume = errors.New("source cannot resume at this offset")

// ErrPermanent matches (with errors.Is) every error that retrying will not
// fix: a missing asset, a checksum that does not match, an asset larger
// than the cache, a full disk.
var ErrPermanent = errors.New("permanent")

type permanentError struct{ err error }

func (e permanentError) Error() string        { return e.err.Error() }
func (e permanentError) Unwrap() error        { return e.err }
func (e permanentError) Is(target error) bool { return target == ErrPermanent }

// Permanent marks err as one that retrying will not fix.
func Permanent(err error) error {
	if err == nil || errors.Is(err, ErrPermanent) {
		return err
	}
	return permanentError{err}
}

// HTTPSource is an asset at an http(s) URL. It resumes with
// "Range: bytes=N-" (and If-Range once it has seen a validator, so that
// a file changed on the server is fetched again from the start rather
// than spliced); a 200 answer to a range request means starting again
// from 0. Other answers than 200/206 name the URL and the status; they are
// permanent except 408, 429 and 5xx, which a server or proxy may recover
// from. Network errors are retried, except an unknown host name and a
// certificate that does not verify. A nil client means
// http.DefaultClient.
func HTTPSource(url string, client *http.Client) Source {
	if client == nil {
		client = http.DefaultClient
	}
	return &httpSource{url: url, client: client}
}

type httpSource struct {
	url    string
	client *http.Client

	mu        sync.Mutex
	validator string // strong ETag or Last-Modified of the last full answer
}

func (s *httpSource) Key() string    { return "url:" + s.url }
func (s *httpSource) String() string { return s.url }

func (s *httpSource) Open(ctx context.Context, offset int64) (io.ReadCloser, int64, error) {
	u, err := url.Parse(s.url)
	if err != nil {
		return nil, -1, Permanent(fmt.Errorf("bad URL %q: %w", s.url, err))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, -1, Permanent(fmt.Errorf("%s: not an http(s) URL", s.url))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, -1, Permanent(fmt.Errorf("%s: %w", s.url, err))
	}
	// Ranges count bytes of the file, not of a compressed transfer.
	req.Header.Set("Accept-Encoding", "identity")
	if offset > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
		s.mu.Lock()
		if s.validator != "" {
			req.Header.Set("If-Range", s.validator)
		}
		s.mu.Unlock()
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, -1, classifyNetError(err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		if offset > 0 {
			resp.Body.Close()
			return nil, -1, fmt.Errorf("%s: answered a range request with the whole file: %w", s.url, ErrNoResume)
		}
		s.remember(resp.Header)
		return resp.Body, resp.ContentLength, nil
	case http.StatusPartialContent:
		start, total, ok := parseContentRange(resp.Header.Get("Content-Range"))
		if !ok || start != offset {
			resp.Body.Close()
			return nil, -1, fmt.Errorf("%s: asked for bytes from %d, got Content-Range %q: %w", s.url, offset, resp.Header.Get("Content-Range"), ErrNoResume)
		}
		return resp.Body, total, nil
	case http.StatusRequestedRangeNotSatisfiable:
		resp.Body.Close()
		// "bytes */N": with N == offset, all bytes are already there.
		if _, total, ok := parseContentRange(resp.Header.Get("Content-Range")); ok && total == offset && offset > 0 {
			return io.NopCloser(strings.NewReader("")), total, nil
		}
		return nil, -1, fmt.Errorf("%s: range from %d not satisfiable: %w", s.url, offset, ErrNoResume)
	}
	resp.Body.Close()
	err = fmt.Errorf("%s: HTTP %s", s.url, resp.Status)
	if resp.StatusCode == http.StatusRequestTimeout || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500 {
		return nil, -1, err
	}
	return nil, -1, Permanent(err)
}

// remember keeps what If-Range can compare: a strong ETag, else the
// modification time.
func (s *httpSource) remember(h http.Header) {
	v := h.Get("ETag")
	if v == "" || strings.HasPrefix(v, "W/") {
		v = h.Get("Last-Modified")
	}
	s.mu.Lock()
	s.validator = v
	s.mu.Unlock()
}

// classifyNetError marks the network errors that retrying cannot fix. The
// error of http.Client already names the URL.
func classifyNetError(err error) error {
	var dns *net.DNSError
	var cert *tls.CertificateVerificationError
	var header tls.RecordHeaderError
	switch {
	case errors.As(err, &dns) && dns.IsNotFound,
		errors.As(err, &cert),
		errors.As(err, &header):
		return Permanent(err)
	}
	return err
}

// parseContentRange reads "bytes START-END/TOTAL" and "bytes */TOTAL";
// TOTAL may be "*" (unknown: -1). start is -1 for the second form.
func parseContentRange(v string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(v, "bytes ")
	if !found {
		return 0, 0, false
	}
	rng, tot, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	total = -1
	if tot != "*" {
		n, err := strconv.ParseInt(tot, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, false
		}
		total = n
	}
	if rng == "*" {
		return -1, total, true
	}
	first, _, found := strings.Cut(rng, "-")
	if !found {
		return 0, 0, false
	}
	start, err := strconv.ParseInt(first, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, false
	}
	return start, total, true
}

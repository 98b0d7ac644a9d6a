package api

import (
	"bytes"
	"cmp"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// Two ways to sign a request, checked by one middleware (Keys.Check):
//
//   - openQA's, for openqa-cli and openqa_client: X-API-Key,
//     X-API-Microtime (seconds, integer or decimal) and X-API-Hash, the
//     hex HMAC-SHA1 with the secret of the path, the query in openQA's
//     canonical form and the microtime, within ±5 minutes. A captured
//     request can be sent again within that time, as with openQA.
//   - jetqa's: X-Jetqa-Key, X-Jetqa-Time (Unix seconds), X-Jetqa-Nonce
//     and X-Jetqa-Signature, the hex HMAC-SHA256 with the secret of
//     (method, path, canonical query, SHA-256 of the body, time, nonce),
//     one per line. A nonce is taken once: a replay is refused.

// SignatureWindow is how far a signature's time may be from the server's.
const SignatureWindow = 5 * time.Minute

// maxSignedBody bounds the body read to hash it.
const maxSignedBody = 16 << 20

// ErrNotAuthorized is a request that is not signed by a valid key.
var ErrNotAuthorized = errors.New("not authorized")

// Keys is the API keys a server accepts, kept current from their events.
type Keys struct {
	ready atomic.Bool // every key stored before the server started is known
	mu    sync.RWMutex
	keys  map[string]streams.APIKey
	nonce func(ctx context.Context, key, nonce string) error
	now   func() time.Time
}

// NewKeys returns an empty key set; useNonce remembers nonces (Bus.UseNonce).
func NewKeys(useNonce func(ctx context.Context, key, nonce string) error) *Keys {
	return &Keys{keys: map[string]streams.APIKey{}, nonce: useNonce, now: time.Now}
}

// of are user's keys, oldest first.
func (k *Keys) of(user string) []streams.APIKey {
	k.mu.RLock()
	defer k.mu.RUnlock()
	var out []streams.APIKey
	for _, key := range k.keys {
		if key.User == user {
			out = append(out, key)
		}
	}
	slices.SortFunc(out, func(a, b streams.APIKey) int { return a.Created.Compare(b.Created) })
	return out
}

// signed lets a request through to next if a valid key signed it, and
// refuses it with 403 otherwise, changing nothing.
func (k *Keys) signed(log interface{ Warn(string, ...any) }, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !k.ready.Load() {
			fail(w, http.StatusServiceUnavailable, "the server is still reading its API keys: try again in a moment")
			return
		}
		key, err := k.check(r)
		if err != nil {
			if !errors.Is(err, ErrNotAuthorized) {
				fail(w, http.StatusServiceUnavailable, "checking the signature: %v", err)
				return
			}
			log.Warn("request refused", "method", r.Method, "path", r.URL.Path, "from", r.RemoteAddr, "why", err)
			fail(w, http.StatusForbidden, "%v", err)
			return
		}
		by := caller{user: key.User, scope: key.Grants(), key: key.Key}
		next(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, by)))
	}
}

// caller is who signed a request, and what their key may change.
type caller struct {
	user  string
	scope schemas.KeyScope
	key   string // empty for a web UI user
}

// callerKey is where a signed request's context holds its caller.
type callerKey struct{}

func callerOf(ctx context.Context) caller {
	c, _ := ctx.Value(callerKey{}).(caller)
	return c
}

// mayChange refuses a caller whose scope does not reach a job of another
// user: to do names the change, for the error.
func (c caller) mayChange(agg *schemas.JobAggregate, do string) (int, error) {
	if c.scope.Reaches(schemas.ScopeOperator) || agg.Owner != "" && agg.Owner == c.user {
		return 0, nil
	}
	who := "this API key"
	if c.key != "" {
		who = "API key " + c.key
	}
	return http.StatusForbidden, fmt.Errorf("job %d belongs to %s: %s (scope %s) may %s only jobs of %s; an operator's key may %s any job",
		agg.ID, cmp.Or(agg.Owner, "nobody"), who, c.scope, do, c.user, do)
}

// Set records a key as its events leave it.
func (k *Keys) Set(key streams.APIKey) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys[key.Key] = key
}

func (k *Keys) lookup(key string) (streams.APIKey, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	v, ok := k.keys[key]
	return v, ok
}

// Check says which user signed r, or why it is refused. It may read the
// body (jetqa's scheme hashes it) and puts it back.
func (k *Keys) Check(r *http.Request) (string, error) {
	key, err := k.check(r)
	return key.User, err
}

// check is Check, with the key that signed.
func (k *Keys) check(r *http.Request) (streams.APIKey, error) {
	h := r.Header
	switch {
	case h.Get("X-Jetqa-Key") != "":
		return k.checkJetqa(r)
	case h.Get("X-API-Key") != "":
		return k.checkOpenQA(r)
	}
	return streams.APIKey{}, fmt.Errorf("%w: no API key (sign with X-API-Key as openqa-cli does, or X-Jetqa-Key)", ErrNotAuthorized)
}

func (k *Keys) key(name string) (streams.APIKey, error) {
	key, ok := k.lookup(name)
	switch {
	case !ok:
		return key, fmt.Errorf("%w: unknown API key %q", ErrNotAuthorized, name)
	case key.Revoked:
		return key, fmt.Errorf("%w: API key %q was revoked", ErrNotAuthorized, name)
	case !key.Valid(k.now()):
		return key, fmt.Errorf("%w: API key %q expired", ErrNotAuthorized, name)
	}
	return key, nil
}

// inWindow checks a signature's time, seconds since the epoch.
func (k *Keys) inWindow(stamp string) error {
	t, err := strconv.ParseFloat(strings.TrimSpace(stamp), 64)
	if err != nil || math.IsNaN(t) || math.IsInf(t, 0) {
		return fmt.Errorf("%w: the time %q is not a number of seconds", ErrNotAuthorized, stamp)
	}
	now := float64(k.now().UnixNano()) / 1e9
	if math.Abs(now-t) > SignatureWindow.Seconds() {
		return fmt.Errorf("%w: timestamp mismatch - check whether the clocks of this host and the server are in sync (server time %.0f, request time %s)", ErrNotAuthorized, now, stamp)
	}
	return nil
}

func (k *Keys) checkOpenQA(r *http.Request) (streams.APIKey, error) {
	key, err := k.key(r.Header.Get("X-API-Key"))
	if err != nil {
		return streams.APIKey{}, err
	}
	stamp := r.Header.Get("X-API-Microtime")
	if err := k.inWindow(stamp); err != nil {
		return streams.APIKey{}, err
	}
	want := OpenQASignature(key.Secret, r.URL.EscapedPath(), r.URL.RawQuery, stamp)
	if !hmac.Equal([]byte(strings.ToLower(r.Header.Get("X-API-Hash"))), []byte(want)) {
		return streams.APIKey{}, fmt.Errorf("%w: the signature does not match (wrong secret?)", ErrNotAuthorized)
	}
	return key, nil
}

var nonceRe = regexp.MustCompile(`^[A-Za-z0-9_-]{16,64}$`)

func (k *Keys) checkJetqa(r *http.Request) (streams.APIKey, error) {
	key, err := k.key(r.Header.Get("X-Jetqa-Key"))
	if err != nil {
		return streams.APIKey{}, err
	}
	stamp, nonce := r.Header.Get("X-Jetqa-Time"), r.Header.Get("X-Jetqa-Nonce")
	if err := k.inWindow(stamp); err != nil {
		return streams.APIKey{}, err
	}
	if !nonceRe.MatchString(nonce) {
		return streams.APIKey{}, fmt.Errorf("%w: X-Jetqa-Nonce must be 16 to 64 letters, digits, - or _", ErrNotAuthorized)
	}
	body, err := readBody(r)
	if err != nil {
		return streams.APIKey{}, err
	}
	want := JetqaSignature(key.Secret, r.Method, r.URL.EscapedPath(), r.URL.RawQuery, body, stamp, nonce)
	if !hmac.Equal([]byte(strings.ToLower(r.Header.Get("X-Jetqa-Signature"))), []byte(want)) {
		return streams.APIKey{}, fmt.Errorf("%w: the signature does not match (wrong secret?)", ErrNotAuthorized)
	}
	// Only a valid signature uses up its nonce: nobody can spend another's.
	if err := k.nonce(r.Context(), key.Key, nonce); err != nil {
		if errors.Is(err, streams.ErrNonceUsed) {
			return streams.APIKey{}, fmt.Errorf("%w: %v", ErrNotAuthorized, err)
		}
		return streams.APIKey{}, err
	}
	return key, nil
}

// readBody reads the request's body and puts it back for the handler.
func readBody(r *http.Request) ([]byte, error) {
	if r.Body == nil {
		return nil, nil
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxSignedBody+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxSignedBody {
		return nil, fmt.Errorf("%w: a signed body may be at most %d bytes", ErrNotAuthorized, maxSignedBody)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return body, nil
}

// Sign signs r with jetqa's scheme for key and secret; body is what r
// sends (r's body is not read).
func Sign(r *http.Request, key, secret string, body []byte) {
	nonce := make([]byte, 16)
	_, _ = rand.Read(nonce)
	stamp := strconv.FormatInt(time.Now().Unix(), 10)
	n := hex.EncodeToString(nonce)
	r.Header.Set("X-Jetqa-Key", key)
	r.Header.Set("X-Jetqa-Time", stamp)
	r.Header.Set("X-Jetqa-Nonce", n)
	r.Header.Set("X-Jetqa-Signature", JetqaSignature(secret, r.Method, r.URL.EscapedPath(), r.URL.RawQuery, body, stamp, n))
}

// OpenQASignature is openQA's X-API-Hash: HMAC-SHA1 of path, canonical
// query and microtime, in hex.
func OpenQASignature(secret, path, rawQuery, microtime string) string {
	msg := path
	if q := CanonicalQuery(rawQuery); q != "" {
		msg += "?" + q
	}
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(msg + microtime))
	return hex.EncodeToString(mac.Sum(nil))
}

// JetqaSignature is jetqa's X-Jetqa-Signature.
func JetqaSignature(secret, method, path, rawQuery string, body []byte, stamp, nonce string) string {
	sum := sha256.Sum256(body)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(strings.Join([]string{strings.ToUpper(method), path, CanonicalQuery(rawQuery), hex.EncodeToString(sum[:]), stamp, nonce}, "\n")))
	return hex.EncodeToString(mac.Sum(nil))
}

// CanonicalQuery is a query string as openQA's server (Mojolicious) writes
// it again before checking a hash: pairs in their order, each name and
// value decoded, then every byte but A-Z a-z 0-9 * - . _ written as %XX
// (upper case) and spaces as +. So `~` and `%7E`, ` ` and `%20` and `+`
// sign the same.
func CanonicalQuery(raw string) string {
	if raw == "" {
		return ""
	}
	var out []string
	for pair := range strings.SplitSeq(raw, "&") {
		if pair == "" {
			continue
		}
		name, value, _ := strings.Cut(pair, "=")
		out = append(out, canonicalComponent(name)+"="+canonicalComponent(value))
	}
	return strings.Join(out, "&")
}

func canonicalComponent(s string) string {
	s = strings.ReplaceAll(s, "+", " ")
	if d, err := url.PathUnescape(s); err == nil {
		s = d
	} else {
		s = unescapeLenient(s)
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '*', c == '-', c == '.', c == '_':
			b.WriteByte(c)
		case c == ' ':
			b.WriteByte('+')
		default:
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// unescapeLenient decodes the valid %XX escapes of s and keeps the rest as
// it is, as Mojolicious does with a broken escape.
func unescapeLenient(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			v, _ := strconv.ParseUint(s[i+1:i+3], 16, 8)
			b.WriteByte(byte(v))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

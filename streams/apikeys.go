package streams

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"jetqa/schemas"
)

// API keys are events on JETQA_APIKEYS, one subject per key; nonces of
// signed requests are keys of a bucket whose entries expire.
const (
	StreamAPIKeys  = "JETQA_APIKEYS"
	subjectAPIKeys = "jetqa.apikey"
	BucketNonces   = "jetqa-nonces"
	// NonceTTL outlives the validity window of a signature (±5 min), so
	// a nonce is remembered as long as a request carrying it is valid.
	NonceTTL = 11 * time.Minute
)

func apiKeySubject(key string) string { return subjectAPIKeys + "." + Token(key) }

// APIKey is a key as its events leave it.
type APIKey struct {
	schemas.APIKeyCreated
	Created time.Time `json:"created"`
	Revoked bool      `json:"revoked,omitempty"`
}

// Valid says whether the key may sign a request at t.
func (k APIKey) Valid(t time.Time) bool {
	return !k.Revoked && (k.Expires == nil || t.Before(*k.Expires))
}

// ErrNoAPIKey is returned for a key that was never created.
var ErrNoAPIKey = errors.New("no such API key")

// CreateAPIKey makes a key and secret for user, as openQA's: 16 upper-case
// hexadecimal digits each. expires, if not zero, ends it; scope says what
// it may change.
func (b *Bus) CreateAPIKey(ctx context.Context, user string, expires time.Time, scope schemas.KeyScope) (schemas.APIKeyCreated, error) {
	user = strings.TrimSpace(user)
	if user == "" {
		return schemas.APIKeyCreated{}, errors.New("an API key needs a user (--user NAME)")
	}
	if _, err := schemas.ParseKeyScope(string(scope)); err != nil {
		return schemas.APIKeyCreated{}, err
	}
	k := schemas.APIKeyCreated{Key: randomHex(8), Secret: randomHex(8), User: user, Scope: scope}
	if !expires.IsZero() {
		k.Expires = &expires
	}
	if _, err := b.publish(ctx, apiKeySubject(k.Key), 0, k); err != nil {
		return k, err
	}
	return k, nil
}

// RevokeAPIKey ends a key.
func (b *Bus) RevokeAPIKey(ctx context.Context, key string) error {
	keys, err := b.APIKeys(ctx)
	if err != nil {
		return err
	}
	k, ok := keys[key]
	if !ok {
		return fmt.Errorf("%w: %s (`jetqa admin apikey list` lists them)", ErrNoAPIKey, key)
	}
	if k.Revoked {
		return nil
	}
	_, err = b.publish(ctx, apiKeySubject(key), 0, schemas.APIKeyRevoked{Key: key})
	return err
}

// APIKeys reads every key as its events leave it, by key.
func (b *Bus) APIKeys(ctx context.Context) (map[string]APIKey, error) {
	keys := map[string]APIKey{}
	last, err := b.LastAPIKeySequence(ctx)
	if err != nil || last == 0 {
		return keys, err
	}
	err = b.Watch(ctx, WatchConfig{Stream: StreamAPIKeys, Filters: []string{subjectAPIKeys + ".>"}}, func(ev schemas.Event, p schemas.Payload, d Delivery) error {
		foldAPIKey(keys, ev, p)
		if d.Sequence >= last {
			return ErrStopWatch
		}
		return nil
	})
	return keys, err
}

// FollowAPIKeys calls fn with every key as each of its events leaves it,
// with the event's stream sequence, from the first, until ctx ends: what
// a server checking signatures keeps its keys current by. It knows every
// key stored before it started once fn had a sequence at or past the
// LastAPIKeySequence it read first; the stream's own last sequence may be
// a user's, which no key reaches.
func (b *Bus) FollowAPIKeys(ctx context.Context, fn func(k APIKey, seq uint64)) error {
	keys := map[string]APIKey{}
	return b.Watch(ctx, WatchConfig{Stream: StreamAPIKeys, Filters: []string{subjectAPIKeys + ".>"}}, func(ev schemas.Event, p schemas.Payload, d Delivery) error {
		if k, ok := foldAPIKey(keys, ev, p); ok {
			fn(k, d.Sequence)
		}
		return nil
	})
}

func foldAPIKey(keys map[string]APIKey, ev schemas.Event, p schemas.Payload) (APIKey, bool) {
	switch p := p.(type) {
	case *schemas.APIKeyCreated:
		k := APIKey{APIKeyCreated: *p, Created: ev.Time}
		keys[p.Key] = k
		return k, true
	case *schemas.APIKeyRevoked:
		k, ok := keys[p.Key]
		if ok {
			k.Revoked = true
			keys[p.Key] = k
		}
		return k, ok
	}
	return APIKey{}, false
}

// UseNonce remembers a signed request's nonce for NonceTTL; it fails with
// ErrNonceUsed if the key signed a request with it before.
func (b *Bus) UseNonce(ctx context.Context, key, nonce string) error {
	kv, err := b.JS.KeyValue(ctx, BucketNonces)
	if err != nil {
		return fmt.Errorf("nonces bucket: %w", err)
	}
	if _, err := kv.Create(ctx, Token(key)+"."+Token(nonce), nil); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return ErrNonceUsed
		}
		return fmt.Errorf("remember nonce: %w", err)
	}
	return nil
}

// ErrNonceUsed refuses a request whose nonce was seen: a replay.
var ErrNonceUsed = errors.New("nonce used before: the request was replayed")

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return strings.ToUpper(hex.EncodeToString(b))
}

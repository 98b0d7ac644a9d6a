package streams

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/crypto/bcrypt"

	"jetqa/schemas"
)

// The web UI's local users are events on JETQA_APIKEYS beside the API
// keys, one subject per user, and so is the secret its session cookies
// are signed with: only the server's connections read that stream.
const (
	subjectUsers         = "jetqa.user"
	subjectSessionSecret = "jetqa.uisecret"
	// MinPasswordLength is the fewest characters a password may have.
	MinPasswordLength = 8
	// maxPasswordBytes is as far as bcrypt reads a password.
	maxPasswordBytes = 72
	// maxUserName bounds a name in characters: it is a subject token too.
	maxUserName = 64
	// SessionSecretSize is the size of the session secret in bytes.
	SessionSecretSize = 32
	passwordCost      = bcrypt.DefaultCost
)

// userSubject is where a user's events are. Names that differ only in
// characters a token cannot hold share a subject; their events still
// name each its own user.
func userSubject(user string) string { return subjectUsers + "." + Token(user) }

// User is a local user of the web UI as their events leave them. The
// password's hash stays inside: CheckPassword is all it is for, and it is
// neither printed nor encoded.
type User struct {
	Name  string `json:"name"`
	Admin bool   `json:"admin,omitempty"`
	// PasswordSet is when the password was set last.
	PasswordSet time.Time `json:"password_set"`
	// Removed says the user was removed; FollowUsers tells it once.
	Removed bool `json:"removed,omitempty"`
	hash    []byte
}

// CheckPassword says whether pw is the user's password. A removed user
// and the zero User (a name nobody has) take as long as a known one to
// say no, so a sign-in's time does not tell which names exist.
func (u User) CheckPassword(pw string) bool {
	if u.Removed || len(u.hash) == 0 {
		_ = bcrypt.CompareHashAndPassword(decoyHash(), []byte(pw))
		return false
	}
	return bcrypt.CompareHashAndPassword(u.hash, []byte(pw)) == nil
}

// decoyHash is compared with when there is no hash, for the time it takes.
var decoyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("no user has this password"), passwordCost)
	return h
})

// ErrNoUser is returned for a user who does not exist.
var ErrNoUser = errors.New("no such user")

// SetUser gives user a password and a role: a new user, or a new password
// or role for one. An admin may act on every job, as an admin's API key.
func (b *Bus) SetUser(ctx context.Context, user, password string, admin bool) error {
	if err := checkUserName(user); err != nil {
		return err
	}
	if err := checkPassword(password); err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), passwordCost)
	if err != nil {
		return fmt.Errorf("hash the password of %s: %w", user, err)
	}
	_, err = b.publish(ctx, userSubject(user), 0, schemas.UserSet{User: user, PasswordHash: string(hash), Admin: admin})
	return err
}

func checkUserName(user string) error {
	switch {
	case user == "":
		return errors.New("a user needs a name (--user NAME)")
	case !utf8.ValidString(user):
		return fmt.Errorf("user name %q is not UTF-8", user)
	case utf8.RuneCountInString(user) > maxUserName:
		return fmt.Errorf("user name %.20q…: at most %d characters", user, maxUserName)
	}
	for _, r := range user {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("user name %q: no spaces or control characters in a name people sign in with", user)
		}
	}
	return nil
}

func checkPassword(pw string) error {
	if n := utf8.RuneCountInString(pw); n < MinPasswordLength {
		return fmt.Errorf("the password is too short: %d characters, at least %d wanted", n, MinPasswordLength)
	}
	if len(pw) > maxPasswordBytes {
		return fmt.Errorf("the password is too long: %d bytes, bcrypt reads no more than %d", len(pw), maxPasswordBytes)
	}
	return nil
}

// RemoveUser ends a user: their password signs nobody in from now on.
func (b *Bus) RemoveUser(ctx context.Context, user string) error {
	users, err := b.Users(ctx)
	if err != nil {
		return err
	}
	if _, ok := users[user]; !ok {
		return fmt.Errorf("%w: %s (`jetqa admin user list` lists them)", ErrNoUser, user)
	}
	_, err = b.publish(ctx, userSubject(user), 0, schemas.UserRemoved{User: user})
	return err
}

// Users reads every user there is now, by name; removed ones are not.
func (b *Bus) Users(ctx context.Context) (map[string]User, error) {
	users := map[string]User{}
	last, err := b.LastUserSequence(ctx)
	if err != nil || last == 0 {
		return users, err
	}
	err = b.Watch(ctx, WatchConfig{Stream: StreamAPIKeys, Filters: []string{subjectUsers + ".>"}}, func(ev schemas.Event, p schemas.Payload, d Delivery) error {
		foldUser(users, ev, p)
		if d.Sequence >= last {
			return ErrStopWatch
		}
		return nil
	})
	return users, err
}

// FollowUsers calls fn with every user as each of their events leaves
// them, with the event's stream sequence, from the first, until ctx ends;
// a removed user comes once more, with Removed set. It is what a server
// signing people in keeps its users current by: it knows every user
// stored before it started once fn had a sequence at or past the
// LastUserSequence it read first.
func (b *Bus) FollowUsers(ctx context.Context, fn func(u User, seq uint64)) error {
	users := map[string]User{}
	return b.Watch(ctx, WatchConfig{Stream: StreamAPIKeys, Filters: []string{subjectUsers + ".>"}}, func(ev schemas.Event, p schemas.Payload, d Delivery) error {
		if u, ok := foldUser(users, ev, p); ok {
			fn(u, d.Sequence)
		}
		return nil
	})
}

// LastUserSequence is the stream sequence of the newest user event, 0 for
// none. The stream holds API keys too, so its own last sequence may be
// one no user event reaches.
func (b *Bus) LastUserSequence(ctx context.Context) (uint64, error) {
	return b.lastOn(ctx, StreamAPIKeys, subjectUsers+".>")
}

// LastAPIKeySequence is LastUserSequence for the API keys.
func (b *Bus) LastAPIKeySequence(ctx context.Context) (uint64, error) {
	return b.lastOn(ctx, StreamAPIKeys, subjectAPIKeys+".>")
}

// lastOn is the sequence of the newest message of stream on filter, 0
// for none: a watcher of filter that has seen it has caught up with what
// was stored before the call, whatever the stream holds after it.
func (b *Bus) lastOn(ctx context.Context, stream, filter string) (uint64, error) {
	s, err := b.JS.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	m, err := s.GetLastMsgForSubject(ctx, filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("stream %s: newest on %s: %w", stream, filter, err)
	}
	return m.Sequence, nil
}

func foldUser(users map[string]User, ev schemas.Event, p schemas.Payload) (User, bool) {
	switch p := p.(type) {
	case *schemas.UserSet:
		u := User{Name: p.User, Admin: p.Admin, PasswordSet: ev.Time, hash: []byte(p.PasswordHash)}
		users[p.User] = u
		return u, true
	case *schemas.UserRemoved:
		u, ok := users[p.User]
		if !ok {
			return User{}, false
		}
		delete(users, p.User)
		u.Removed, u.hash = true, nil
		return u, true
	}
	return User{}, false
}

// SessionSecret is the secret every API process of this installation
// signs the web UI's session cookies with; the first to ask makes it.
// Processes asking at once agree: a secret is appended only where there
// is none yet, and one that finds another came first reads that one. On
// a cluster the leader refuses an append while another is still being
// agreed on, before that one can be read: the asker then looks again.
func (b *Bus) SessionSecret(ctx context.Context) ([]byte, error) {
	for {
		secret, err := b.storedSessionSecret(ctx)
		if !errors.Is(err, jetstream.ErrMsgNotFound) {
			return secret, err
		}
		secret = make([]byte, SessionSecretSize)
		if _, err := rand.Read(secret); err != nil {
			return nil, fmt.Errorf("make a session secret: %w", err)
		}
		_, err = b.publish(ctx, subjectSessionSecret, 0, schemas.SessionSecretCreated{Secret: secret},
			jetstream.WithExpectLastSequencePerSubject(0))
		if err == nil {
			return secret, nil
		}
		if !isWrongSequence(err) {
			return nil, fmt.Errorf("store the session secret: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("store the session secret: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// storedSessionSecret reads the session secret, jetstream.ErrMsgNotFound
// when there is none yet.
func (b *Bus) storedSessionSecret(ctx context.Context) ([]byte, error) {
	s, err := b.JS.Stream(ctx, StreamAPIKeys)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", StreamAPIKeys, err)
	}
	raw, err := s.GetLastMsgForSubject(ctx, subjectSessionSecret)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("read the session secret: %w", err)
	}
	_, p, err := decode(raw.Header.Get(HeaderKind), raw.Data)
	if err != nil {
		return nil, fmt.Errorf("read the session secret: %w", err)
	}
	created, ok := p.(*schemas.SessionSecretCreated)
	if !ok || len(created.Secret) < SessionSecretSize {
		return nil, fmt.Errorf("%s holds no session secret of %d bytes (%s)", subjectSessionSecret, SessionSecretSize, p.Kind())
	}
	return created.Secret, nil
}

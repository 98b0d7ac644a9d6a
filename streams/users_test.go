package streams_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// A user is added, given a new password and removed; only the password
// set last signs them in, and a removed user is no longer there.
func TestUsersSetChangeRemove(t *testing.T) {
	s := natstest.Start(t)
	b := s.Bus("admin")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.SetUser(ctx, "alice", "correct horse", false); err != nil {
		t.Fatal(err)
	}
	if err := b.SetUser(ctx, "root", "battery staple", true); err != nil {
		t.Fatal(err)
	}
	users, err := b.Users(ctx)
	if err != nil {
		t.Fatal(err)
	}
	alice, root := users["alice"], users["root"]
	if len(users) != 2 || alice.Name != "alice" || alice.Admin || !root.Admin || alice.PasswordSet.IsZero() {
		t.Fatalf("users: %+v", users)
	}
	if !alice.CheckPassword("correct horse") || alice.CheckPassword("battery staple") || alice.CheckPassword("") {
		t.Error("alice's password is not checked right")
	}

	if err := b.SetUser(ctx, "alice", "new horse!", true); err != nil {
		t.Fatal(err)
	}
	users, _ = b.Users(ctx)
	if alice = users["alice"]; alice.CheckPassword("correct horse") || !alice.CheckPassword("new horse!") || !alice.Admin {
		t.Errorf("after a new password and role: %+v", alice)
	}

	if err := b.RemoveUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	users, _ = b.Users(ctx)
	if _, ok := users["alice"]; ok || len(users) != 1 {
		t.Errorf("after removing alice: %+v", users)
	}
	if err := b.RemoveUser(ctx, "alice"); !errors.Is(err, streams.ErrNoUser) {
		t.Errorf("removing alice twice: %v, want ErrNoUser", err)
	}
	if err := b.RemoveUser(ctx, "nobody"); !errors.Is(err, streams.ErrNoUser) {
		t.Errorf("removing a user never added: %v, want ErrNoUser", err)
	}
	if (streams.User{}).CheckPassword("") {
		t.Error("the zero user signs in")
	}
}

func TestSetUserRefuses(t *testing.T) {
	s := natstest.Start(t)
	b := s.Bus("admin")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range []struct{ user, password, want string }{
		{"", "long enough", "needs a name"},
		{"al ice", "long enough", "no spaces"},
		{"al\tice", "long enough", "no spaces"},
		{"alice\n", "long enough", "no spaces"},
		{strings.Repeat("a", 65), "long enough", "at most 64"},
		{"alice", "1234567", "too short: 7 characters, at least 8"},
		{"alice", "ünïcödé", "too short: 7 characters"},
		{"alice", "", "too short"},
		{"alice", strings.Repeat("x", 73), "too long: 73 bytes"},
	} {
		err := b.SetUser(ctx, c.user, c.password, false)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("SetUser(%q, %q): %v, want an error saying %q", c.user, c.password, err, c.want)
		}
	}
	if users, err := b.Users(ctx); err != nil || len(users) != 0 {
		t.Errorf("users after refusals: %v %+v", err, users)
	}
	if err := b.SetUser(ctx, "ünïcödé@example.org", "12345678", false); err != nil {
		t.Errorf("a name with letters of any script and an eight-character password: %v", err)
	}
}

// FollowUsers hands over every user from the first event, then each
// change as it is stored; a removed user comes with Removed set.
func TestFollowUsers(t *testing.T) {
	s := natstest.Start(t)
	b := s.Bus("admin")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.SetUser(ctx, "alice", "correct horse", false); err != nil {
		t.Fatal(err)
	}
	type seen struct {
		u   streams.User
		seq uint64
	}
	got := make(chan seen, 10)
	go func() {
		_ = s.Bus("follower").FollowUsers(ctx, func(u streams.User, seq uint64) { got <- seen{u, seq} })
	}()
	next := func() seen {
		t.Helper()
		select {
		case s := <-got:
			return s
		case <-ctx.Done():
			t.Fatal("no user event before the deadline")
			return seen{}
		}
	}
	if s := next(); s.u.Name != "alice" || s.u.Removed || !s.u.CheckPassword("correct horse") || s.seq == 0 {
		t.Fatalf("first: %+v", s)
	}
	// Events on the stream's other subjects are not users.
	if _, err := b.CreateAPIKey(ctx, "alice", time.Time{}, schemas.ScopeOperator); err != nil {
		t.Fatal(err)
	}
	if err := b.SetUser(ctx, "bob", "12345678", true); err != nil {
		t.Fatal(err)
	}
	if s := next(); s.u.Name != "bob" || !s.u.Admin {
		t.Fatalf("second: %+v", s)
	}
	if err := b.RemoveUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	s3 := next()
	if s3.u.Name != "alice" || !s3.u.Removed || s3.u.CheckPassword("correct horse") {
		t.Fatalf("after the removal: %+v", s3)
	}
	if last, err := b.LastUserSequence(ctx); err != nil || last != s3.seq {
		t.Errorf("LastUserSequence: %d %v, want the removal's %d", last, err, s3.seq)
	}
}

// API keys and users share a stream: reading either one stops at its own
// newest event when the newest of the stream is of the other.
func TestAPIKeysAndUsersShareAStream(t *testing.T) {
	s := natstest.Start(t)
	b := s.Bus("admin")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.SetUser(ctx, "alice", "correct horse", false); err != nil {
		t.Fatal(err)
	}
	k, err := b.CreateAPIKey(ctx, "alice", time.Time{}, schemas.ScopeOperator)
	if err != nil {
		t.Fatal(err)
	}
	if users, err := b.Users(ctx); err != nil || len(users) != 1 {
		t.Fatalf("users with a key newest: %v %+v", err, users)
	}
	if _, err := b.SessionSecret(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.SetUser(ctx, "bob", "12345678", false); err != nil {
		t.Fatal(err)
	}
	if keys, err := b.APIKeys(ctx); err != nil || len(keys) != 1 || keys[k.Key].User != "alice" {
		t.Fatalf("keys with a user newest: %v %+v", err, keys)
	}
}

// Every API process gets the same session secret, however many ask at
// once: one is stored, the others read it. On a cluster, where each
// process talks to its own node, a lost race answers with another error
// code (10164) than on one server (10071).
func TestSessionSecretIsMadeOnce(t *testing.T) {
	for _, c := range []struct {
		name  string
		start func(t *testing.T) []string
	}{
		{"one server", func(t *testing.T) []string { return []string{natstest.Start(t).URL} }},
		{"cluster", func(t *testing.T) []string { _, urls := natstest.StartCluster(t); return urls }},
	} {
		t.Run(c.name, func(t *testing.T) {
			urls := c.start(t)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			var buses []*streams.Bus
			for _, url := range urls {
				b, err := streams.Connect(ctx, url, "api", natstest.Logger(t))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(b.Close)
				buses = append(buses, b, b)
			}
			secrets := make([][]byte, 12)
			errs := make([]error, len(secrets))
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range secrets {
				wg.Go(func() {
					<-start
					secrets[i], errs[i] = buses[i%len(buses)].SessionSecret(ctx)
				})
			}
			close(start)
			wg.Wait()
			for i := range secrets {
				if errs[i] != nil {
					t.Fatalf("asker %d: %v", i, errs[i])
				}
				if len(secrets[i]) != streams.SessionSecretSize || string(secrets[i]) != string(secrets[0]) {
					t.Fatalf("asker %d got %x, asker 0 %x", i, secrets[i], secrets[0])
				}
			}
			st, err := buses[0].JS.Stream(ctx, streams.StreamAPIKeys)
			if err != nil {
				t.Fatal(err)
			}
			info, err := st.Info(ctx, jetstream.WithSubjectFilter("jetqa.uisecret"))
			if err != nil {
				t.Fatal(err)
			}
			if n := info.State.Subjects["jetqa.uisecret"]; n != 1 {
				t.Errorf("%d session secrets stored, want 1", n)
			}
			later, err := buses[len(buses)-1].SessionSecret(ctx)
			if err != nil || string(later) != string(secrets[0]) {
				t.Errorf("asked again later: %x %v", later, err)
			}
		})
	}
}

// A data directory from before users has JETQA_APIKEYS with the keys'
// subjects only; the setup every process runs at start adds the users'.
func TestSetupAddsUserSubjectsToAnOldStream(t *testing.T) {
	s := natstest.Start(t)
	b := s.Bus("admin")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	k, err := b.CreateAPIKey(ctx, "alice", time.Time{}, schemas.ScopeOperator)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.JS.UpdateStream(ctx, jetstream.StreamConfig{
		Name: streams.StreamAPIKeys, Subjects: []string{"jetqa.apikey.>"}, Storage: jetstream.FileStorage,
	}); err != nil {
		t.Fatal(err)
	}
	if err := b.SetUser(ctx, "alice", "correct horse", false); err == nil {
		t.Fatal("a stream without the users' subjects took a user")
	}
	if err := b.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.SetUser(ctx, "alice", "correct horse", false); err != nil {
		t.Fatalf("after setup: %v", err)
	}
	if _, err := b.SessionSecret(ctx); err != nil {
		t.Fatalf("after setup: %v", err)
	}
	if keys, err := b.APIKeys(ctx); err != nil || keys[k.Key].User != "alice" {
		t.Errorf("the key made before: %v %+v", err, keys)
	}
}

// Worker credentials can neither read the users, their password hashes
// and the session secret, nor write a user.
func TestWorkersCannotReadOrWriteUsers(t *testing.T) {
	adminID, err := streams.NewIdentity(streams.RoleAdmin, "server")
	if err != nil {
		t.Fatal(err)
	}
	workerID, err := streams.NewIdentity(streams.RoleWorker, "wa")
	if err != nil {
		t.Fatal(err)
	}
	ns, err := streams.StartServer(streams.ServerConfig{Port: -1, DataDir: t.TempDir(),
		Users: []streams.Credential{adminID.Credential(0), workerID.Credential(1)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	connect := func(id streams.Identity) *streams.Bus {
		t.Helper()
		b, err := streams.ConnectTo(ctx, streams.Dial{URLs: ns.ClientURL(), Identity: &id}, id.Name, natstest.Logger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(b.Close)
		return b
	}
	admin := connect(adminID)
	if err := admin.Setup(ctx); err != nil {
		t.Fatal(err)
	}
	if err := admin.SetUser(ctx, "alice", "correct horse", true); err != nil {
		t.Fatal(err)
	}
	secret, err := admin.SessionSecret(ctx)
	if err != nil {
		t.Fatal(err)
	}

	worker := connect(workerID)
	violations := make(chan error, 100)
	worker.NC.SetErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		if errors.Is(err, nats.ErrPermissionViolation) {
			select {
			case violations <- err:
			default:
			}
		}
	})
	refused := func(what string, try func(context.Context) error) {
		t.Helper()
		short, stop := context.WithTimeout(ctx, time.Second)
		defer stop()
		if err := try(short); err == nil {
			t.Errorf("worker credentials: %s succeeded", what)
		}
	}
	refused("Users", func(ctx context.Context) error { _, err := worker.Users(ctx); return err })
	refused("FollowUsers", func(ctx context.Context) error {
		return worker.FollowUsers(ctx, func(u streams.User, _ uint64) { t.Errorf("worker read user %s", u.Name) })
	})
	refused("SessionSecret", func(ctx context.Context) error { _, err := worker.SessionSecret(ctx); return err })
	refused("SetUser", func(ctx context.Context) error { return worker.SetUser(ctx, "mallory", "12345678", true) })
	refused("RemoveUser", func(ctx context.Context) error { return worker.RemoveUser(ctx, "alice") })
	// Neither past the stream's API: a plain publish on a user's subject
	// and a subscription to them.
	forged, err := schemas.NewEvent(0, "wa", schemas.UserSet{User: "alice", PasswordHash: "$2a$04$forged"})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := forged.Marshal()
	if err := worker.NC.Publish("jetqa.user.alice", data); err != nil {
		t.Fatal(err)
	}
	if _, err := worker.NC.Subscribe("jetqa.user.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	for _, subject := range []string{"$JS.API.STREAM.MSG.GET." + streams.StreamAPIKeys, "jetqa.user.alice", "jetqa.user.>"} {
		waitForViolation(t, ctx, violations, subject)
	}

	users, err := admin.Users(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if alice := users["alice"]; len(users) != 1 || !alice.CheckPassword("correct horse") || !alice.Admin {
		t.Errorf("users after the worker's tries: %+v", users)
	}
	if again, err := admin.SessionSecret(ctx); err != nil || string(again) != string(secret) {
		t.Errorf("the session secret changed: %v", err)
	}
}

// waitForViolation waits for NATS to report a permission violation naming
// subject.
func waitForViolation(t *testing.T, ctx context.Context, violations chan error, subject string) {
	t.Helper()
	var seen []string
	for {
		select {
		case err := <-violations:
			if strings.Contains(err.Error(), `"`+subject+`"`) {
				return
			}
			seen = append(seen, err.Error())
		case <-ctx.Done():
			t.Fatalf("no permission violation for %s; saw %q", subject, seen)
		}
	}
}

package streams

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"jetqa/schemas"
)

// Who may connect, and what each may do, is NATS's own business: every
// party authenticates with an nkey (a key pair whose secret half never
// leaves its host), and the embedded server gives each public key the
// permissions of its role. The server issues worker and matcher keys at run
// time into BucketCredentials; every jetqa server watches that bucket and
// hands the keys to its NATS server's authentication hook, closing the
// connections of a key that was revoked.

// Roles a credential can have.
const (
	// RoleAdmin may do everything: the server's own stages and the
	// operator's command line.
	RoleAdmin = "admin"
	// RoleWorker is a worker host: its own reports, assignments, assets
	// and needles.
	RoleWorker = "worker"
	// RoleMatcher is a needle matcher pool: match requests and answers.
	RoleMatcher = "matcher"
	// RoleConsumer reads finished jobs from its own durable consumer:
	// webhooks, JUnit writers, dashboards.
	RoleConsumer = "consumer"
)

// BucketCredentials holds the credentials the server issued, by
// <role>.<name>; a deleted key is a revoked credential.
const BucketCredentials = "jetqa-credentials"

// DefaultInstances is how many worker instances a worker credential
// covers unless told otherwise.
const DefaultInstances = 16

// Credential is an issued key: its role, the name it acts as (a worker's
// host name, a matcher's name) and its public nkey.
type Credential struct {
	Role string `json:"role"`
	Name string `json:"name"`
	NKey string `json:"nkey"`
	// Instances bounds a worker host's instances (1…Instances).
	Instances int       `json:"instances,omitempty"`
	Created   time.Time `json:"created"`
}

func credentialKey(role, name string) string { return role + "." + Token(name) }

// Identity is the secret half of a credential: what a process connects as.
type Identity struct {
	Role string
	Name string
	kp   nkeys.KeyPair
}

// NewIdentity makes a new key pair for role and name.
func NewIdentity(role, name string) (Identity, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return Identity{}, fmt.Errorf("make a key: %w", err)
	}
	return Identity{Role: role, Name: name, kp: kp}, nil
}

// PublicKey is the identity's public nkey, what the server knows it by.
func (id Identity) PublicKey() string {
	pub, _ := id.kp.PublicKey()
	return pub
}

// Credential is the public record of the identity.
func (id Identity) Credential(instances int) Credential {
	return Credential{Role: id.Role, Name: id.Name, NKey: id.PublicKey(), Instances: instances, Created: time.Now().UTC()}
}

// natsOptions authenticate a connection as the identity, with replies on
// subjects only it may read.
func (id Identity) natsOptions() []nats.Option {
	return []nats.Option{
		nats.Nkey(id.PublicKey(), id.kp.Sign),
		nats.CustomInboxPrefix(InboxPrefix(id.Role, id.Name)),
	}
}

// InboxPrefix is where the replies to a role and name's requests arrive.
func InboxPrefix(role, name string) string {
	if role == RoleAdmin {
		return nats.InboxPrefix[:len(nats.InboxPrefix)-1]
	}
	return "_INBOX." + role + "." + Token(name)
}

// WriteFile stores the identity as a credentials file, readable by its
// owner only. The seed is in the decorated form NATS tools read too.
func (id Identity) WriteFile(path, server string) error {
	seed, err := id.kp.Seed()
	if err != nil {
		return err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# jetqa credentials: %s %q, issued %s by %s.\n", id.Role, id.Name, time.Now().UTC().Format(time.RFC3339), server)
	fmt.Fprintf(&b, "# Keep this file secret: it is the key. `jetqa admin %s revoke %s` ends its access.\n", id.Role, id.Name)
	fmt.Fprintf(&b, "role: %s\nname: %s\n\n", id.Role, id.Name)
	fmt.Fprintf(&b, "-----BEGIN USER NKEY SEED-----\n%s\n------END USER NKEY SEED------\n", seed)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b.Bytes(), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// LoadIdentity reads a credentials file WriteFile wrote.
func LoadIdentity(path string) (Identity, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Identity{}, fmt.Errorf("credentials: %w", err)
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return Identity{}, fmt.Errorf("credentials %s: no user key in it: %w", path, err)
	}
	if pub, err := kp.PublicKey(); err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return Identity{}, fmt.Errorf("credentials %s: the key is not a user key", path)
	}
	id := Identity{kp: kp}
	lines := bufio.NewScanner(bytes.NewReader(data))
	for lines.Scan() {
		k, v, ok := strings.Cut(lines.Text(), ":")
		switch {
		case ok && k == "role":
			id.Role = strings.TrimSpace(v)
		case ok && k == "name":
			id.Name = strings.TrimSpace(v)
		}
	}
	if id.Role == "" {
		id.Role = RoleAdmin
	}
	return id, nil
}

// EnsureIdentityFile reads the credentials file at path, making it (with
// a new key for role and name) when there is none.
func EnsureIdentityFile(path, role, name, server string) (Identity, error) {
	id, err := LoadIdentity(path)
	if err == nil || !errors.Is(err, os.ErrNotExist) {
		return id, err
	}
	if id, err = NewIdentity(role, name); err != nil {
		return id, err
	}
	return id, id.WriteFile(path, server)
}

// NATSUser is the server's view of a credential: its key and permissions.
func (c Credential) NATSUser() *server.NkeyUser {
	u := &server.NkeyUser{Nkey: c.NKey}
	switch c.Role {
	case RoleAdmin:
	case RoleWorker:
		u.Permissions = workerPermissions(Token(c.Name), c.Instances)
	case RoleMatcher:
		u.Permissions = matcherPermissions(Token(c.Name))
	case RoleConsumer:
		u.Permissions = consumerPermissions(Token(c.Name))
	default:
		// A role this build does not know may do nothing.
		u.Permissions = &server.Permissions{Publish: &server.SubjectPermission{Deny: []string{">"}}, Subscribe: &server.SubjectPermission{Deny: []string{">"}}}
	}
	return u
}

// objStream is the stream behind an object store bucket.
func objStream(bucket string) string { return "OBJ_" + bucket }

// reads are the subjects that read a stream's messages by sequence or
// subject, without a consumer.
func reads(stream string) []string {
	return []string{"$JS.API.DIRECT.GET." + stream, "$JS.API.DIRECT.GET." + stream + ".>", "$JS.API.STREAM.MSG.GET." + stream}
}

// ordered are the subjects of short-lived consumers on stream limited to
// filter: what reading an object or following one's own answers takes.
// Creating a consumer is allowed only with a filter in the subject, and
// only on streams with no durable consumers to take over.
func ordered(stream, filter string) []string {
	return []string{
		"$JS.API.CONSUMER.CREATE." + stream + ".*." + filter,
		"$JS.API.CONSUMER.MSG.NEXT." + stream + ".*",
		"$JS.API.CONSUMER.INFO." + stream + ".*",
		"$JS.API.CONSUMER.DELETE." + stream + ".*",
	}
}

// durable are the subjects of using (never creating) a durable consumer.
func durable(stream, name string) []string {
	return []string{
		"$JS.API.CONSUMER.INFO." + stream + "." + name,
		"$JS.API.CONSUMER.MSG.NEXT." + stream + "." + name,
		"$JS.ACK." + stream + "." + name + ".>",
		subjectDead + "." + Token(name),
	}
}

// common is what every remote party needs of JetStream to start.
var common = []string{"$JS.API.INFO", "$JS.API.STREAM.INFO.*", "$JS.FC.>"}

// workerPermissions are a worker host's: its reports and consumer
// requests, its own worker events and match requests, its own durable
// consumers, the answers to its instances, reading jobs, assets and
// needles, and asking the server to store needles and results. Nothing else: no other host's
// subjects, no appends to the job stream, no stream, consumer or bucket
// changes, no deletes.
func workerPermissions(host string, instances int) *server.Permissions {
	if instances < 1 {
		instances = DefaultInstances
	}
	pub := slices.Concat(common, []string{
		subjectReport + "." + host + ".>",
		subjectSetup + "." + host + ".>",
		"jetqa.worker." + host + ".>",
		subjectMatchRequest + "." + host + ".>",
		// Storing blobs: the host stages chunks in a stream of their own and
		// asks the server to store them (store.go); the object stores'
		// subjects stay the server's, who alone may delete or replace.
		subjectChunk + "." + host + ".*",
		subjectStore + "." + host + ".>",
		"$JS.API.DIRECT.GET." + objStream(BucketResults) + ".$O." + BucketResults + ".M.>",
	},
		reads(StreamJobs), reads(StreamAssets),
		reads(objStream(BucketNeedles)), reads(objStream(BucketAssets)),
		ordered(StreamMatchResults, subjectMatchResolved+"."+host+".*"),
		ordered(objStream(BucketNeedles), "$O."+BucketNeedles+".C.*"),
		ordered(objStream(BucketAssets), "$O."+BucketAssets+".C.*"),
		durable(StreamJobs, FetchDurable(host)),
		durable(StreamJobs, UploadDurable(host)),
		durable(StreamWorkers, PrefetchDurable(host)),
	)
	for i := 1; i <= instances; i++ {
		pub = append(pub, durable(StreamJobs, BootDurable(schemas.WorkerRef{Host: host, Instance: i}))...)
	}
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: []string{
			InboxPrefix(RoleWorker, host) + ".>",
			// Wake-ups of FollowJob and OnJobEvent; the job stream is
			// readable by every worker anyway.
			"jetqa.job.>",
			// Live view requests for its own instances, answered once each.
			subjectLive + "." + host + ".>",
		}},
		Response: &server.ResponsePermission{MaxMsgs: 1, Expires: time.Minute},
	}
}

// matcherPermissions are a matcher pool's: the shared match request
// consumer, answering any worker, splitting requests, reading needles.
func matcherPermissions(name string) *server.Permissions {
	pub := slices.Concat(common, []string{
		subjectMatchResolved + ".>",
		subjectMatchRequest + ".>",
	},
		durable(StreamMatchRequests, DurableMatchers),
		reads(objStream(BucketNeedles)),
		ordered(objStream(BucketNeedles), "$O."+BucketNeedles+".C.*"),
	)
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: []string{InboxPrefix(RoleMatcher, name) + ".>"}},
	}
}

// consumerPermissions are a result consumer's: its own durable consumer of
// finished jobs, and reading the job stream for the jobs' settings.
func consumerPermissions(name string) *server.Permissions {
	pub := slices.Concat(common, durable(StreamJobs, ResultsDurable(name)), reads(StreamJobs))
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: pub},
		Subscribe: &server.SubjectPermission{Allow: []string{InboxPrefix(RoleConsumer, name) + ".>"}},
	}
}

// AddCredential records an issued credential; it fails if one with the
// same role and name exists.
func (b *Bus) AddCredential(ctx context.Context, c Credential) error {
	kv, err := b.JS.KeyValue(ctx, BucketCredentials)
	if err != nil {
		return fmt.Errorf("credentials bucket: %w", err)
	}
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if _, err := kv.Create(ctx, credentialKey(c.Role, c.Name), data); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("%s %q already has credentials: revoke them first (`jetqa admin %s revoke %s`)", c.Role, c.Name, c.Role, c.Name)
		}
		return fmt.Errorf("store credential: %w", err)
	}
	return nil
}

// RevokeCredential deletes a credential; every server closes its
// connections.
func (b *Bus) RevokeCredential(ctx context.Context, role, name string) error {
	kv, err := b.JS.KeyValue(ctx, BucketCredentials)
	if err != nil {
		return fmt.Errorf("credentials bucket: %w", err)
	}
	key := credentialKey(role, name)
	if _, err := kv.Get(ctx, key); errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("%s %q has no credentials", role, name)
	}
	if err := kv.Delete(ctx, key); err != nil {
		return fmt.Errorf("revoke %s %s: %w", role, name, err)
	}
	return nil
}

// Credentials lists the issued credentials.
func (b *Bus) Credentials(ctx context.Context) ([]Credential, error) {
	kv, err := b.JS.KeyValue(ctx, BucketCredentials)
	if err != nil {
		return nil, fmt.Errorf("credentials bucket: %w", err)
	}
	lister, err := kv.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	var out []Credential
	for key := range lister.Keys() {
		e, err := kv.Get(ctx, key)
		if err != nil {
			continue
		}
		var c Credential
		if json.Unmarshal(e.Value(), &c) == nil {
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b Credential) int { return strings.Compare(a.Role+"."+a.Name, b.Role+"."+b.Name) })
	return out, nil
}

// WatchCredentials calls fn with every issued credential, at start and
// after each change, until ctx ends.
func (b *Bus) WatchCredentials(ctx context.Context, fn func([]Credential)) error {
	kv, err := b.JS.KeyValue(ctx, BucketCredentials)
	if err != nil {
		return fmt.Errorf("credentials bucket: %w", err)
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return fmt.Errorf("watch credentials: %w", err)
	}
	defer func() { _ = w.Stop() }()
	current := map[string]Credential{}
	caughtUp := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil {
				caughtUp = true
			} else if e.Operation() != jetstream.KeyValuePut {
				delete(current, e.Key())
			} else {
				var c Credential
				if err := json.Unmarshal(e.Value(), &c); err != nil {
					b.log.Warn("unreadable credential", "key", e.Key(), "err", err)
					continue
				}
				current[e.Key()] = c
			}
			if caughtUp {
				all := make([]Credential, 0, len(current))
				for _, c := range current {
					all = append(all, c)
				}
				fn(all)
			}
		}
	}
}

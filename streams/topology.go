package streams

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"jetqa/schemas"
)

// Stream names. They and the subjects below are the contract between stages.
const (
	// StreamJobs holds every job's events on jetqa.job.<id>.<event>[.<host>.<instance>].
	StreamJobs = "JETQA_JOBS"
	// StreamWorkers holds worker announcements on jetqa.worker.<host>.<instance>.<event>.
	StreamWorkers = "JETQA_WORKERS"
	// StreamMatchRequests is the matcher pool's work queue.
	StreamMatchRequests = "JETQA_MATCH_REQUESTS"
	// StreamMatchResults holds the answers, one subject per worker instance.
	StreamMatchResults = "JETQA_MATCH_RESULTS"
	// StreamDead keeps messages a stage could not process, for inspection.
	StreamDead = "JETQA_DEAD"
	// StreamAssets holds asset registrations on jetqa.asset.<name>.registered.
	StreamAssets = "JETQA_ASSETS"
)

// Buckets.
const (
	BucketCounters = "jetqa-counters" // key-value: id sequences
	BucketNeedles  = "jetqa-needles"  // object store: needle JSON and PNG by content hash
	BucketResults  = "jetqa-results"  // object store: screenshots, logs, details
	BucketAssets   = "jetqa-assets"   // object store: registered assets by name
)

// Subjects.
const (
	SubjectJobs         = "jetqa.job.>"
	subjectMatchRequest = "jetqa.match.request"
	// SubjectMatchRequests holds every worker instance's match requests.
	SubjectMatchRequests = subjectMatchRequest + ".>"
	subjectMatchResolved = "jetqa.match.resolved"
	subjectDead          = "jetqa.dead"
)

// JobSubject is the subject all events of one job share as prefix.
func JobSubject(job int64) string { return "jetqa.job." + strconv.FormatInt(job, 10) }

// WorkerToken turns a worker reference into the two subject tokens
// <host>.<instance>. Characters a subject token cannot hold become "_".
func WorkerToken(w schemas.WorkerRef) string {
	return Token(w.Host) + "." + strconv.Itoa(w.Instance)
}

// Token makes s usable as one subject token.
func Token(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '_'
	}, s)
}

// Filters for the stages' consumers.

// AssignedTo matches the assignments of every instance of a worker host.
func AssignedTo(host string) string { return "jetqa.job.*.assigned." + Token(host) + ".*" }

// ReadyFor matches the jobs ready to boot on one worker instance.
func ReadyFor(w schemas.WorkerRef) string { return "jetqa.job.*.ready." + WorkerToken(w) }

// PrefetchFor matches the prefetch requests to a worker host.
func PrefetchFor(host string) string { return "jetqa.worker." + Token(host) + ".0.prefetch" }

// TestsFinishedOn matches the finished test runs of a worker host.
func TestsFinishedOn(host string) string { return "jetqa.job.*.tests_finished." + Token(host) + ".*" }

// JobEvents matches the given event tokens of every job ("created", "finished", …).
func JobEvents(token string) string { return "jetqa.job.*." + token }

// MatchRequestFor is where a worker instance's match requests go.
func MatchRequestFor(w schemas.WorkerRef) string { return subjectMatchRequest + "." + WorkerToken(w) }

// MatchResolvedFor is the subject on which one worker instance gets its answers.
func MatchResolvedFor(w schemas.WorkerRef) string { return subjectMatchResolved + "." + WorkerToken(w) }

// jobEventTokens maps job event kinds to their subject token after
// jetqa.job.<id>. Kinds addressed to a worker get .<host>.<instance> too.
var jobEventTokens = map[string]string{
	schemas.JobCreated{}.Kind():         "created",
	schemas.JobAssigned{}.Kind():        "assigned",
	schemas.JobUnassigned{}.Kind():      "unassigned",
	schemas.JobCancelRequested{}.Kind(): "cancel",
	schemas.JobRestarted{}.Kind():       "restarted",
	schemas.JobDeleted{}.Kind():         "deleted",
	schemas.JobFilesExpired{}.Kind():    "files_expired",
	schemas.AssetFetched{}.Kind():       "asset",
	schemas.RepoCheckedOut{}.Kind():     "repo",
	schemas.JobReady{}.Kind():           "ready",
	schemas.JobStarted{}.Kind():         "started",
	schemas.ModuleStarted{}.Kind():      "module",
	schemas.ModuleFinished{}.Kind():     "module",
	schemas.TestsFinished{}.Kind():      "tests_finished",
	schemas.JobFinished{}.Kind():        "finished",
	schemas.DeveloperCommand{}.Kind():   "developer",
	schemas.JobPaused{}.Kind():          "paused",
	schemas.JobResumed{}.Kind():         "resumed",
}

// workerEventTokens maps worker event kinds to their subject token after
// jetqa.worker.<host>.<instance>.
var workerEventTokens = map[string]string{
	schemas.WorkerRegistered{}.Kind():       "registered",
	schemas.WorkerHeartbeat{}.Kind():        "heartbeat",
	schemas.WorkerOffline{}.Kind():          "offline",
	schemas.AssetProgress{}.Kind():          "progress",
	schemas.CacheStatus{}.Kind():            "cache",
	schemas.AssetPrefetchRequested{}.Kind(): "prefetch",
	schemas.AssetPrefetched{}.Kind():        "prefetched",
}

// subject says where an event is appended.
func subject(job int64, p schemas.Payload) (string, error) {
	if token, ok := jobEventTokens[p.Kind()]; ok {
		s := JobSubject(job) + "." + token
		if t, ok := p.(schemas.Targeted); ok {
			s += "." + WorkerToken(t.Target())
		}
		return s, nil
	}
	switch p := p.(type) {
	case schemas.Targeted:
		if token, ok := workerEventTokens[p.Kind()]; ok {
			return "jetqa.worker." + WorkerToken(p.Target()) + "." + token, nil
		}
	case *schemas.MatchRequested:
		return MatchRequestFor(p.ReplyTo), nil
	case schemas.MatchRequested:
		return MatchRequestFor(p.ReplyTo), nil
	case *schemas.APIKeyCreated:
		return apiKeySubject(p.Key), nil
	case schemas.APIKeyCreated:
		return apiKeySubject(p.Key), nil
	case *schemas.APIKeyRevoked:
		return apiKeySubject(p.Key), nil
	case schemas.APIKeyRevoked:
		return apiKeySubject(p.Key), nil
	case *schemas.UserSet:
		return userSubject(p.User), nil
	case schemas.UserSet:
		return userSubject(p.User), nil
	case *schemas.UserRemoved:
		return userSubject(p.User), nil
	case schemas.UserRemoved:
		return userSubject(p.User), nil
	case *schemas.SessionSecretCreated, schemas.SessionSecretCreated:
		return subjectSessionSecret, nil
	case *schemas.AssetRegistered:
		return AssetSubject(p.Name), nil
	case schemas.AssetRegistered:
		return AssetSubject(p.Name), nil
	}
	return "", fmt.Errorf("no subject for event kind %s", p.Kind())
}

// Setup creates or updates every stream and bucket jetqa uses, with one
// replica. Every process calls it at start; it is idempotent.
func (b *Bus) Setup(ctx context.Context) error { return b.SetupReplicas(ctx, 1) }

// SetupReplicas is Setup for a NATS cluster: every new stream and bucket
// keeps replicas copies (3 on a three-node cluster). One that exists keeps
// the replica count it has: a server joining a cluster never lowers it.
func (b *Bus) SetupReplicas(ctx context.Context, replicas int) error {
	streams := []jetstream.StreamConfig{
		{
			Name:        StreamJobs,
			Description: "every job's events, the source of truth",
			Subjects:    []string{SubjectJobs},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Duplicates:  2 * time.Minute,
			// Reads go to the stream's leader. A direct get may be answered
			// by any replica, and one that restarted and has not caught up
			// answers with an old history: a job that finished looks
			// scheduled, and is run again.
			AllowDirect:  false,
			MaxConsumers: maxWorkerConsumers,
		},
		{
			Name:              StreamWorkers,
			Description:       "worker instances announcing themselves",
			Subjects:          []string{"jetqa.worker.>"},
			Storage:           jetstream.FileStorage,
			MaxMsgsPerSubject: 10,
			MaxConsumers:      maxWorkerConsumers,
		},
		{
			Name:        StreamMatchRequests,
			Description: "work queue of the needle matcher pool",
			Subjects:    []string{SubjectMatchRequests},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.WorkQueuePolicy,
			MaxAge:      time.Hour,
		},
		{
			Name:        StreamMatchResults,
			Description: "answers of the matcher pool, one subject per worker instance",
			Subjects:    []string{subjectMatchResolved + ".>"},
			Storage:     jetstream.FileStorage,
			MaxAge:      24 * time.Hour,
		},
		{
			Name:              StreamAssets,
			Description:       "assets registered on the server, the last per name",
			Subjects:          []string{"jetqa.asset.>"},
			Storage:           jetstream.FileStorage,
			MaxMsgsPerSubject: 1,
			AllowDirect:       true,
		},
		{
			// Readable by the server's own connections only: it holds the
			// keys' secrets, the users' password hashes and the session
			// secret (docs/security.md). A stream made before users were
			// gets their subjects here, as every process starts.
			Name:        StreamAPIKeys,
			Description: "API keys created and revoked, the web UI's users and its session secret",
			Subjects:    []string{subjectAPIKeys + ".>", subjectUsers + ".>", subjectSessionSecret},
			Storage:     jetstream.FileStorage,
		},
		{
			// Written by the operator's admin command, read by the API.
			Name:              StreamTemplates,
			Description:       "job templates loaded from a templates repository, the last loads",
			Subjects:          []string{subjectTemplates},
			Storage:           jetstream.FileStorage,
			MaxMsgsPerSubject: 20,
		},
		{
			// No rollups and no deletes: a worker publishing here only
			// ever adds; the server purges what it stored or refused.
			Name:        StreamChunks,
			Description: "blob chunks workers staged for the server to store",
			Subjects:    []string{subjectChunk + ".>"},
			Storage:     jetstream.FileStorage,
			MaxAge:      time.Hour,
			DenyDelete:  true,
		},
		{
			Name:        StreamDead,
			Description: "messages a stage gave up on, kept for inspection",
			Subjects:    []string{subjectDead + ".>"},
			Storage:     jetstream.FileStorage,
			MaxAge:      30 * 24 * time.Hour,
		},
	}
	for _, cfg := range streams {
		cfg.Replicas = b.replicasOf(ctx, cfg.Name, replicas)
		err := settle(ctx, func(ctx context.Context) error {
			_, err := b.JS.CreateOrUpdateStream(ctx, cfg)
			return err
		}, func(ctx context.Context) error {
			_, err := b.JS.Stream(ctx, cfg.Name)
			return err
		})
		if err != nil {
			return fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
	}
	for _, kv := range []jetstream.KeyValueConfig{
		{Bucket: BucketCounters, Description: "id sequences", Storage: jetstream.FileStorage, History: 1},
		{Bucket: BucketLeases, Description: "which process is the active one", Storage: jetstream.FileStorage, History: 1, TTL: LeaseTTL},
		{Bucket: BucketJobViews, Description: "the API's read model, derived from the job stream", Storage: jetstream.FileStorage, History: 1},
		{Bucket: BucketCredentials, Description: "credentials issued to workers and matchers", Storage: jetstream.FileStorage, History: 1},
		{Bucket: BucketNonces, Description: "nonces of signed API requests, kept as long as a signature is valid", Storage: jetstream.FileStorage, History: 1, TTL: NonceTTL},
	} {
		kv.Replicas = b.replicasOf(ctx, "KV_"+kv.Bucket, replicas)
		err := settle(ctx, func(ctx context.Context) error {
			_, err := b.JS.CreateOrUpdateKeyValue(ctx, kv)
			return err
		}, func(ctx context.Context) error {
			_, err := b.JS.KeyValue(ctx, kv.Bucket)
			return err
		})
		if err != nil {
			return fmt.Errorf("bucket %s: %w", kv.Bucket, err)
		}
	}
	for _, obj := range []jetstream.ObjectStoreConfig{
		{Bucket: BucketNeedles, Description: "needles by content hash", Storage: jetstream.FileStorage},
		{Bucket: BucketResults, Description: "job results: screenshots, logs, details", Storage: jetstream.FileStorage},
		{Bucket: BucketAssets, Description: "registered assets by name", Storage: jetstream.FileStorage},
	} {
		obj.Replicas = b.replicasOf(ctx, "OBJ_"+obj.Bucket, replicas)
		err := settle(ctx, func(ctx context.Context) error {
			_, err := b.JS.CreateOrUpdateObjectStore(ctx, obj)
			return err
		}, func(ctx context.Context) error {
			_, err := b.JS.ObjectStore(ctx, obj.Bucket)
			return err
		})
		if err != nil {
			return fmt.Errorf("object store %s: %w", obj.Bucket, err)
		}
	}
	_, err := b.createConsumer(ctx, MatchersConsumer.withDefaults())
	return err
}

// settleTry bounds one request of settle.
const settleTry = 3 * time.Second

// settle creates a stream or bucket. When the servers of a new cluster
// create the same stream at once, nats-server may never answer some of
// the requests although the stream was made (an equal, in-flight
// assignment is proposed again): so each request gets settleTry, and an
// unanswered one is followed by a look whether the stream is there now.
func settle(ctx context.Context, create, exists func(context.Context) error) error {
	for {
		try, cancel := context.WithTimeout(ctx, settleTry)
		err := create(try)
		cancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded):
			return err
		}
		look, cancel := context.WithTimeout(ctx, settleTry)
		err = exists(look)
		cancel()
		if err == nil {
			return nil
		}
	}
}

// maxWorkerConsumers bounds the consumers of the streams worker hosts have
// their own consumers on (a few per host and one per instance), above
// nats-server's default of 1 000 per stream: a fleet of 1 500 instances
// on 150 hosts needs 1 800 on the job stream.
const maxWorkerConsumers = 100_000

// DurableMatchers is the one consumer all matchers of all processes share.
const DurableMatchers = "matchers"

// MatchersConsumer is the matcher pool's consumer. The server creates it
// with the streams; matchers only use it.
var MatchersConsumer = ConsumerConfig{
	Stream:  StreamMatchRequests,
	Durable: DurableMatchers,
	Filters: []string{SubjectMatchRequests},
	// How long a request whose matcher went silent (its process killed,
	// its host gone) waits before another matcher takes it. A matcher at
	// work says so every third of it, however long the request takes.
	AckWait:       10 * time.Second,
	MaxDeliver:    3,
	MaxAckPending: 1024,
	// A request matched twice is answered twice; the worker takes the
	// first answer.
	AckUnconfirmed: true,
}

// replicasOf is the replica count a stream has, or want for a new one.
func (b *Bus) replicasOf(ctx context.Context, stream string, want int) int {
	s, err := b.JS.Stream(ctx, stream)
	if err != nil {
		return want
	}
	info, err := s.Info(ctx)
	if err != nil || info.Config.Replicas < 1 {
		return want
	}
	return info.Config.Replicas
}

// NeedleBlobKeys are the keys of a needle's JSON and PNG in BucketNeedles.
func NeedleBlobKeys(hash string) (jsonKey, pngKey string) {
	return hash + ".json", hash + ".png"
}

// BucketLeases holds leases that make one process of several the active
// one (the scheduler); an entry expires unless its holder renews it.
const BucketLeases = "jetqa-leases"

// AssetSubject is where the registration of the named asset is kept: the
// name made a subject token, plus a short hash of the exact name so that
// names differing only in characters a token cannot hold stay apart.
func AssetSubject(name string) string {
	h := sha256.Sum256([]byte(name))
	return "jetqa.asset." + Token(name) + "-" + hex.EncodeToString(h[:4]) + ".registered"
}

package streams

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"jetqa/schemas"
	"jetqa/streams/blobs"
)

// Workers never write an object store. Whoever may publish on a bucket's
// subjects may delete or replace any object in it (a metadata message
// marked deleted, a chunk appended to another object's subject, a
// "Nats-Rollup: all" header that empties the bucket), and NATS permissions
// cannot look at headers. So a worker stages a blob's chunks on
// jetqa.chunk.<host>.<id>, in a stream of its own that takes no rollups,
// and asks on jetqa.store.<host>.<instance> to store them under a name;
// the server's authority checks the name against the sender, copies the
// chunks into the bucket while hashing them, and writes the metadata as
// nats.go's ObjectStore.Put would, so every reader keeps using the
// ordinary object store API.
const (
	subjectStore = "jetqa.store"
	subjectChunk = "jetqa.chunk"
	// SubjectStores is what the authority serves.
	SubjectStores = subjectStore + ".>"
	// StreamChunks holds the chunks workers staged, until the server has
	// stored them or an hour passed.
	StreamChunks = "JETQA_CHUNKS"

	// chunkSize is nats.go's default chunk size: a stored object is laid
	// out as a Put would lay it out.
	chunkSize = 128 * 1024
	// chunksInFlight bounds the chunks sent and not yet acknowledged, and
	// so the memory one upload takes.
	chunksInFlight = 16
)

// StoreSubject is where a worker instance asks the server to store a blob.
func StoreSubject(w schemas.WorkerRef) string { return subjectStore + "." + WorkerToken(w) }

// chunkSubject is where a worker host stages the chunks of one upload.
func chunkSubject(host, id string) string { return subjectChunk + "." + host + "." + id }

// storeRequest asks the server to store the chunks staged under NUID as
// Name in Bucket; Size, Chunks and Digest (nats.go's "SHA-256=<base64url>")
// are what the server must find.
type storeRequest struct {
	Bucket string `json:"bucket"`
	Name   string `json:"name"`
	NUID   string `json:"nuid"`
	Size   uint64 `json:"size"`
	Chunks uint32 `json:"chunks"`
	Digest string `json:"digest"`
	// Probe asks only whether the blob is stored: the answer's sequence
	// is 1 if it is, with the size asked.
	Probe bool `json:"probe,omitempty"`
	// Job is the job that publishes an asset.
	Job int64 `json:"job,omitempty"`
}

// staging is one blob a worker is staging. The chunks the stream has
// acknowledged, from the first on, survive a cut of the connection: the
// next try hashes them again from the reader but sends only the rest.
// Each chunk carries a message id, so one sent again whose
// acknowledgement was lost is stored once.
type staging struct {
	req   storeRequest
	acked uint32
}

func newStaging(bucket, key string) *staging {
	return &staging{req: storeRequest{Bucket: bucket, Name: key, NUID: nuid.Next()}}
}

// stageBlob is PutBlob on a worker's bus: it stages r chunk by chunk,
// hashing as it goes, and asks the server to store it. An error from
// staging leaves st where it got to; an error from the server's decision
// starts st over.
func (b *Bus) stageBlob(ctx context.Context, st *staging, r io.Reader) error {
	req := &st.req
	req.Size, req.Chunks = 0, 0
	subj := chunkSubject(Token(b.worker.Host), req.NUID)
	sum := sha256.New()
	var acks []jetstream.PubAckFuture
	wait := func(f jetstream.PubAckFuture) error {
		select {
		case <-f.Ok():
			st.acked++
			return nil
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	fail := func(err error) error {
		// What the stream took before the failure counts for the next try.
		for _, f := range acks {
			if wait(f) != nil {
				break
			}
		}
		return fmt.Errorf("store %s/%s: %w", req.Bucket, req.Name, err)
	}
	buf := make([]byte, chunkSize)
	for {
		n, rerr := io.ReadFull(r, buf)
		if rerr != nil && rerr != io.EOF && rerr != io.ErrUnexpectedEOF {
			// Not even this chunk's bytes are sure.
			return fail(rerr)
		}
		if n > 0 {
			sum.Write(buf[:n])
			if req.Chunks >= st.acked {
				msg := &nats.Msg{Subject: subj, Data: bytes.Clone(buf[:n]), Header: nats.Header{}}
				msg.Header.Set(nats.MsgIdHdr, req.NUID+"."+strconv.FormatUint(uint64(req.Chunks), 10))
				f, err := b.JS.PublishMsgAsync(msg)
				if err != nil {
					return fail(err)
				}
				acks = append(acks, f)
				if len(acks) == chunksInFlight {
					f := acks[0]
					acks = acks[1:]
					if err := wait(f); err != nil {
						return fail(err)
					}
				}
			}
			req.Size += uint64(n)
			req.Chunks++
		}
		if rerr != nil {
			break
		}
	}
	for len(acks) > 0 {
		f := acks[0]
		acks = acks[1:]
		if err := wait(f); err != nil {
			return fail(err)
		}
	}
	req.Digest = jetstream.GetObjectDigestValue(sum)
	msg := nats.NewMsg(StoreSubject(*b.worker))
	msg.Data, _ = json.Marshal(req)
	// A request sent again finds its blob stored, and is answered so.
	if _, err := b.ask(ctx, msg); err != nil {
		// The server removes the staged chunks once it decided: the next
		// try stages them all again, under a new id.
		st.req.NUID, st.acked = nuid.Next(), 0
		return fail(err)
	}
	return nil
}

var (
	nuidRe       = regexp.MustCompile(`^[A-Za-z0-9]{1,32}$`)
	needleKeyRe  = regexp.MustCompile(`^([0-9a-f]{64})\.(json|png)$`)
	errNotStaged = errors.New("the staged chunks are not all there")
)

// storePolicy is what the server allows a worker to store under a name.
type storePolicy struct {
	// replace: the name may hold new content; otherwise the first stored
	// stays, and a second store of it is answered without storing.
	replace bool
	// sha256 is the hex hash the content must have, if the name says it.
	sha256 string
	// needle is the content hash of a needle the blob is half of.
	needle string
	// assetOf is the job that publishes the blob as an asset: once stored,
	// the server registers it.
	assetOf int64
}

// policy decides whether from may store req's name: content-addressed
// needles and results, create-only; and the assets a job assigned to
// from's host publishes.
func (b *Bus) policy(ctx context.Context, from ReportSender, req storeRequest) (storePolicy, error) {
	switch req.Bucket {
	case BucketAssets:
		return b.assetPolicy(ctx, from, req)
	case BucketNeedles:
		if m := needleKeyRe.FindStringSubmatch(req.Name); m != nil {
			return storePolicy{needle: m[1]}, nil
		}
	case BucketResults:
		// Results are stored by their content: anyone's screenshot of the
		// same screen is the same blob, and no name can be taken over.
		if sum := blobs.ContentSum(req.Name); sum != "" {
			return storePolicy{sha256: sum}, nil
		}
	}
	return storePolicy{}, fmt.Errorf("%w: worker %s may not store %q in %s", ErrRefused, from, req.Name, req.Bucket)
}

// assetPolicy lets a job publish, once its tests passed on from's host,
// the disks its PUBLISH_HDD_n settings name, its private uploads
// ("<job>-<name>"), and public uploads under a name no operator gave an
// asset (`jetqa asset add`): those a job published may be published again.
func (b *Bus) assetPolicy(ctx context.Context, from ReportSender, req storeRequest) (storePolicy, error) {
	refuse := func(why string, args ...any) (storePolicy, error) {
		return storePolicy{}, fmt.Errorf("%w: worker %s may not publish asset %q: %s", ErrRefused, from, req.Name, fmt.Sprintf(why, args...))
	}
	if req.Job <= 0 {
		return refuse("no job publishes it")
	}
	if err := schemas.CheckAssetName(req.Name); err != nil {
		return refuse("%v", err)
	}
	agg, err := b.LoadJob(ctx, req.Job)
	if errors.Is(err, ErrNoJob) {
		return refuse("there is no job %d", req.Job)
	}
	if err != nil {
		return storePolicy{}, err
	}
	if agg.Worker == nil || Token(agg.Worker.Host) != from.Host {
		return refuse("job %d is not assigned to it", req.Job)
	}
	if agg.State != schemas.StateUploading || agg.Tested != schemas.ResultPassed && agg.Tested != schemas.ResultSoftfailed {
		return refuse("job %d is %s (tests %s), not uploading the results of passed tests", req.Job, agg.State, agg.Tested)
	}
	pol := storePolicy{replace: true, assetOf: req.Job}
	if strings.HasPrefix(req.Name, strconv.FormatInt(req.Job, 10)+"-") {
		return pol, nil
	}
	for k, v := range agg.Settings {
		if v == req.Name && strings.HasPrefix(k, "PUBLISH_") {
			return pol, nil
		}
	}
	reg, err := b.LookupAsset(ctx, req.Name)
	switch {
	case errors.Is(err, ErrNoAsset):
		return pol, nil
	case err != nil:
		return storePolicy{}, err
	case strings.HasPrefix(reg.Source, "job "):
		return pol, nil
	}
	return refuse("an operator registered it (from %s)", reg.Source)
}

// storeBlob decides a worker's request to store staged chunks, or to say
// whether a result is stored (the answer's sequence is 1 if it is). The
// staged chunks are removed whatever the decision: a worker that is told
// to try again stages them again.
func (b *Bus) storeBlob(ctx context.Context, from ReportSender, data []byte) (uint64, error) {
	var req storeRequest
	if err := json.Unmarshal(data, &req); err != nil {
		return 0, fmt.Errorf("%w: unreadable store request: %v", ErrRefused, err)
	}
	if req.Probe {
		if req.Bucket != BucketResults {
			return 0, fmt.Errorf("%w: worker %s may only ask after results", ErrRefused, from)
		}
		if b.storedResult(ctx, req) {
			return 1, nil
		}
		return 0, nil
	}
	if !nuidRe.MatchString(req.NUID) {
		return 0, fmt.Errorf("%w: store request with chunks under %q", ErrRefused, req.NUID)
	}
	staged := chunkSubject(from.Host, req.NUID)
	var err error
	if req.Bucket == BucketResults {
		err = b.commitResult(ctx, from, req, staged)
	} else {
		err = b.commitBlob(ctx, from, req, staged)
	}
	if s, serr := b.JS.Stream(ctx, StreamChunks); serr == nil {
		if perr := s.Purge(ctx, jetstream.WithPurgeSubject(staged)); perr != nil {
			b.log.Warn("staged chunks not removed", "worker", from.String(), "subject", staged, "err", perr)
		}
	}
	return 0, err
}

// storedResult says whether the results store holds req's blob, whole.
func (b *Bus) storedResult(ctx context.Context, req storeRequest) bool {
	if blobs.ContentSum(req.Name) == "" {
		return false
	}
	info, err := b.Results().Stat(ctx, req.Name)
	return err == nil && info.Size == int64(req.Size)
}

// commitResult streams the staged chunks into the results store, which
// checks them against the name's hash as they pass: a result is stored
// whole and verified, or not at all. Content already stored is not
// stored again.
func (b *Bus) commitResult(ctx context.Context, from ReportSender, req storeRequest, staged string) error {
	pol, err := b.policy(ctx, from, req)
	if err != nil {
		return err
	}
	if b.storedResult(ctx, req) {
		return nil
	}
	pr, pw := io.Pipe()
	read := make(chan error, 1)
	go func() {
		_, _, _, err := b.readStaged(ctx, staged, req.Chunks, func(data []byte) error {
			_, err := pw.Write(data)
			return err
		})
		pw.CloseWithError(err)
		read <- err
	}()
	_, err = b.Results().Put(ctx, req.Name, pr, int64(req.Size), pol.sha256)
	pr.CloseWithError(errors.New("the store stopped reading"))
	rerr := <-read
	switch {
	case errors.Is(rerr, errNotStaged):
		if b.storedResult(ctx, req) {
			// The same request sent again was decided meanwhile.
			return nil
		}
		return fmt.Errorf("%w: %s from worker %s: %v", ErrRefused, req.Name, from, rerr)
	case errors.Is(err, blobs.ErrCorrupt):
		return fmt.Errorf("%w: %s from worker %s: %v", ErrRefused, req.Name, from, err)
	case err != nil:
		return err
	}
	return nil
}

// storedObject is an object's metadata message: the object (nil if there
// is none or it was deleted) and the message's sequence, 0 for none.
func (b *Bus) storedObject(ctx context.Context, objects jetstream.Stream, bucket, name string) (*jetstream.ObjectInfo, uint64, error) {
	raw, err := objects.GetLastMsgForSubject(ctx, metaSubject(bucket, name))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("look up %s/%s: %w", bucket, name, err)
	}
	var info jetstream.ObjectInfo
	if err := json.Unmarshal(raw.Data, &info); err != nil {
		return nil, 0, fmt.Errorf("look up %s/%s: %w", bucket, name, err)
	}
	if info.Deleted {
		return nil, raw.Sequence, nil
	}
	return &info, raw.Sequence, nil
}

func metaSubject(bucket, name string) string {
	return "$O." + bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(name))
}

func objChunks(bucket, id string) string { return "$O." + bucket + ".C." + id }

// commitBlob copies the staged chunks into the bucket under a new id and
// points the name at them, if the policy allows.
func (b *Bus) commitBlob(ctx context.Context, from ReportSender, req storeRequest, staged string) error {
	pol, err := b.policy(ctx, from, req)
	if err != nil {
		return err
	}
	objects, err := b.JS.Stream(ctx, objStream(req.Bucket))
	if err != nil {
		return fmt.Errorf("stream %s: %w", objStream(req.Bucket), err)
	}
	old, oldSeq, err := b.storedObject(ctx, objects, req.Bucket, req.Name)
	if err != nil {
		return err
	}
	if old != nil && (!pol.replace || old.Size == req.Size && old.Digest == req.Digest) {
		// The first copy stays; or this is a request sent again.
		return nil
	}

	// A needle's two files together hash to its name: hash the other
	// half, if stored, in its place around this one.
	var pair hash.Hash
	var before, after []byte
	if pol.needle != "" {
		jsonKey, pngKey := NeedleBlobKeys(pol.needle)
		other, first := pngKey, true
		if req.Name == pngKey {
			other, first = jsonKey, false
		}
		o, _, err := b.storedObject(ctx, objects, req.Bucket, other)
		if err != nil {
			return err
		}
		if o != nil {
			half, err := b.GetBlob(ctx, req.Bucket, other)
			if err != nil {
				return err
			}
			pair = sha256.New()
			if first {
				after = half
			} else {
				before = half
			}
		}
	}
	if pair != nil {
		pair.Write(before)
	}

	id := nuid.Next()
	size, n, sum, err := b.copyChunks(ctx, staged, objChunks(req.Bucket, id), req.Chunks, pair)
	dropCopy := func() {
		if perr := objects.Purge(ctx, jetstream.WithPurgeSubject(objChunks(req.Bucket, id))); perr != nil {
			b.log.Warn("copied chunks not removed", "bucket", req.Bucket, "nuid", id, "err", perr)
		}
	}
	// The same request sent again while this one was at work may have
	// been decided meanwhile: its staged chunks are gone, or the name has
	// moved on.
	storedMeanwhile := func() bool {
		now, _, err := b.storedObject(ctx, objects, req.Bucket, req.Name)
		return err == nil && now != nil && now.Size == req.Size && now.Digest == req.Digest
	}
	if errors.Is(err, errNotStaged) {
		dropCopy()
		if storedMeanwhile() {
			return nil
		}
		return fmt.Errorf("%w: %s/%s from worker %s: %v", ErrRefused, req.Bucket, req.Name, from, err)
	}
	if err != nil {
		dropCopy()
		return err
	}
	digest := objDigest(sum)
	why := ""
	switch {
	case size != req.Size || n != req.Chunks || digest != req.Digest:
		why = fmt.Sprintf("staged %d bytes in %d chunks with digest %s, not %d in %d with %s", size, n, digest, req.Size, req.Chunks, req.Digest)
	case pol.sha256 != "" && hex.EncodeToString(sum) != pol.sha256:
		why = fmt.Sprintf("the content hashes to %x, not to its name", sum)
	case pair != nil:
		pair.Write(after)
		if got := hex.EncodeToString(pair.Sum(nil)); got != pol.needle {
			why = fmt.Sprintf("with the needle's other file it hashes to %s, not to its name", got)
		}
	}
	if why != "" {
		dropCopy()
		return fmt.Errorf("%w: %s/%s from worker %s: %s", ErrRefused, req.Bucket, req.Name, from, why)
	}

	info := jetstream.ObjectInfo{
		ObjectMeta: jetstream.ObjectMeta{Name: req.Name, Opts: &jetstream.ObjectMetaOptions{ChunkSize: chunkSize}},
		Bucket:     req.Bucket, NUID: id, Size: size, Chunks: n, Digest: digest,
	}
	meta := nats.NewMsg(metaSubject(req.Bucket, req.Name))
	meta.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	meta.Data, _ = json.Marshal(info)
	// Only over what was read above: two stores of one name at once do
	// not both win.
	if _, err := b.JS.PublishMsg(ctx, meta, jetstream.WithExpectLastSequencePerSubject(oldSeq)); err != nil {
		dropCopy()
		if storedMeanwhile() {
			return nil
		}
		return fmt.Errorf("store %s/%s: %w", req.Bucket, req.Name, err)
	}
	if old != nil {
		if err := objects.Purge(ctx, jetstream.WithPurgeSubject(objChunks(req.Bucket, old.NUID))); err != nil {
			b.log.Warn("replaced chunks not removed", "bucket", req.Bucket, "name", req.Name, "err", err)
		}
	}
	if pol.assetOf > 0 {
		reg := schemas.AssetRegistered{Name: req.Name, SHA256: hex.EncodeToString(sum), Size: int64(size), Source: fmt.Sprintf("job %d", pol.assetOf)}
		if _, err := b.Append(ctx, 0, reg); err != nil {
			return fmt.Errorf("register asset %s: %w", req.Name, err)
		}
	}
	return nil
}

// copyChunks copies the want chunks staged on staged to dst, one at a
// time, and returns their size, count and SHA-256; pair, if set, hashes
// them too. errNotStaged: there are not exactly want chunks.
func (b *Bus) copyChunks(ctx context.Context, staged, dst string, want uint32, pair hash.Hash) (uint64, uint32, []byte, error) {
	return b.readStaged(ctx, staged, want, func(data []byte) error {
		if pair != nil {
			pair.Write(data)
		}
		if _, err := b.JS.PublishMsg(ctx, &nats.Msg{Subject: dst, Data: data}); err != nil {
			return fmt.Errorf("copy %s: %w", staged, err)
		}
		return nil
	})
}

// readStaged reads the want chunks staged on staged, in order, into fn,
// and returns their size, count and SHA-256. errNotStaged: there are not
// exactly want chunks.
func (b *Bus) readStaged(ctx context.Context, staged string, want uint32, fn func([]byte) error) (uint64, uint32, []byte, error) {
	sum := sha256.New()
	var size uint64
	var n uint32
	if want == 0 {
		return 0, 0, sum.Sum(nil), nil
	}
	if want == 1 {
		// Most screenshots fit one chunk: two reads by subject instead
		// of a consumer.
		data, err := b.oneStagedChunk(ctx, staged)
		if err != nil {
			return 0, 0, nil, err
		}
		sum.Write(data)
		if err := fn(data); err != nil {
			return 0, 0, nil, err
		}
		return uint64(len(data)), 1, sum.Sum(nil), nil
	}
	// Just after a node is lost the stream may answer nobody for a moment,
	// until its new leader is elected.
	var cons jetstream.Consumer
	var err error
	for wait := 100 * time.Millisecond; ; wait *= 2 {
		cons, err = b.JS.OrderedConsumer(ctx, StreamChunks, jetstream.OrderedConsumerConfig{FilterSubjects: []string{staged}})
		if err == nil || !errors.Is(err, nats.ErrNoResponders) || wait > 3*time.Second {
			break
		}
		select {
		case <-ctx.Done():
			return 0, 0, nil, ctx.Err()
		case <-time.After(wait):
		}
	}
	if err != nil {
		return 0, 0, nil, fmt.Errorf("read %s: %w", staged, err)
	}
	for n < want {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) {
			return 0, 0, nil, fmt.Errorf("%w: %d of %d", errNotStaged, n, want)
		}
		if err != nil {
			return 0, 0, nil, fmt.Errorf("read %s: %w", staged, err)
		}
		meta, err := msg.Metadata()
		if err != nil {
			return 0, 0, nil, err
		}
		if n == 0 && meta.NumPending+1 != uint64(want) {
			return 0, 0, nil, fmt.Errorf("%w: %d staged, %d announced", errNotStaged, meta.NumPending+1, want)
		}
		data := msg.Data()
		if len(data) > chunkSize {
			return 0, 0, nil, fmt.Errorf("%w: a chunk of %d bytes", errNotStaged, len(data))
		}
		sum.Write(data)
		if err := fn(data); err != nil {
			return 0, 0, nil, err
		}
		size += uint64(len(data))
		n++
	}
	return size, n, sum.Sum(nil), nil
}

// oneStagedChunk reads the only chunk staged on staged, or fails with
// errNotStaged if there is none or more than one.
func (b *Bus) oneStagedChunk(ctx context.Context, staged string) ([]byte, error) {
	s, err := b.JS.Stream(ctx, StreamChunks)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", StreamChunks, err)
	}
	first, err := s.GetMsg(ctx, 1, jetstream.WithGetMsgSubject(staged))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("%w: 0 of 1", errNotStaged)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", staged, err)
	}
	last, err := s.GetLastMsgForSubject(ctx, staged)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		// The same request sent again was decided between the two reads,
		// and its chunks removed.
		return nil, fmt.Errorf("%w: 1 staged, then removed", errNotStaged)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", staged, err)
	}
	if last.Sequence != first.Sequence {
		return nil, fmt.Errorf("%w: more than the 1 announced", errNotStaged)
	}
	if len(first.Data) > chunkSize {
		return nil, fmt.Errorf("%w: a chunk of %d bytes", errNotStaged, len(first.Data))
	}
	return first.Data, nil
}

// objDigest is a SHA-256 as nats.go writes it in an object's metadata.
func objDigest(sum []byte) string { return "SHA-256=" + base64.URLEncoding.EncodeToString(sum) }

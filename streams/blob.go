package streams

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"jetqa/schemas"
	"jetqa/streams/blobs"
)

// ErrBlobNotFound is returned for a key a bucket does not hold.
var ErrBlobNotFound = blobs.ErrNotFound

func (b *Bus) objectStore(ctx context.Context, bucket string) (jetstream.ObjectStore, error) {
	os, err := b.JS.ObjectStore(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", bucket, err)
	}
	return os, nil
}

// PutBlob stores r under key in the bucket. A worker's bus stages the
// chunks and the server stores them, if the worker may store that key.
func (b *Bus) PutBlob(ctx context.Context, bucket, key string, r io.Reader) error {
	if b.worker != nil {
		return b.stageBlobRetrying(ctx, newStaging(bucket, key), r)
	}
	store, err := b.objectStore(ctx, bucket)
	if err != nil {
		return err
	}
	if _, err := store.Put(ctx, jetstream.ObjectMeta{Name: key}, r); err != nil {
		return fmt.Errorf("store %s/%s: %w", bucket, key, err)
	}
	return nil
}

// stageBlobRetrying is stageBlob, tried again while it fails for another
// reason than a refusal, if r can be read again (the stages hand files
// and bytes): a cut connection, or a stream leader lost with its node,
// answers neither the chunks nor the server's read of them for a while.
// A try goes on from the chunks the last one got stored.
func (b *Bus) stageBlobRetrying(ctx context.Context, st *staging, r io.Reader) error {
	seeker, again := r.(io.Seeker)
	var start int64
	if again {
		var err error
		if start, err = seeker.Seek(0, io.SeekCurrent); err != nil {
			again = false
		}
	}
	bucket, key := st.req.Bucket, st.req.Name
	wait := time.Second
	for try := 1; ; try++ {
		err := b.stageBlob(ctx, st, r)
		if err == nil || !again || errors.Is(err, ErrRefused) || ctx.Err() != nil || try == 5 {
			return err
		}
		b.log.Warn("storing a blob failed, trying again", "bucket", bucket, "key", key, "try", try, "stored chunks", st.acked, "err", err)
		if _, serr := seeker.Seek(start, io.SeekStart); serr != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// UseResults makes the server's bus keep results in store (S3) instead of
// the results object store bucket.
func (b *Bus) UseResults(store blobs.Store) { b.results = store }

// Results is the store the server keeps results in.
func (b *Bus) Results() blobs.Store {
	if b.results != nil {
		return b.results
	}
	return blobs.NewObjectStore(b.JS, BucketResults)
}

// HasResult says whether the results store holds the content with the
// given hex SHA-256 and size. A worker asks the server, who alone knows
// where results are kept.
func (b *Bus) HasResult(ctx context.Context, sum string, size int64) (bool, error) {
	key := blobs.ContentKey(sum)
	if b.worker != nil {
		msg := nats.NewMsg(StoreSubject(*b.worker))
		msg.Data, _ = json.Marshal(storeRequest{Bucket: BucketResults, Name: key, Size: uint64(size), Probe: true})
		have, err := b.ask(ctx, msg)
		if err != nil {
			return false, fmt.Errorf("look up result %s: %w", key, err)
		}
		return have == 1, nil
	}
	info, err := b.Results().Stat(ctx, key)
	if errors.Is(err, blobs.ErrNotFound) {
		return false, nil
	}
	return err == nil && info.Size == size, err
}

// PutResult stores size bytes from r, whose hex SHA-256 is sum, as a
// result, and returns its key. A worker stages them for the server, which
// verifies them as it stores them.
func (b *Bus) PutResult(ctx context.Context, sum string, r io.Reader, size int64) (string, error) {
	key := blobs.ContentKey(sum)
	if b.worker != nil {
		return key, b.stageBlobRetrying(ctx, newStaging(BucketResults, key), r)
	}
	_, err := b.Results().Put(ctx, key, r, size, sum)
	return key, err
}

// PutAsset stores a file job publishes (PUBLISH_HDD_n, upload_asset) as
// the named asset, and registers it. A worker stages it; the server checks
// that the job may publish that name, stores it and registers it.
func (b *Bus) PutAsset(ctx context.Context, job int64, name string, r io.Reader) error {
	if b.worker != nil {
		st := newStaging(BucketAssets, name)
		st.req.Job = job
		return b.stageBlobRetrying(ctx, st, r)
	}
	_, err := b.AddAsset(ctx, name, fmt.Sprintf("job %d", job), r)
	return err
}

// AddAsset stores what r holds as the named asset, hashing it on the way,
// and registers it with its source: the server's own store, for the
// operator's `jetqa asset add` and for jobs whose upload runs on the
// server's bus.
func (b *Bus) AddAsset(ctx context.Context, name, source string, r io.Reader) (schemas.AssetRegistered, error) {
	h := sha256.New()
	counted := &countingReader{r: io.TeeReader(r, h)}
	if err := b.PutBlob(ctx, BucketAssets, name, counted); err != nil {
		return schemas.AssetRegistered{}, err
	}
	reg := schemas.AssetRegistered{Name: name, SHA256: hex.EncodeToString(h.Sum(nil)), Size: counted.n, Source: source}
	_, err := b.Append(ctx, 0, reg)
	return reg, err
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// HasBlob says whether the bucket holds key.
func (b *Bus) HasBlob(ctx context.Context, bucket, key string) (has bool, err error) {
	err = b.patiently(ctx, "look up "+bucket+"/"+key, func(ctx context.Context) error {
		has, err = b.hasBlob(ctx, bucket, key)
		return err
	})
	return has, err
}

func (b *Bus) hasBlob(ctx context.Context, bucket, key string) (bool, error) {
	store, err := b.objectStore(ctx, bucket)
	if err != nil {
		return false, err
	}
	_, err = store.GetInfo(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrObjectNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("look up %s/%s: %w", bucket, key, err)
	}
	return true, nil
}

// GetBlob reads a whole blob.
func (b *Bus) GetBlob(ctx context.Context, bucket, key string) (data []byte, err error) {
	err = b.patiently(ctx, "read "+bucket+"/"+key, func(ctx context.Context) error {
		data, err = b.getBlob(ctx, bucket, key)
		return err
	})
	return data, err
}

func (b *Bus) getBlob(ctx context.Context, bucket, key string) ([]byte, error) {
	store, err := b.objectStore(ctx, bucket)
	if err != nil {
		return nil, err
	}
	data, err := store.GetBytes(ctx, key)
	if err != nil {
		return nil, readError(bucket, key, err)
	}
	return data, nil
}

// readError is the error of reading key from bucket: ErrBlobNotFound
// when there is no such blob.
func readError(bucket, key string, err error) error {
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("%s/%s: %w", bucket, key, ErrBlobNotFound)
	}
	return fmt.Errorf("read %s/%s: %w", bucket, key, err)
}

// OpenBlob streams a blob; the caller closes it. It also returns the size.
func (b *Bus) OpenBlob(ctx context.Context, bucket, key string) (io.ReadCloser, int64, error) {
	return b.OpenBlobAt(ctx, bucket, key, 0)
}

// ErrNoAsset is returned for an asset name nobody registered.
var ErrNoAsset = errors.New("no asset registered under that name")

// LookupAsset returns the latest registration of the named asset.
func (b *Bus) LookupAsset(ctx context.Context, name string) (*schemas.AssetRegistered, error) {
	s, err := b.JS.Stream(ctx, StreamAssets)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", StreamAssets, err)
	}
	raw, err := s.GetLastMsgForSubject(ctx, AssetSubject(name))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("asset %q: %w", name, ErrNoAsset)
	}
	if err != nil {
		return nil, fmt.Errorf("asset %q: %w", name, err)
	}
	_, p, err := decode(raw.Header.Get(HeaderKind), raw.Data)
	if err != nil {
		return nil, fmt.Errorf("asset %q: %w", name, err)
	}
	reg, ok := p.(*schemas.AssetRegistered)
	if !ok || reg.Name != name {
		return nil, fmt.Errorf("asset %q: %w", name, ErrNoAsset)
	}
	return reg, nil
}

// OpenBlobAt streams a blob from offset on, reading only the chunks from
// the one that holds offset: an interrupted transfer resumes without
// transferring again what it already has. It also returns the whole size.
func (b *Bus) OpenBlobAt(ctx context.Context, bucket, key string, offset int64) (io.ReadCloser, int64, error) {
	r, info, err := blobs.NewObjectStore(b.JS, bucket).Open(ctx, key, offset)
	return r, info.Size, err
}

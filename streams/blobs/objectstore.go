package blobs

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ObjectStore is a Store on a JetStream object store bucket: the embedded
// default, replicated with the cluster's streams.
type ObjectStore struct {
	js     jetstream.JetStream
	bucket string
}

// NewObjectStore returns the Store on the bucket, which must exist.
func NewObjectStore(js jetstream.JetStream, bucket string) *ObjectStore {
	return &ObjectStore{js: js, bucket: bucket}
}

// Describe names the bucket.
func (s *ObjectStore) Describe() string { return "object store " + s.bucket }

func (s *ObjectStore) store(ctx context.Context) (jetstream.ObjectStore, error) {
	os, err := s.js.ObjectStore(ctx, s.bucket)
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", s.bucket, err)
	}
	return os, nil
}

// Put streams r into the bucket chunk by chunk; nats.go writes the
// object's metadata, which makes it visible, only after its last chunk,
// and removes the chunks when the read fails.
func (s *ObjectStore) Put(ctx context.Context, key string, r io.Reader, size int64, sha string) (Info, error) {
	os, err := s.store(ctx)
	if err != nil {
		return Info{}, err
	}
	v := verify(key, r, size, sha)
	info, err := os.Put(ctx, jetstream.ObjectMeta{Name: key}, v)
	if err != nil {
		return Info{}, fmt.Errorf("store %s/%s: %w", s.bucket, key, err)
	}
	return s.info(info), nil
}

func (s *ObjectStore) info(o *jetstream.ObjectInfo) Info {
	sum := ""
	if raw, err := base64.URLEncoding.DecodeString(strings.TrimPrefix(o.Digest, "SHA-256=")); err == nil {
		sum = hex.EncodeToString(raw)
	}
	return Info{Key: o.Name, Size: int64(o.Size), SHA256: sum, Modified: o.ModTime}
}

// Stat describes the object.
func (s *ObjectStore) Stat(ctx context.Context, key string) (Info, error) {
	os, err := s.store(ctx)
	if err != nil {
		return Info{}, err
	}
	o, err := os.GetInfo(ctx, key)
	if err != nil {
		return Info{}, s.readError(key, err)
	}
	return s.info(o), nil
}

func (s *ObjectStore) readError(key string, err error) error {
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("%s/%s: %w", s.bucket, key, ErrNotFound)
	}
	return fmt.Errorf("read %s/%s: %w", s.bucket, key, err)
}

// Delete removes the object and its chunks.
func (s *ObjectStore) Delete(ctx context.Context, key string) error {
	os, err := s.store(ctx)
	if err != nil {
		return err
	}
	if err := os.Delete(ctx, key); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("delete %s/%s: %w", s.bucket, key, err)
	}
	return nil
}

// List reads every object's metadata and calls fn for those under prefix.
func (s *ObjectStore) List(ctx context.Context, prefix string, fn func(Info) error) error {
	os, err := s.store(ctx)
	if err != nil {
		return err
	}
	all, err := os.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list %s: %w", s.bucket, err)
	}
	var infos []Info
	for _, o := range all {
		if strings.HasPrefix(o.Name, prefix) {
			infos = append(infos, s.info(o))
		}
	}
	slices.SortFunc(infos, func(a, b Info) int { return strings.Compare(a.Key, b.Key) })
	for _, i := range infos {
		if err := fn(i); err != nil {
			return err
		}
	}
	return nil
}

// Open streams the object from offset on, reading only the chunks from
// the one that holds offset: an interrupted transfer resumes without
// transferring again what it already has.
func (s *ObjectStore) Open(ctx context.Context, key string, offset int64) (io.ReadCloser, Info, error) {
	os, err := s.store(ctx)
	if err != nil {
		return nil, Info{}, err
	}
	if offset == 0 {
		obj, err := os.Get(ctx, key)
		if err != nil {
			return nil, Info{}, s.readError(key, err)
		}
		o, err := obj.Info()
		if err != nil {
			obj.Close()
			return nil, Info{}, s.readError(key, err)
		}
		return obj, s.info(o), nil
	}
	o, err := os.GetInfo(ctx, key)
	if err != nil {
		return nil, Info{}, s.readError(key, err)
	}
	info := s.info(o)
	if offset >= info.Size {
		return io.NopCloser(strings.NewReader("")), info, nil
	}
	r, err := s.openAt(ctx, o, offset)
	if err != nil {
		return nil, Info{}, fmt.Errorf("read %s/%s at %d: %w", s.bucket, key, offset, err)
	}
	return r, info, nil
}

// openAt finds the stream sequence of the chunk holding offset by reading
// the chunks' headers only (an object's chunks are the messages on
// $O.<bucket>.C.<nuid>, in order), then reads payloads from there.
func (s *ObjectStore) openAt(ctx context.Context, o *jetstream.ObjectInfo, offset int64) (io.ReadCloser, error) {
	stream := "OBJ_" + s.bucket
	chunks := "$O." + s.bucket + ".C." + o.NUID
	heads, err := s.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{chunks}, HeadersOnly: true})
	if err != nil {
		return nil, err
	}
	var start uint64
	var skipped int64
	for start == 0 {
		msg, err := heads.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			return nil, err
		}
		n, err := strconv.ParseInt(msg.Headers().Get("Nats-Msg-Size"), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("chunk without size: %w", err)
		}
		if skipped+n > offset {
			meta, err := msg.Metadata()
			if err != nil {
				return nil, err
			}
			start = meta.Sequence.Stream
			break
		}
		skipped += n
	}
	body, err := s.js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{chunks}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: start,
	})
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	readCtx, cancel := context.WithCancel(ctx)
	go func() {
		defer cancel()
		left := int64(o.Size) - skipped
		first := true
		for left > 0 {
			msg, err := body.Next(jetstream.FetchContext(readCtx))
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			data := msg.Data()
			left -= int64(len(data))
			if first {
				data = data[offset-skipped:]
				first = false
			}
			if _, err := pw.Write(data); err != nil {
				return
			}
		}
		pw.Close()
	}()
	return &cancelReader{PipeReader: pr, cancel: cancel}, nil
}

type cancelReader struct {
	*io.PipeReader
	cancel context.CancelFunc
}

func (r *cancelReader) Close() error {
	r.cancel()
	return r.PipeReader.Close()
}

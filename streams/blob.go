package streams

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"
)

// ErrBlobNotFound is returned for a key a bucket does not hold.
var ErrBlobNotFound = errors.New("blob not found")

func (b *Bus) objectStore(ctx context.Context, bucket string) (jetstream.ObjectStore, error) {
	os, err := b.JS.ObjectStore(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("object store %s: %w", bucket, err)
	}
	return os, nil
}

// PutBlob stores r under key in the bucket.
func (b *Bus) PutBlob(ctx context.Context, bucket, key string, r io.Reader) error {
	store, err := b.objectStore(ctx, bucket)
	if err != nil {
		return err
	}
	if _, err := store.Put(ctx, jetstream.ObjectMeta{Name: key}, r); err != nil {
		return fmt.Errorf("store %s/%s: %w", bucket, key, err)
	}
	return nil
}

// HasBlob says whether the bucket holds key.
func (b *Bus) HasBlob(ctx context.Context, bucket, key string) (bool, error) {
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
func (b *Bus) GetBlob(ctx context.Context, bucket, key string) ([]byte, error) {
	store, err := b.objectStore(ctx, bucket)
	if err != nil {
		return nil, err
	}
	data, err := store.GetBytes(ctx, key)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, fmt.Errorf("%s/%s: %w", bucket, key, ErrBlobNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s/%s: %w", bucket, key, err)
	}
	return data, nil
}

// Package blobstest is the conformance suite every blobs.Store passes: the
// JetStream object store and S3 behave the same to the stages.
package blobstest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"jetqa/streams/blobs"
)

// Run checks store against the Store contract. The store starts empty.
func Run(t *testing.T, store blobs.Store) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("RoundTrip", func(t *testing.T) {
		data := content(1, 3*128*1024+17)
		key, sum := contentKey(data)
		info, err := store.Put(ctx, key, bytes.NewReader(data), int64(len(data)), sum)
		if err != nil {
			t.Fatal(err)
		}
		if info.Key != key || info.Size != int64(len(data)) || info.SHA256 != sum {
			t.Fatalf("Put said %+v, want key %s size %d sha %s", info, key, len(data), sum)
		}
		got, err := store.Stat(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if got.Key != key || got.Size != int64(len(data)) || got.SHA256 != sum || got.Modified.IsZero() {
			t.Fatalf("Stat said %+v, want key %s size %d sha %s and a time", got, key, len(data), sum)
		}
		for _, off := range []int64{0, 1, 128 * 1024, 128*1024 + 5, int64(len(data)) - 1, int64(len(data))} {
			if read := readAll(t, ctx, store, key, off); !bytes.Equal(read, data[off:]) {
				t.Fatalf("from %d: read %d bytes, want the %d stored from there", off, len(read), len(data)-int(off))
			}
		}
	})

	t.Run("Empty", func(t *testing.T) {
		key, sum := contentKey(nil)
		if _, err := store.Put(ctx, key, bytes.NewReader(nil), 0, sum); err != nil {
			t.Fatal(err)
		}
		if read := readAll(t, ctx, store, key, 0); len(read) != 0 {
			t.Fatalf("read %d bytes of an empty blob", len(read))
		}
	})

	t.Run("Missing", func(t *testing.T) {
		if _, err := store.Stat(ctx, "no/such/blob"); !errors.Is(err, blobs.ErrNotFound) {
			t.Fatalf("Stat of a missing blob: %v, want ErrNotFound", err)
		}
		if _, _, err := store.Open(ctx, "no/such/blob", 0); !errors.Is(err, blobs.ErrNotFound) {
			t.Fatalf("Open of a missing blob: %v, want ErrNotFound", err)
		}
		if err := store.Delete(ctx, "no/such/blob"); err != nil {
			t.Fatalf("Delete of a missing blob: %v", err)
		}
	})

	// What does not match its announcement is refused and leaves the key
	// as it was: missing, or holding the earlier content.
	t.Run("RefusesCorrupt", func(t *testing.T) {
		good := content(2, 200*1024)
		key := "jobs/corrupt"
		type attempt struct {
			name string
			r    io.Reader
			sum  string
		}
		// Readers are spent once read: each round makes them again.
		attempts := func() []attempt {
			return []attempt{
				{"wrong hash", bytes.NewReader(content(3, len(good))), sha(good)},
				{"short", bytes.NewReader(good[:len(good)-1]), ""},
				{"long", bytes.NewReader(append(slices.Clone(good), 0)), ""},
				{"read error", io.MultiReader(bytes.NewReader(good[:1000]), failing{}), ""},
			}
		}
		for _, stored := range []bool{false, true} {
			if stored {
				if _, err := store.Put(ctx, key, bytes.NewReader(good), int64(len(good)), sha(good)); err != nil {
					t.Fatal(err)
				}
			}
			for _, a := range attempts() {
				_, err := store.Put(ctx, key, a.r, int64(len(good)), a.sum)
				if err == nil {
					t.Fatalf("%s: stored", a.name)
				}
				if a.name != "read error" && !errors.Is(err, blobs.ErrCorrupt) {
					t.Fatalf("%s: %v, want ErrCorrupt", a.name, err)
				}
				_, serr := store.Stat(ctx, key)
				switch {
				case !stored && !errors.Is(serr, blobs.ErrNotFound):
					t.Fatalf("%s: left %v, want nothing", a.name, serr)
				case stored && serr != nil:
					t.Fatalf("%s: the earlier blob is gone: %v", a.name, serr)
				case stored && !bytes.Equal(readAll(t, ctx, store, key, 0), good):
					t.Fatalf("%s: the earlier blob changed", a.name)
				}
			}
		}
	})

	t.Run("Replace", func(t *testing.T) {
		key := "jobs/replaced"
		for i := range 2 {
			data := content(10+i, 1000+i)
			if _, err := store.Put(ctx, key, bytes.NewReader(data), int64(len(data)), ""); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(readAll(t, ctx, store, key, 0), data) {
				t.Fatalf("put %d: read something else", i)
			}
		}
	})

	// Larger than an S3 part: streamed in several, never held whole.
	t.Run("Large", func(t *testing.T) {
		const size = 20<<20 + 3
		h := sha256.New()
		if _, err := io.Copy(h, generated(7, size)); err != nil {
			t.Fatal(err)
		}
		sum := hex.EncodeToString(h.Sum(nil))
		key := blobs.ContentKey(sum)
		if _, err := store.Put(ctx, key, generated(7, size), size, sum); err != nil {
			t.Fatal(err)
		}
		r, info, err := store.Open(ctx, key, size-10)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		tail, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := io.ReadAll(io.NewSectionReader(readerAt{7}, size-10, 10))
		if info.Size != size || !bytes.Equal(tail, want) {
			t.Fatalf("size %d, tail %x; want %d, %x", info.Size, tail, int64(size), want)
		}
	})

	t.Run("ListAndDelete", func(t *testing.T) {
		keys := []string{"list/b/2", "list/a", "list/b/1", "lister"}
		for _, k := range keys {
			if _, err := store.Put(ctx, k, bytes.NewReader([]byte(k)), int64(len(k)), ""); err != nil {
				t.Fatal(err)
			}
		}
		list := func() []string {
			var got []string
			err := store.List(ctx, "list/", func(i blobs.Info) error {
				if i.Size != int64(len(i.Key)) {
					return fmt.Errorf("%s listed with size %d", i.Key, i.Size)
				}
				got = append(got, i.Key)
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			return got
		}
		if got, want := list(), []string{"list/a", "list/b/1", "list/b/2"}; !slices.Equal(got, want) {
			t.Fatalf("listed %q, want %q", got, want)
		}
		stop := errors.New("enough")
		n := 0
		if err := store.List(ctx, "list/", func(blobs.Info) error { n++; return stop }); !errors.Is(err, stop) || n != 1 {
			t.Fatalf("List went on after fn's error: %v after %d", err, n)
		}
		if err := store.Delete(ctx, "list/b/1"); err != nil {
			t.Fatal(err)
		}
		if _, err := store.Stat(ctx, "list/b/1"); !errors.Is(err, blobs.ErrNotFound) {
			t.Fatalf("deleted blob: %v", err)
		}
		if got, want := list(), []string{"list/a", "list/b/2"}; !slices.Equal(got, want) {
			t.Fatalf("after delete listed %q, want %q", got, want)
		}
	})
}

func readAll(t *testing.T, ctx context.Context, store blobs.Store, key string, off int64) []byte {
	t.Helper()
	r, _, err := store.Open(ctx, key, off)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s from %d: %v", key, off, err)
	}
	return data
}

func sha(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}

func contentKey(data []byte) (string, string) {
	s := sha(data)
	return blobs.ContentKey(s), s
}

func content(seed, n int) []byte {
	data := make([]byte, n)
	_, _ = io.ReadFull(generated(uint64(seed), int64(n)), data)
	return data
}

// generated is n pseudo-random bytes from seed, made as they are read.
func generated(seed uint64, n int64) io.Reader {
	return io.NewSectionReader(readerAt{seed}, 0, n)
}

// readerAt gives the same byte for the same seed and offset.
type readerAt struct{ seed uint64 }

func (g readerAt) ReadAt(p []byte, off int64) (int, error) {
	for i := range p {
		x := uint64(off+int64(i))*0x9E3779B97F4A7C15 ^ g.seed
		x ^= x >> 29
		x *= 0xBF58476D1CE4E5B9
		x ^= x >> 32
		p[i] = byte(x)
	}
	return len(p), nil
}

type failing struct{}

func (failing) Read([]byte) (int, error) { return 0, errors.New("the disk went away") }

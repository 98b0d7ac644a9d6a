package cache

import (
	"crypto/sha256"
	"encoding/hex"
	"hash"
	"io"
	"os"
	"sync"
)

// bufSize is the size of the copy buffers: the hasher gets large pieces,
// the network is read with few system calls.
const bufSize = 1 << 20

// hashBuffers is how many buffers a hasher lends: enough to keep the
// reader going while the hasher catches up.
const hashBuffers = 4

// hasher computes a SHA-256 on a goroutine of its own, so that hashing
// overlaps reading and writing and a download runs at the speed of
// network and disk, as curl's does, instead of adding the time to hash.
// It lends the copy buffers: one given to add comes back from buffer once
// hashed.
type hasher struct {
	h       hash.Hash
	free    chan []byte
	work    chan []byte
	pending sync.WaitGroup
}

func newHasher() *hasher {
	hs := &hasher{h: sha256.New(), free: make(chan []byte, hashBuffers), work: make(chan []byte, hashBuffers)}
	for range hashBuffers {
		hs.free <- make([]byte, bufSize)
	}
	go func() {
		for b := range hs.work {
			hs.h.Write(b)
			hs.free <- b[:cap(b)]
			hs.pending.Done()
		}
	}()
	return hs
}

// buffer lends a buffer of bufSize bytes, to be given to add or giveBack.
func (hs *hasher) buffer() []byte { return <-hs.free }

// add hashes b next, and then takes the buffer back.
func (hs *hasher) add(b []byte) {
	hs.pending.Add(1)
	hs.work <- b
}

// giveBack returns a buffer that holds nothing to hash.
func (hs *hasher) giveBack(b []byte) { hs.free <- b[:cap(b)] }

// reset waits for what is queued and starts a new hash.
func (hs *hasher) reset() {
	hs.pending.Wait()
	hs.h.Reset()
}

// sum waits for what is queued and returns the hash so far, in hex.
func (hs *hasher) sum() string {
	hs.pending.Wait()
	return hex.EncodeToString(hs.h.Sum(nil))
}

// close ends the hashing goroutine; the hasher is not used after.
func (hs *hasher) close() { close(hs.work) }

// addFile hashes the first size bytes of f and returns how many it read.
func (hs *hasher) addFile(f io.ReaderAt, size int64) (int64, error) {
	var n int64
	for n < size {
		buf := hs.buffer()
		m, err := f.ReadAt(buf[:min(int64(len(buf)), size-n)], n)
		if m > 0 {
			hs.add(buf[:m])
			n += int64(m)
		} else {
			hs.giveBack(buf)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// hashFile returns the SHA-256 and size of the file at path.
func hashFile(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	hs := newHasher()
	defer hs.close()
	n, err := hs.addFile(f, fi.Size())
	if err != nil {
		return "", n, err
	}
	return hs.sum(), n, nil
}

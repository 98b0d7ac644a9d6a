package qemu

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"sync"
)

// Files from the guest come on the virtio-serial port UploadPortName, much
// faster than the serial console, framed in lines:
//
//	jetqa-upload ID
//	…the file in base64, any line length…
//	jetqa-upload-end ID
//
// The test side picks ID and waits for it (WaitUpload).

// maxUpload bounds one file, decoded.
const maxUpload = 512 << 20

// uploads holds the files the guest sent, by ID, until taken.
type uploads struct {
	mu    sync.Mutex
	done  map[string][]byte
	errs  map[string]error
	woken chan struct{} // closed and replaced on every change
	end   error         // the port closed
}

func newUploads() *uploads {
	return &uploads{done: map[string][]byte{}, errs: map[string]error{}, woken: make(chan struct{})}
}

func (u *uploads) changed() {
	close(u.woken)
	u.woken = make(chan struct{})
}

// read parses the port until it closes.
func (u *uploads) read(conn net.Conn) {
	lines := bufio.NewScanner(conn)
	lines.Buffer(make([]byte, 64<<10), 1<<20)
	var id string
	var enc bytes.Buffer
	tooBig := false
	for lines.Scan() {
		line := bytes.TrimRight(lines.Bytes(), "\r")
		switch {
		case bytes.HasPrefix(line, []byte("jetqa-upload-end ")):
			end := string(line[len("jetqa-upload-end "):])
			if end != id {
				continue // the end of an upload whose start was lost
			}
			data, err := base64.StdEncoding.DecodeString(enc.String())
			if tooBig {
				err = fmt.Errorf("larger than %d MiB", maxUpload>>20)
			}
			u.mu.Lock()
			if err != nil {
				u.errs[id] = fmt.Errorf("upload %s: %w", id, err)
			} else {
				u.done[id] = data
			}
			u.changed()
			u.mu.Unlock()
			id, tooBig = "", false
			enc.Reset()
		case bytes.HasPrefix(line, []byte("jetqa-upload ")):
			id, tooBig = string(line[len("jetqa-upload "):]), false
			enc.Reset()
		case id != "":
			if enc.Len()+len(line) > maxUpload/3*4+4 {
				tooBig = true
				continue
			}
			enc.Write(line)
		}
	}
	u.mu.Lock()
	u.end = errors.New("qemu: the upload port closed")
	u.changed()
	u.mu.Unlock()
}

// WaitUpload waits for the file the guest sends as id.
func (v *VM) WaitUpload(ctx context.Context, id string) ([]byte, error) {
	u := v.uploads
	if u == nil {
		return nil, errors.New("qemu: the machine has no upload port")
	}
	for {
		u.mu.Lock()
		data, ok := u.done[id]
		err := u.errs[id]
		delete(u.done, id)
		delete(u.errs, id)
		end, woken := u.end, u.woken
		u.mu.Unlock()
		switch {
		case ok:
			return data, nil
		case err != nil:
			return nil, err
		case end != nil:
			return nil, end
		}
		select {
		case <-woken:
		case <-ctx.Done():
			return nil, fmt.Errorf("upload %s: %w", id, context.Cause(ctx))
		}
	}
}

// HasUploadPort says the guest can send files on the upload port.
func (v *VM) HasUploadPort() bool { return v.uploads != nil }

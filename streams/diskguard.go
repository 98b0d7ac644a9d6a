package streams

import (
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// serverLog is the embedded server's logger: everything goes to its own
// file (nats.log in the data directory), and its warnings and errors also
// to jetqa's log, where an operator looks first. It notices when a write
// failed for want of disk space.
type serverLog struct {
	file server.Logger
	log  *slog.Logger
	full atomic.Bool
}

func (l *serverLog) Noticef(format string, v ...any) { l.file.Noticef(format, v...) }
func (l *serverLog) Debugf(format string, v ...any)  { l.file.Debugf(format, v...) }
func (l *serverLog) Tracef(format string, v ...any)  { l.file.Tracef(format, v...) }

func (l *serverLog) Warnf(format string, v ...any) {
	l.file.Warnf(format, v...)
	l.log.Warn("nats: " + fmt.Sprintf(format, v...))
}

func (l *serverLog) Fatalf(format string, v ...any) {
	l.log.Error("nats: " + fmt.Sprintf(format, v...))
	l.file.Fatalf(format, v...)
}

func (l *serverLog) Errorf(format string, v ...any) {
	l.file.Errorf(format, v...)
	msg := fmt.Sprintf(format, v...)
	if strings.Contains(msg, "no space left") {
		// Every refused write says so: the disk guard tells it once.
		l.full.Store(true)
		return
	}
	l.log.Error("nats: " + msg)
}

// resumeFree is how much free space the store's disk needs before the
// disk guard starts JetStream again after it ran out.
const resumeFree = 32 << 20

// guardDisk watches for a full disk under JetStream's store until the
// server shuts down. A write that failed for want of space leaves a
// stream unable to store anything until JetStream starts again (a
// clustered server even turns JetStream off), and every job waits: the
// guard says so in jetqa's log, naming the directory, and once the disk
// has room again it starts JetStream again, which reads the streams back
// from the disk, so nobody has to restart the server.
func (e *Embedded) guardDisk(l *serverLog, js server.JetStreamConfig, every time.Duration) {
	stop := make(chan struct{})
	go func() {
		e.WaitForShutdown()
		close(stop)
	}()
	tick := time.NewTicker(every)
	defer tick.Stop()
	told := false
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		if !l.full.Load() {
			continue
		}
		free, err := freeSpace(e.storeDir)
		if err != nil {
			l.log.Error("disk of the NATS store unreadable", "dir", e.storeDir, "err", err)
			continue
		}
		if !told {
			told = true
			l.log.Error("the disk of the jetqa server is full: no event can be stored, so jobs wait where they are; free space on it, and jetqa starts JetStream again by itself",
				"dir", e.storeDir, "free_mib", free>>20, "resumes_at_mib", resumeFree>>20)
		}
		if free < resumeFree {
			continue
		}
		if e.JetStreamEnabled() {
			if err := e.ShutdownJetStream(); err != nil {
				l.log.Error("JetStream not stopped after the disk was full", "err", err)
				continue
			}
		}
		cfg := js
		cfg.StoreDir = e.storeDir
		if err := e.EnableJetStream(&cfg); err != nil {
			l.log.Error("JetStream not started again after the disk was full", "err", err)
			continue
		}
		l.full.Store(false)
		told = false
		l.log.Info("JetStream started again: the disk of the jetqa server has room", "dir", e.storeDir, "free_mib", free>>20)
	}
}

// freeSpace is what an unprivileged writer may still use of dir's disk.
func freeSpace(dir string) (uint64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return st.Bavail * uint64(st.Bsize), nil
}

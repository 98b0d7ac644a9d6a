package boot

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"jetqa/stages/boot/qemu"
)

// The recorder looks at the screen every half second while the VM runs,
// as os-autoinst does: each frame that differs from the one before is
// kept, for the job's video; and a screen that stays the same while the
// serial port stays silent is logged as a stall, the usual sign of a hung
// guest or a test waiting for the wrong thing.

// Files the recorder leaves among the job's results.
const (
	// videoFile is the run as a video, when ffmpeg is installed.
	videoFile = "video.webm"
	// framesFile is the run as its frames and their times, otherwise.
	framesFile = "video-frames.tar"
)

// recorder records one job's screen.
type recorder struct {
	vm       *qemu.VM
	dir      string // where frames are kept until the end
	log      *slog.Logger
	interval time.Duration
	// stallAfter is how long an unchanged screen and a silent serial port
	// make a stall.
	stallAfter time.Duration
	// maxFrames bounds the frames kept; the run goes on without more.
	maxFrames int
	module    func() string

	frames []frame
}

// frame is one screen that differed from the one before, at offset from
// the start of the recording.
type frame struct {
	file   string
	offset time.Duration
}

// run records until ctx ends or the VM stops.
func (rec *recorder) run(ctx context.Context) {
	if err := os.MkdirAll(rec.dir, 0o755); err != nil {
		rec.log.Warn("no video", "err", err)
		return
	}
	start := time.Now()
	t := time.NewTicker(rec.interval)
	defer t.Stop()
	var last []byte
	lastChange, serialLen, stalled := start, int64(-1), false
	for {
		select {
		case <-ctx.Done():
			return
		case <-rec.vm.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		if n := rec.vm.Serial().Len(); n != serialLen {
			serialLen, lastChange = n, now
		}
		screen, err := rec.vm.Screendump(ctx)
		if err != nil {
			continue // the VM is ending, or busy saving a snapshot
		}
		if !bytes.Equal(screen, last) {
			last, lastChange = screen, now
			rec.keep(screen, now.Sub(start))
		}
		switch quiet := now.Sub(lastChange); {
		case quiet >= rec.stallAfter && !stalled:
			stalled = true
			rec.log.Warn("stall: the screen has not changed and the serial port has been silent", "for", quiet.Round(time.Second), "module", rec.module())
		case quiet < rec.stallAfter && stalled:
			stalled = false
			rec.log.Info("stall over: the guest shows signs of life again", "module", rec.module())
		}
	}
}

func (rec *recorder) keep(screen []byte, at time.Duration) {
	if rec.maxFrames == 0 {
		return // NOVIDEO
	}
	if len(rec.frames) == rec.maxFrames {
		rec.log.Warn("the video ends here: it has as many frames as it may keep", "frames", rec.maxFrames)
	}
	if len(rec.frames) >= rec.maxFrames {
		return
	}
	name := fmt.Sprintf("frame-%05d.png", len(rec.frames)+1)
	if err := os.WriteFile(filepath.Join(rec.dir, name), screen, 0o644); err != nil {
		rec.log.Warn("video frame not kept", "err", err)
		return
	}
	rec.frames = append(rec.frames, frame{file: name, offset: at})
}

// finish writes the video into the results: encoded by ffmpeg when it is
// installed, else as a tar of the frames with a list of their times. The
// frames themselves are removed.
func (rec *recorder) finish(ctx context.Context, resultsDir string, end time.Duration) {
	defer os.RemoveAll(rec.dir)
	if len(rec.frames) == 0 {
		return
	}
	var list strings.Builder
	for i, f := range rec.frames {
		next := end
		if i+1 < len(rec.frames) {
			next = rec.frames[i+1].offset
		}
		fmt.Fprintf(&list, "file '%s'\nduration %.3f\n", f.file, max(next-f.offset, 10*time.Millisecond).Seconds())
	}
	listPath := filepath.Join(rec.dir, "frames.ffconcat")
	if err := os.WriteFile(listPath, []byte("ffconcat version 1.0\n"+list.String()), 0o644); err != nil {
		rec.log.Warn("no video", "err", err)
		return
	}
	if ffmpeg, err := exec.LookPath("ffmpeg"); err == nil {
		out := filepath.Join(resultsDir, videoFile)
		cmd := exec.CommandContext(ctx, ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i", listPath,
			"-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-row-mt", "1", "-b:v", "0", "-crf", "40",
			"-fps_mode", "vfr", "-pix_fmt", "yuv420p", out)
		if msg, err := cmd.CombinedOutput(); err == nil {
			rec.log.Info("video encoded", "file", videoFile, "frames", len(rec.frames))
			return
		} else {
			rec.log.Warn("ffmpeg could not encode the video: keeping its frames instead", "err", err, "ffmpeg", strings.TrimSpace(string(msg)))
			_ = os.Remove(out)
		}
	}
	if err := rec.tarFrames(filepath.Join(resultsDir, framesFile), listPath); err != nil {
		rec.log.Warn("video frames not kept", "err", err)
		return
	}
	rec.log.Info("video kept as frames (install ffmpeg to encode it)", "file", framesFile, "frames", len(rec.frames))
}

// tarFrames packs the frames and their list, which ffmpeg reads as it is:
// `ffmpeg -f concat -i frames.ffconcat video.webm` after unpacking.
func (rec *recorder) tarFrames(path, listPath string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	for _, name := range append([]string{filepath.Base(listPath)}, framesOf(rec.frames)...) {
		data, err := os.ReadFile(filepath.Join(rec.dir, name))
		if err != nil {
			f.Close()
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0)}); err != nil {
			f.Close()
			return err
		}
		if _, err := tw.Write(data); err != nil {
			f.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func framesOf(frames []frame) []string {
	out := make([]string, len(frames))
	for i, f := range frames {
		out[i] = f.file
	}
	return out
}

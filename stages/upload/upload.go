// Package upload is the last stage of a job on a worker host: it stores the
// job's screenshots, logs and result details as results (by their content,
// so the same screenshot is stored once), appends the job's final result,
// and removes the job's directory.
package upload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/blobs"
)

// Config of the upload stage of one worker host.
type Config struct {
	Host string
	// JobsDir holds the jobs' directories, which are removed once their
	// results are stored; "" keeps them.
	JobsDir string
}

// Bus is what the upload stage needs of the event streams and results.
type Bus interface {
	Append(ctx context.Context, job int64, p schemas.Payload) (uint64, error)
	Consume(ctx context.Context, cfg streams.ConsumerConfig, h streams.Handler) error
	HasResult(ctx context.Context, sum string, size int64) (bool, error)
	PutResult(ctx context.Context, sum string, r io.Reader, size int64) (string, error)
	PutAsset(ctx context.Context, job int64, name string, r io.Reader) error
}

// Stage is the upload stage.
type Stage struct {
	cfg Config
	bus Bus
	log *slog.Logger
}

// New returns the upload stage of one worker host.
func New(cfg Config, bus Bus, log *slog.Logger) (*Stage, error) {
	if cfg.Host == "" {
		return nil, errors.New("upload: no host")
	}
	return &Stage{cfg: cfg, bus: bus, log: log}, nil
}

// Run consumes the host's finished test runs until ctx ends.
func (s *Stage) Run(ctx context.Context) error {
	return s.bus.Consume(ctx, streams.ConsumerConfig{
		Stream:  streams.StreamJobs,
		Durable: streams.UploadDurable(s.cfg.Host),
		Filters: []string{streams.TestsFinishedOn(s.cfg.Host)},
	}, s.handle)
}

func (s *Stage) handle(ctx context.Context, ev schemas.Event, p schemas.Payload, _ streams.Delivery) error {
	tf, ok := p.(*schemas.TestsFinished)
	if !ok {
		return nil
	}
	files, err := s.store(ctx, ev.Job, tf)
	fin := schemas.JobFinished{Result: tf.Result, Reason: tf.Reason, Modules: tf.Modules, Files: files}
	uploaded := err == nil
	if !uploaded {
		s.log.Error("upload failed", "job", ev.Job, "err", err)
		uploadFailed(&fin, err)
	}
	_, err = s.bus.Append(ctx, ev.Job, fin)
	if errors.Is(err, streams.ErrRefused) && len(fin.Files) > 0 {
		// The server did not find the results where they were stored:
		// the job ends, without them, saying so.
		s.log.Error("results refused", "job", ev.Job, "err", err)
		uploaded = false
		uploadFailed(&fin, err)
		fin.Files = nil
		_, err = s.bus.Append(ctx, ev.Job, fin)
	}
	switch {
	case errors.Is(err, schemas.ErrTransition):
		s.log.Warn("job already ended without this upload", "job", ev.Job, "why", err)
	case err == nil:
		s.log.Info("job finished", "job", ev.Job, "result", fin.Result, "reason", fin.Reason)
	default:
		return err
	}
	s.removeJobDir(ev.Job, tf.ResultsDir, uploaded)
	return nil
}

// uploadFailed makes a verdict say that its results are not all stored:
// a job that would have passed is incomplete.
func uploadFailed(fin *schemas.JobFinished, err error) {
	if fin.Result == schemas.ResultPassed || fin.Result == schemas.ResultSoftfailed {
		fin.Result = schemas.ResultIncomplete
	}
	fin.Reason = strings.TrimPrefix(fin.Reason+"; ", "; ") + "upload failed: " + err.Error()
}

// removeJobDir removes the job's directory (its results, overlays and
// links to cached assets), so that the asset cache's limit bounds the
// host's disk. A job whose upload failed keeps it for inspection.
func (s *Stage) removeJobDir(job int64, resultsDir string, uploaded bool) {
	dir := filepath.Dir(resultsDir)
	if s.cfg.JobsDir == "" || filepath.Dir(dir) != filepath.Clean(s.cfg.JobsDir) || filepath.Base(dir) != fmt.Sprint(job) {
		return
	}
	if !uploaded {
		s.log.Warn("job directory kept: its results are not all stored", "job", job, "dir", dir)
		return
	}
	if err := os.RemoveAll(dir); err != nil {
		s.log.Warn("job directory not removed", "job", job, "dir", dir, "err", err)
	}
}

// store uploads every file of the results directory and the module
// details, each read twice from disk (to hash it, then to send it if it is
// not stored yet) and never held whole in memory.
func (s *Stage) store(ctx context.Context, job int64, tf *schemas.TestsFinished) (map[string]string, error) {
	files := map[string]string{}
	var mu sync.Mutex
	// A few files at once: each costs round trips to the server more than
	// bytes, and the server decides several stores at once.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(uploadsAtOnce)
	for _, sub := range []string{"", ThumbPrefix, schemas.ULogsDir + "/"} {
		entries, err := os.ReadDir(filepath.Join(tf.ResultsDir, sub))
		if sub != "" && errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			_ = g.Wait()
			return files, fmt.Errorf("results of job %d: %w", job, err)
		}
		for _, e := range entries {
			if !e.Type().IsRegular() {
				continue
			}
			g.Go(func() error {
				key, err := s.storeFile(gctx, filepath.Join(tf.ResultsDir, sub, e.Name()))
				if err != nil {
					return err
				}
				mu.Lock()
				files[sub+e.Name()] = key
				mu.Unlock()
				return nil
			})
		}
	}
	if err := g.Wait(); err != nil {
		return files, err
	}
	details, err := json.MarshalIndent(tf.Modules, "", "  ")
	if err != nil {
		return files, err
	}
	key, err := s.storeContent(ctx, bytes.NewReader(details))
	if err != nil {
		return files, err
	}
	files["details.json"] = key
	// What the job publishes for the jobs after it, streamed from disk.
	for name, path := range tf.Assets {
		if err := s.publish(ctx, job, name, path); err != nil {
			return files, err
		}
	}
	return files, nil
}

func (s *Stage) publish(ctx context.Context, job int64, name, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("asset %s: %w", name, err)
	}
	defer f.Close()
	if err := s.bus.PutAsset(ctx, job, name, f); err != nil {
		return fmt.Errorf("asset %s: %w", name, err)
	}
	s.log.Info("asset published", "job", job, "asset", name)
	return nil
}

func (s *Stage) storeFile(ctx context.Context, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	return s.storeContent(ctx, f)
}

// uploadsAtOnce is how many files the stage uploads at once.
const uploadsAtOnce = 4

// ThumbPrefix names a screenshot's thumbnail among a job's files.
const ThumbPrefix = schemas.ThumbsDir + "/"

// storeContent stores what r holds unless the results hold it already.
func (s *Stage) storeContent(ctx context.Context, r io.ReadSeeker) (string, error) {
	h := sha256.New()
	size, err := io.Copy(h, r)
	if err != nil {
		return "", err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	have, err := s.bus.HasResult(ctx, sum, size)
	if err != nil {
		return "", err
	}
	if !have {
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			return "", err
		}
		if _, err := s.bus.PutResult(ctx, sum, r, size); err != nil {
			return "", err
		}
	}
	return blobs.ContentKey(sum), nil
}

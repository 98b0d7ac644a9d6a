// Package upload is the last stage of a job on a worker host: it stores the
// job's screenshots (deduplicated by content hash), serial log and result
// details in the blob store and appends the job's final result.
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

	"jetqa/schemas"
	"jetqa/streams"
)

// Config of the upload stage of one worker host.
type Config struct {
	Host string
}

// Bus is what the upload stage needs of the event streams and blob store.
type Bus interface {
	Append(ctx context.Context, job int64, p schemas.Payload) (uint64, error)
	Consume(ctx context.Context, cfg streams.ConsumerConfig, h streams.Handler) error
	PutBlob(ctx context.Context, bucket, key string, r io.Reader) error
	HasBlob(ctx context.Context, bucket, key string) (bool, error)
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

// ScreenKey is where a screenshot with the given content hash is stored.
func ScreenKey(sum string) string { return "screens/" + sum + ".png" }

// JobKey is where a job's file is stored.
func JobKey(job int64, name string) string { return fmt.Sprintf("jobs/%d/%s", job, name) }

func (s *Stage) handle(ctx context.Context, ev schemas.Event, p schemas.Payload, _ streams.Delivery) error {
	tf, ok := p.(*schemas.TestsFinished)
	if !ok {
		return nil
	}
	files, err := s.store(ctx, ev.Job, tf)
	fin := schemas.JobFinished{Result: tf.Result, Reason: tf.Reason, Modules: tf.Modules, Files: files}
	if err != nil {
		s.log.Error("upload failed", "job", ev.Job, "err", err)
		if fin.Result == schemas.ResultPassed || fin.Result == schemas.ResultSoftfailed {
			fin.Result = schemas.ResultIncomplete
		}
		fin.Reason = strings.TrimPrefix(fin.Reason+"; ", "; ") + "upload failed: " + err.Error()
	}
	_, err = s.bus.Append(ctx, ev.Job, fin)
	switch {
	case errors.Is(err, schemas.ErrTransition):
		s.log.Warn("job already ended without this upload", "job", ev.Job, "why", err)
		return nil
	case err == nil:
		s.log.Info("job finished", "job", ev.Job, "result", fin.Result, "reason", fin.Reason)
	}
	return err
}

// store uploads every file of the results directory and the module details.
func (s *Stage) store(ctx context.Context, job int64, tf *schemas.TestsFinished) (map[string]string, error) {
	files := map[string]string{}
	entries, err := os.ReadDir(tf.ResultsDir)
	if err != nil {
		return files, fmt.Errorf("results of job %d: %w", job, err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(tf.ResultsDir, e.Name()))
		if err != nil {
			return files, err
		}
		key := JobKey(job, e.Name())
		if strings.HasSuffix(e.Name(), ".png") {
			sum := sha256.Sum256(data)
			key = ScreenKey(hex.EncodeToString(sum[:]))
			if have, err := s.bus.HasBlob(ctx, streams.BucketResults, key); err != nil {
				return files, err
			} else if have {
				files[e.Name()] = key
				continue
			}
		}
		if err := s.bus.PutBlob(ctx, streams.BucketResults, key, bytes.NewReader(data)); err != nil {
			return files, err
		}
		files[e.Name()] = key
	}
	details, err := json.MarshalIndent(tf.Modules, "", "  ")
	if err != nil {
		return files, err
	}
	key := JobKey(job, "details.json")
	if err := s.bus.PutBlob(ctx, streams.BucketResults, key, bytes.NewReader(details)); err != nil {
		return files, err
	}
	files["details.json"] = key
	return files, nil
}

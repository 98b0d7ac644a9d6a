package blobs_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"jetqa/streams/blobs"
	"jetqa/streams/blobs/blobstest"
	"jetqa/streams/natstest"
)

func TestObjectStoreConforms(t *testing.T) {
	bus := natstest.Start(t).Bus("conformance")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := bus.JS.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "conformance"}); err != nil {
		t.Fatal(err)
	}
	blobstest.Run(t, blobs.NewObjectStore(bus.JS, "conformance"))
}

func TestS3Conforms(t *testing.T) {
	s3 := blobstest.StartS3(t)
	url := s3.Bucket(t, "conformance")
	s3.SetEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for name, u := range map[string]string{"bucket": url, "prefix": strings.Replace(url, "conformance?", "conformance/under/a/prefix?", 1)} {
		store, err := blobs.OpenS3(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		t.Run(name, func(t *testing.T) { blobstest.Run(t, store) })
	}
}

// A user's mistakes in the URL or the bucket are named.
func TestOpenS3Errors(t *testing.T) {
	s3 := blobstest.StartS3(t)
	s3.Bucket(t, "there")
	s3.SetEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for url, want := range map[string]string{
		"http://bucket":                        "want s3://BUCKET",
		"s3://":                                "want s3://BUCKET",
		"s3://b?endpoint=ftp://x":              "S3 endpoint",
		"s3://missing?endpoint=" + s3.Endpoint: "does not exist",
	} {
		_, err := blobs.OpenS3(ctx, url)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error saying %q", url, err, want)
		}
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", "wrong")
	if _, err := blobs.OpenS3(ctx, "s3://there?endpoint="+s3.Endpoint); err == nil || !strings.Contains(err.Error(), "credentials") {
		t.Errorf("a wrong secret: %v, want an error about credentials", err)
	}
}

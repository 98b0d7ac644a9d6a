package blobstest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"jetqa/streams/blobs"
)

// S3Server is a real S3 server for tests: versitygw serving a temporary
// directory on loopback.
type S3Server struct {
	Endpoint string // http://127.0.0.1:PORT
	Access   string
	Secret   string
}

// StartS3 starts versitygw (`make test-deps` installs it) for the test.
func StartS3(t testing.TB) *S3Server {
	t.Helper()
	bin, err := exec.LookPath("versitygw")
	if err != nil {
		gopath, _ := exec.Command("go", "env", "GOPATH").Output()
		bin = filepath.Join(strings.TrimSpace(string(gopath)), "bin", "versitygw")
		if _, serr := os.Stat(bin); serr != nil {
			t.Fatalf("versitygw, the S3 server the tests run, is not installed (make test-deps installs it): %v", err)
		}
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &S3Server{Endpoint: "http://" + addr, Access: "jetqa-test", Secret: "jetqa-test-secret"}
	cmd := exec.Command(bin, "--access", s.Access, "--secret", s.Secret, "--port", addr, "posix", t.TempDir())
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	listening := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		announced := false
		for sc.Scan() {
			if !announced && strings.Contains(sc.Text(), s.Endpoint) {
				announced = true
				close(listening)
			}
		}
		exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	select {
	case <-listening:
	case err := <-exited:
		t.Fatalf("versitygw exited before it listened: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("versitygw did not listen within 30 s")
	}
	return s
}

// Bucket makes a bucket and returns its s3:// URL with the endpoint.
func (s *S3Server) Bucket(t testing.TB, name string) string {
	t.Helper()
	client, err := minio.New(strings.TrimPrefix(s.Endpoint, "http://"), &minio.Options{
		Creds: credentials.NewStaticV4(s.Access, s.Secret, ""), BucketLookup: minio.BucketLookupPath,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket %s: %v", name, err)
	}
	return fmt.Sprintf("s3://%s?endpoint=%s", name, s.Endpoint)
}

// Env is the environment that gives the AWS tools, and jetqa, the
// server's credentials.
func (s *S3Server) Env() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + s.Access, "AWS_SECRET_ACCESS_KEY=" + s.Secret, "AWS_REGION=us-east-1"}
}

// StartS3Store starts versitygw with a bucket of the given name and
// returns the Store on it, the test's environment holding its credentials.
func StartS3Store(t *testing.T, bucket string) (*blobs.S3, string) {
	t.Helper()
	s := StartS3(t)
	url := s.Bucket(t, bucket)
	s.SetEnv(t)
	store, err := blobs.OpenS3(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	return store, url
}

// SetEnv sets Env for the test.
func (s *S3Server) SetEnv(t *testing.T) {
	for _, kv := range s.Env() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

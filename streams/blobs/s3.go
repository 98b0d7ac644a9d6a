package blobs

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3 is a Store in an S3 bucket, under a key prefix: where fleets keep
// large things.
type S3 struct {
	client *minio.Client
	bucket string
	prefix string
	where  string
}

// s3PartSize is the part of a multipart upload held in memory at once: an
// upload's memory, whatever the blob's size.
const s3PartSize = 8 << 20

// sha256Meta is the user metadata that keeps a blob's SHA-256.
const sha256Meta = "Sha256"

// OpenS3 connects to the bucket a URL names, s3://BUCKET[/PREFIX], with
// the credentials, region and endpoint the AWS tools would use: the
// variables AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
// AWS_PROFILE with the shared credentials file, an instance role,
// AWS_REGION or AWS_DEFAULT_REGION, and AWS_ENDPOINT_URL_S3 or
// AWS_ENDPOINT_URL for S3-compatible servers. The URL's query may set
// endpoint= and region= too. The bucket must exist.
func OpenS3(ctx context.Context, rawURL string) (*S3, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return nil, fmt.Errorf("results store %q: want s3://BUCKET[/PREFIX][?endpoint=URL&region=R]", rawURL)
	}
	q := u.Query()
	endpoint := firstSet(q.Get("endpoint"), os.Getenv("AWS_ENDPOINT_URL_S3"), os.Getenv("AWS_ENDPOINT_URL"), "https://s3.amazonaws.com")
	ep, err := url.Parse(endpoint)
	if err != nil || (ep.Scheme != "http" && ep.Scheme != "https") || ep.Host == "" {
		return nil, fmt.Errorf("S3 endpoint %q: want http://HOST[:PORT] or https://HOST[:PORT]", endpoint)
	}
	lookup := minio.BucketLookupAuto
	if ep.Host != "s3.amazonaws.com" {
		// S3-compatible servers seldom have a DNS name per bucket.
		lookup = minio.BucketLookupPath
	}
	client, err := minio.New(ep.Host, &minio.Options{
		Creds: credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{}, &credentials.FileAWSCredentials{}, &credentials.IAM{},
		}),
		Secure:       ep.Scheme == "https",
		Region:       firstSet(q.Get("region"), os.Getenv("AWS_REGION"), os.Getenv("AWS_DEFAULT_REGION")),
		BucketLookup: lookup,
	})
	if err != nil {
		return nil, fmt.Errorf("S3 at %s: %w", endpoint, err)
	}
	prefix := strings.Trim(u.Path, "/")
	if prefix != "" {
		prefix += "/"
	}
	s := &S3{client: client, bucket: u.Host, prefix: prefix, where: "s3://" + u.Host + "/" + prefix + " at " + endpoint}
	ok, err := client.BucketExists(ctx, s.bucket)
	if err != nil {
		return nil, fmt.Errorf("S3 bucket %s at %s: %w (are the AWS_* credentials set?)", s.bucket, endpoint, err)
	}
	if !ok {
		return nil, fmt.Errorf("S3 bucket %s does not exist at %s: create it first", s.bucket, endpoint)
	}
	return s, nil
}

func firstSet(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// Describe names the bucket, prefix and endpoint.
func (s *S3) Describe() string { return s.where }

// Put uploads r in parts of s3PartSize. The size is not given to the
// client, so it reads r to its end, where a blob that is not what was
// announced fails the read and the upload is aborted, leaving nothing.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64, sha string) (Info, error) {
	v := verify(key, r, size, sha)
	opts := minio.PutObjectOptions{PartSize: s3PartSize, NumThreads: 1}
	if sha != "" {
		opts.UserMetadata = map[string]string{sha256Meta: sha}
	}
	up, err := s.client.PutObject(ctx, s.bucket, s.prefix+key, v, -1, opts)
	if err != nil {
		return Info{}, fmt.Errorf("store %s in %s: %w", key, s.where, err)
	}
	if up.Size != size {
		_ = s.Delete(ctx, key)
		return Info{}, fmt.Errorf("store %s in %s: %w: the bucket took %d bytes of %d", key, s.where, ErrCorrupt, up.Size, size)
	}
	return Info{Key: key, Size: up.Size, SHA256: v.hex(), Modified: up.LastModified}, nil
}

func (s *S3) info(o minio.ObjectInfo) Info {
	return Info{Key: strings.TrimPrefix(o.Key, s.prefix), Size: o.Size, SHA256: o.UserMetadata[sha256Meta], Modified: o.LastModified}
}

func (s *S3) readError(key string, err error) error {
	if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
		return fmt.Errorf("%s in %s: %w", key, s.where, ErrNotFound)
	}
	return fmt.Errorf("read %s in %s: %w", key, s.where, err)
}

// Stat asks for the object's head.
func (s *S3) Stat(ctx context.Context, key string) (Info, error) {
	o, err := s.client.StatObject(ctx, s.bucket, s.prefix+key, minio.StatObjectOptions{})
	if err != nil {
		return Info{}, s.readError(key, err)
	}
	return s.info(o), nil
}

// Open streams the object from offset on with a ranged GET.
func (s *S3) Open(ctx context.Context, key string, offset int64) (io.ReadCloser, Info, error) {
	info, err := s.Stat(ctx, key)
	if err != nil {
		return nil, Info{}, err
	}
	if offset >= info.Size {
		return io.NopCloser(strings.NewReader("")), info, nil
	}
	opts := minio.GetObjectOptions{}
	if offset > 0 {
		if err := opts.SetRange(offset, 0); err != nil {
			return nil, Info{}, err
		}
	}
	obj, err := s.client.GetObject(ctx, s.bucket, s.prefix+key, opts)
	if err != nil {
		return nil, Info{}, s.readError(key, err)
	}
	return obj, info, nil
}

// Delete removes the object; S3 answers a missing one as removed.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := s.client.RemoveObject(ctx, s.bucket, s.prefix+key, minio.RemoveObjectOptions{}); err != nil {
		if minio.ToErrorResponse(err).Code == minio.NoSuchKey {
			return nil
		}
		return fmt.Errorf("delete %s in %s: %w", key, s.where, err)
	}
	return nil
}

// List walks the keys under prefix; S3 lists in key order.
func (s *S3) List(ctx context.Context, prefix string, fn func(Info) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for o := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}) {
		if o.Err != nil {
			return fmt.Errorf("list %s: %w", s.where, o.Err)
		}
		if err := fn(s.info(o)); err != nil {
			return err
		}
	}
	return ctx.Err()
}

package boot

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"go.starlark.net/starlark"

	"jetqa/schemas"
)

// A job publishes assets for the jobs after it, as openQA's do: the disks
// PUBLISH_HDD_n names once it passed (an installed system, for the tests
// that boot it with HDD_1), and the guest's files upload_asset sends. The
// upload stage stores them in the server's asset store under their names.

var publishHDD = regexp.MustCompile(`^PUBLISH_HDD_([1-9][0-9]?)$`)

// disksToPublish maps the PUBLISH_HDD_n settings to the disks they name,
// checked before the VM starts.
func disksToPublish(settings map[string]string, hdds []string) (map[string]string, error) {
	disks := map[string]string{}
	for k, name := range settings {
		m := publishHDD.FindStringSubmatch(k)
		if m == nil || name == "" {
			continue
		}
		if err := schemas.CheckAssetName(name); err != nil {
			return nil, fmt.Errorf("%s: %v", k, err)
		}
		n, _ := strconv.Atoi(m[1])
		if n > len(hdds) {
			return nil, fmt.Errorf("%s=%s: the machine has %d disks (HDD_n, NUMDISKS)", k, name, len(hdds))
		}
		disks[name] = hdds[n-1]
	}
	return disks, nil
}

// publishDisks writes each disk, its backing chain flattened, as a qcow2
// of its own into dir (compressed unless told not to), and adds it to
// published. The VM must be stopped.
func publishDisks(ctx context.Context, disks map[string]string, dir string, compress bool, published map[string]string, log *slog.Logger) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, disk := range disks {
		out := filepath.Join(dir, name)
		args := []string{"convert", "-O", "qcow2"}
		if compress {
			args = append(args, "-c")
		}
		if msg, err := exec.CommandContext(ctx, "qemu-img", append(args, disk, out)...).CombinedOutput(); err != nil {
			return fmt.Errorf("publish %s: qemu-img convert: %v: %s", name, err, strings.TrimSpace(string(msg)))
		}
		log.Info("disk published", "asset", name, "disk", filepath.Base(disk))
		published[name] = out
	}
	return nil
}

// uploadedAssetName is the asset a file named name that the guest of job
// uploads becomes: "<job>-<name>", or with public its plain name, as
// openQA's.
func uploadedAssetName(job int64, name string, public bool) (string, error) {
	if !public {
		name = fmt.Sprintf("%d-%s", job, name)
	}
	return name, schemas.CheckAssetName(name)
}

// upload_asset(file, public=False, nocheck=False): a file of the guest
// becomes an asset: "<job>-<name>", or with public its plain name, for
// the jobs after this one (HDD_1=…, ISO=…). It is stored once the job
// passed, as openQA's.
func (r *runner) uploadAsset(args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var file string
	var public, nocheck bool
	if err := starlark.UnpackArgs("upload_asset", args, kwargs, "file", &file, "public?", &public, "nocheck?", &nocheck); err != nil {
		return nil, err
	}
	if strings.ContainsAny(file, "'\n") {
		return nil, fmt.Errorf("upload_asset: file %q: a path may not hold a quote or a newline", file)
	}
	name, err := uploadedAssetName(r.job, path.Base(file), public)
	if err != nil {
		return nil, fmt.Errorf("upload_asset: %v", err)
	}
	data, err := r.guestFile("upload_asset", file, r.timeout(starlark.MakeInt(90), 90))
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(r.resultsDir, "..", "publish")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, incomplete(err)
	}
	out := filepath.Join(dir, name)
	if err := os.WriteFile(out, data, 0o644); err != nil {
		return nil, incomplete(fmt.Errorf("upload_asset: %w", err))
	}
	r.assets[name] = out
	r.module.Details = append(r.module.Details, schemas.Step{Kind: "info", Text: fmt.Sprintf("upload_asset %s: asset %s, %d bytes", file, name, len(data)), Result: schemas.ResultPassed})
	return starlark.String(name), nil
}

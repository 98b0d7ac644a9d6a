package boot

import (
	"path/filepath"
	"strings"
	"testing"

	"jetqa/schemas"
)

// FuzzUploadNames gives the names a test or its guest asks to upload
// under (upload_logs, upload_asset) from anywhere: a log lands in the
// job's ulogs directory and nowhere else, and an asset name is one plain
// file name.
func FuzzUploadNames(f *testing.F) {
	for _, seed := range []string{"serial.txt", "../../etc/passwd", "..", ".", "/", "a/b", ".hidden", "x\x00y", "/var/log/../../root/.ssh/id_rsa", "assets/../../evil.qcow2"} {
		f.Add(seed, false)
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, name string, public bool) {
		if p, err := ulogFile(dir, name); err == nil {
			if filepath.Dir(p) != filepath.Join(dir, schemas.ULogsDir) {
				t.Fatalf("upload_logs(%q) writes %s, outside the ulogs", name, p)
			}
		}
		if asset, err := uploadedAssetName(7, filepath.Base(name), public); err == nil {
			if asset == "." || asset == ".." || strings.ContainsAny(asset, "/\x00") {
				t.Fatalf("upload_asset(%q) names the asset %q", name, asset)
			}
		}
	})
}

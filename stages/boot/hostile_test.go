package boot

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"jetqa/schemas"
)

// A test repository is anybody's: its files may be links to the host's
// files or devices, or far too big, and its code may try to eat the
// worker's memory. Each is refused with a reason, quickly, instead of
// hanging the worker or leaking the host's files.
func TestHostileTestRepositoriesAreRefused(t *testing.T) {
	defer func(was uint64) { starlarkMemory = was }(starlarkMemory)
	starlarkMemory = 64 << 20
	run := "def run():\n    pass\n"
	for _, tc := range []struct {
		name    string
		files   map[string]string
		links   map[string]string // name → target
		fifo    string
		errWant string
	}{
		{name: "a module linked to /dev/zero", files: map[string]string{"main.star": "loadtest('boot')\n"},
			links: map[string]string{"tests/boot.star": "/dev/zero"}, errWant: "outside the repository"},
		{name: "a module that is a FIFO", files: map[string]string{"main.star": "loadtest('boot')\n"},
			fifo: "tests/boot.star", errWant: "not a regular file"},
		{name: "main.star linked to the host's files", links: map[string]string{"main.star": "/etc/passwd"}, errWant: "outside the repository"},
		{name: "a module linked out of the repository", files: map[string]string{"main.star": "loadtest('boot')\n"},
			links: map[string]string{"tests/boot.star": "../../../../../../etc/hostname"}, errWant: "outside the repository"},
		{name: "a huge module", files: map[string]string{"main.star": "loadtest('boot')\n", "tests/boot.star": run + strings.Repeat("#", schemas.MaxTestFileBytes)}, errWant: "over the"},
		{name: "a string bomb", files: map[string]string{"main.star": "x = 'a' * (1 << 40)\n"}, errWant: "main.star"},
		{name: "a list bomb", files: map[string]string{"main.star": "x = [0] * (1 << 40)\n"}, errWant: "main.star"},
		{name: "a doubling loop", files: map[string]string{"main.star": "x = 'a'\nfor i in range(100):\n    x = x + x\n"}, errWant: "over the 64 MiB it may use"},
		{name: "a link inside the repository is fine", files: map[string]string{"main.star": "loadtest('boot')\n", "tests/real.star": run},
			links: map[string]string{"tests/boot.star": "real.star"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := tree(t, tc.files)
			for name, target := range tc.links {
				p := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(target, p); err != nil {
					t.Fatal(err)
				}
			}
			if tc.fifo != "" {
				p := filepath.Join(dir, tc.fifo)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := syscall.Mkfifo(p, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			_, _, err := loadTests(ctx, dir, dir, nil)
			if tc.errWant == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.errWant) {
				t.Fatalf("error %v, want one containing %q", err, tc.errWant)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// A needle directory with a needle whose image links to /dev/zero, or
// out of the repository, reads as a problem with that needle only.
func TestHostileNeedlesAreProblemsOfTheirOwn(t *testing.T) {
	dir := t.TempDir()
	good, err := os.ReadFile(filepath.Join("..", "..", "deploy", "testos", "needles", "testos-shell.png"))
	if err != nil {
		t.Fatal(err)
	}
	js, err := os.ReadFile(filepath.Join("..", "..", "deploy", "testos", "needles", "testos-shell.json"))
	if err != nil {
		t.Fatal(err)
	}
	for name, png := range map[string]string{"zero": "/dev/zero", "passwd": "/etc/passwd", "good": ""} {
		if err := os.WriteFile(filepath.Join(dir, name+".json"), js, 0o644); err != nil {
			t.Fatal(err)
		}
		if png == "" {
			err = os.WriteFile(filepath.Join(dir, name+".png"), good, 0o644)
		} else {
			err = os.Symlink(png, filepath.Join(dir, name+".png"))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	d, err := schemas.ReadNeedleDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Needles) != 1 || d.Needles[0].Name != "good" {
		t.Errorf("needles %v, want good only", d.Needles)
	}
	problems := map[string]string{}
	for _, p := range d.Problems {
		problems[p.File] = p.Err.Error()
	}
	if !strings.Contains(problems["zero.json"], "outside the repository") || !strings.Contains(problems["passwd.json"], "outside the repository") {
		t.Errorf("problems %v", problems)
	}
}

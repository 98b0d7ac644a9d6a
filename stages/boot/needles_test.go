package boot

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/natstest"
)

// pngOf is a w×h PNG whose pixels depend on seed, so that needles with
// different seeds have different content hashes.
func pngOf(t *testing.T, w, h int, seed uint8) string {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = seed + uint8(i)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

func TestLoadNeedles(t *testing.T) {
	good := `{"tags":["a","b"],"area":[{"xpos":0,"ypos":0,"width":10,"height":10,"type":"match"}]}`
	img := pngOf(t, 16, 16, 0)
	t.Run("tags select candidates", func(t *testing.T) {
		set, err := loadNeedles(tree(t, map[string]string{"one.json": good, "one.png": img, "sub/two.json": strings.Replace(good, `"a","b"`, `"b"`, 1), "sub/two.png": pngOf(t, 16, 16, 1)}))
		if err != nil {
			t.Fatal(err)
		}
		if n := len(set.withTags([]string{"a"})); n != 1 {
			t.Errorf("%d needles with tag a, want 1", n)
		}
		both := set.withTags([]string{"b", "zzz"})
		if len(both) != 2 {
			t.Fatalf("%d needles with tag b or zzz, want 2", len(both))
		}
		if both[0].Hash == both[1].Hash {
			t.Error("different needles share a content hash")
		}
	})
	for _, tc := range []struct {
		name    string
		files   map[string]string
		errWant string
	}{
		{"JSON that does not parse", map[string]string{"bad.json": `{"tags":`, "bad.png": img}, "needle file bad.json: needle \"bad\""},
		{"no PNG", map[string]string{"lonely.json": good}, "needle file lonely.json: its image lonely.png is missing"},
		{"not a PNG", map[string]string{"x.json": good, "x.png": "png"}, "needle file x.png: not a PNG"},
		{"area outside the PNG", map[string]string{"x.json": good, "x.png": pngOf(t, 8, 8, 0)}, "outside the 8x8 image"},
		{"name used twice", map[string]string{"x.json": good, "x.png": img, "sub/x.json": good, "sub/x.png": img}, "needle file x.json: the needle name \"x\" is used twice (sub/x.json and x.json)"},
		{"every problem counted", map[string]string{"a.json": good, "b.json": good, "c.json": `[]`}, "(and 2 more problems"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadNeedles(tree(t, tc.files))
			if err == nil || !strings.Contains(err.Error(), tc.errWant) {
				t.Fatalf("error %v, want one containing %q", err, tc.errWant)
			}
		})
	}
	if _, err := loadNeedles(filepath.Join(t.TempDir(), "none")); err == nil || !strings.Contains(err.Error(), "needle directory") {
		t.Errorf("missing needle directory: %v", err)
	}
}

// TestPublishCompletesAHalfPublishedNeedle: a worker killed between
// storing a needle's PNG and its JSON leaves the PNG alone in the store;
// the next job stores the JSON.
func TestPublishCompletesAHalfPublishedNeedle(t *testing.T) {
	srv := natstest.Start(t)
	bus := srv.Bus("boot")
	ctx := context.Background()
	good := `{"tags":["a"],"area":[{"xpos":0,"ypos":0,"width":10,"height":10,"type":"match"}]}`
	set, err := loadNeedles(tree(t, map[string]string{"one.json": good, "one.png": pngOf(t, 16, 16, 0)}))
	if err != nil {
		t.Fatal(err)
	}
	n := set.withTags([]string{"a"})
	jsonKey, pngKey := streams.NeedleBlobKeys(n[0].Hash)
	png, err := os.ReadFile(n[0].PNGPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.PutBlob(ctx, streams.BucketNeedles, pngKey, bytes.NewReader(png)); err != nil {
		t.Fatal(err)
	}
	if _, err := set.publish(ctx, bus, n); err != nil {
		t.Fatal(err)
	}
	js, err := bus.GetBlob(ctx, streams.BucketNeedles, jsonKey)
	if err != nil || string(js) != good {
		t.Fatalf("needle JSON in the store: %q, %v", js, err)
	}
}

// An os-autoinst distribution's needle directory is read as os-autoinst
// reads it: what it would skip is left out, with a warning, and the rest
// is used; the distribution's cleanup handler then keeps only some.
func TestLoadNeedlesAsOSAutoinst(t *testing.T) {
	good := `{"tags":["a"],"area":[{"xpos":0,"ypos":0,"width":10,"height":10,"type":"match"}]}`
	img := pngOf(t, 16, 16, 0)
	var logged bytes.Buffer
	set, err := loadNeedlesAsOSAutoinst(tree(t, map[string]string{
		"one.json": good, "one.png": img,
		"sub/two.json": good, "sub/two.png": pngOf(t, 16, 16, 1),
		"nomatch.json": `{"tags":["a"],"area":[{"xpos":0,"ypos":0,"width":10,"height":10,"type":"exclude"}]}`, "nomatch.png": img,
		"lonely.json": good,
	}), slog.New(slog.NewTextHandler(&logged, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range set.withTags([]string{"a"}) {
		names = append(names, n.Name)
	}
	if strings.Join(names, " ") != "one two" {
		t.Errorf("needles used: %q, want one two", names)
	}
	for _, bad := range []string{"nomatch.json", "lonely.json"} {
		if !strings.Contains(logged.String(), bad) {
			t.Errorf("no warning about %s in %q", bad, logged.String())
		}
	}
	set.keepOnly([]string{"sub/two.json"})
	if n := set.withTags([]string{"a"}); len(n) != 1 || n[0].Name != "two" {
		t.Errorf("after keepOnly(sub/two.json): %+v", n)
	}
	if _, ok := set.byName("one"); ok {
		t.Error("a needle left out is still found by name")
	}

	// A developer's needle stays when the distribution reloads its
	// needles (os-autoinst does that before it checks a screen again).
	devDir := tree(t, map[string]string{"mine.json": `{"tags":["b"],"area":[{"xpos":0,"ypos":0,"width":4,"height":4,"type":"match"}]}`, "mine.png": img})
	dev, err := schemas.ReadNeedleDir(devDir)
	if err != nil {
		t.Fatal(err)
	}
	set.overlay(dev.Needles)
	load := func(d string) (*needleSet, error) { return loadNeedlesAsOSAutoinst(d, slog.New(slog.DiscardHandler)) }
	again, err := set.reloaded(load, []string{"one.json"})
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, n := range again.withTags([]string{"a", "b"}) {
		kept = append(kept, n.Name)
	}
	if strings.Join(kept, " ") != "one mine" {
		t.Errorf("after a reload keeping one.json: %q, want one mine", kept)
	}
}

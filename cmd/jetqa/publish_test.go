package main

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"jetqa/schemas"
	"jetqa/streams"
)

// A job that passed publishes its disk (PUBLISH_HDD_1) and the guest's
// files (upload_asset) as assets; the next job boots with that disk
// (HDD_1) and finds what the first wrote on it. A job that failed
// publishes nothing.
func TestJobsPublishDisksAndAssets(t *testing.T) {
	testos := testosDir(t)
	s := startSystem(t)
	repo := repoVariant(t, testos, func(dir string) {
		writeFile(t, filepath.Join(dir, "tests", "writedisk.star"), `
def run():
    assert_script_run("echo jetqa-was-here > /tmp/mark && dd if=/tmp/mark of=/dev/vda conv=notrunc")
    assert_script_run("echo made in the guest > /tmp/artifact.txt")
    if upload_asset("/tmp/artifact.txt") != get_var("JOB_PREFIX") + "artifact.txt":
        fail("a private asset is named after its job")
    upload_asset("/tmp/artifact.txt", public=True)
`)
		writeFile(t, filepath.Join(dir, "tests", "readdisk.star"), `
def run():
    mark = script_output("dd if=/dev/vda bs=14 count=1 2>/dev/null")
    if mark != "jetqa-was-here":
        fail("the disk holds %r, not what the job before wrote" % mark)
`)
		writeFile(t, filepath.Join(dir, "main.star"), "loadtest('boot')\nloadtest(get_var('DISK_MODULE'))\n")
	})
	registered := func(name string) *schemas.AssetRegistered {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		reg, err := s.bus.LookupAsset(ctx, name)
		if errors.Is(err, streams.ErrNoAsset) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return reg
	}

	writer := s.post(t, demoSettings(testos, "CASEDIR="+repo, "DISK_MODULE=writedisk", "HDDSIZEGB=1", "PUBLISH_HDD_1=testos-marked.qcow2", "JOB_PREFIX=1-"))
	if fin := s.finish(t, writer, 5*time.Minute); fin.Result != schemas.ResultPassed {
		t.Fatalf("job %d: %s (%s)", writer, fin.Result, fin.Reason)
	}
	for _, name := range []string{"testos-marked.qcow2", "1-artifact.txt", "artifact.txt"} {
		reg := registered(name)
		if reg == nil || reg.Source != "job 1" || reg.Size == 0 {
			t.Errorf("asset %s: %+v, want one published by job 1", name, reg)
		}
	}

	reader := s.post(t, demoSettings(testos, "CASEDIR="+repo, "DISK_MODULE=readdisk", "HDD_1=testos-marked.qcow2"))
	if fin := s.finish(t, reader, 5*time.Minute); fin.Result != schemas.ResultPassed {
		t.Fatalf("job %d booted with the published disk: %s (%s)", reader, fin.Result, fin.Reason)
	}

	failing := s.post(t, demoSettings(testos, "CASEDIR="+repo, "DISK_MODULE=fail", "HDDSIZEGB=1", "PUBLISH_HDD_1=testos-failed.qcow2"))
	if fin := s.finish(t, failing, 5*time.Minute); fin.Result != schemas.ResultFailed {
		t.Fatalf("job %d: %s (%s), want failed", failing, fin.Result, fin.Reason)
	}
	if reg := registered("testos-failed.qcow2"); reg != nil {
		t.Errorf("a failed job published %+v", reg)
	}
}

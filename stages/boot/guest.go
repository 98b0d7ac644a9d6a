package boot

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"mime"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"jetqa/schemas"
	"jetqa/stages/boot/qemu"
)

// The guest's routes. os-autoinst's worker serves the guest, over HTTP
// under http://QEMU_HOST_IP:QEMUPORT+1/JOBTOKEN/, the test data, the
// job's vars and assets, the script a test is about to run, and takes
// the files the guest uploads (testapi's autoinst_url, data_url,
// upload_logs, upload_asset, and script_output's current_script). jetqa
// serves the same routes on a unix socket in a private directory; QEMU's
// user network runs GuestBridge for each connection the guest opens to
// qemu.GuestAddr, so nothing listens on the worker host's network.

// guestPort is os-autoinst's QEMUPORT: the routes answer on the port
// after it.
const guestPort = qemu.GuestPort - 1

// guestRoutes answers the guest of one job.
type guestRoutes struct {
	token      string
	caseDir    string
	poolDir    string            // the test side's directory: vars.json, current_script
	resultsDir string            // upload_logs' files go to its ulogs directory
	publishDir string            // upload_asset's files go here
	assets     map[string]string // the job's assets by file name
	maxUpload  int64             // bytes; 0 is no limit
	job        int64
	log        *slog.Logger

	mu        sync.Mutex
	published map[string]string // upload_asset's assets: name → file
}

// newGuestRoutes are the routes of a job's guest, with a new token.
func newGuestRoutes(job int64, ready *schemas.JobReady, poolDir, resultsDir string, log *slog.Logger) (*guestRoutes, error) {
	g := &guestRoutes{token: newID() + newID(), caseDir: ready.CaseDir, poolDir: poolDir, resultsDir: resultsDir,
		publishDir: filepath.Join(ready.JobDir, "publish"), assets: map[string]string{}, job: job, log: log,
		published: map[string]string{}}
	for _, p := range ready.Assets {
		g.assets[filepath.Base(p)] = p
	}
	if v := ready.Settings["UPLOAD_MAX_MESSAGE_SIZE_GB"]; v != "" {
		gb, err := strconv.ParseFloat(v, 64)
		if err != nil || gb < 0 {
			return nil, fmt.Errorf("UPLOAD_MAX_MESSAGE_SIZE_GB=%q: give a number of GiB, 0 for no limit", v)
		}
		g.maxUpload = int64(gb * (1 << 30))
	}
	return g, nil
}

// guestVars are the vars the test side needs to reach the routes
// (testapi::autoinst_url): its address, os-autoinst's base port and the
// job's token.
func (g *guestRoutes) guestVars(vars map[string]string) {
	vars["QEMUPORT"] = strconv.Itoa(guestPort)
	vars["JOBTOKEN"] = g.token
	vars["QEMU_HOST_IP"] = qemu.GuestAddr
}

func (g *guestRoutes) handler() http.Handler {
	mux := http.NewServeMux()
	base := "/" + g.token
	mux.HandleFunc("GET "+base+"/data", g.data)
	mux.HandleFunc("GET "+base+"/data/{relpath...}", g.data)
	mux.HandleFunc("GET "+base+"/assets/{type}/{name}", g.asset)
	mux.HandleFunc("GET "+base+"/assets/{type}/{name}/{relpath...}", g.asset)
	mux.HandleFunc("GET "+base+"/vars", g.vars)
	mux.HandleFunc("GET "+base+"/current_script", func(w http.ResponseWriter, r *http.Request) {
		http.ServeFile(w, r, filepath.Join(g.poolDir, "current_script"))
	})
	mux.HandleFunc("POST "+base+"/uploadlog/{filename}", g.upload)
	mux.HandleFunc("POST "+base+"/upload_asset/{filename}", g.upload)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		g.log.Warn("guest asked for an unknown route", "method", r.Method, "path", guestPath(r.URL.Path, g.token))
		http.NotFound(w, r)
	})
	return mux
}

// guestPath is path with the job's token hidden, for the log.
func guestPath(p, token string) string { return strings.ReplaceAll(p, token, "TOKEN") }

// allowedPath says whether a path the guest gave stays where it is
// rooted: no "..", as os-autoinst's _is_allowed_path.
func allowedPath(p string) bool {
	return !slices.Contains(strings.Split(p, "/"), "..")
}

// data serves CASEDIR/data: a file as it is, a directory as a cpio
// archive of its files named data/<path below it>, as os-autoinst's.
func (g *guestRoutes) data(w http.ResponseWriter, r *http.Request) {
	rel := r.PathValue("relpath")
	if !allowedPath(rel) {
		http.NotFound(w, r)
		return
	}
	p := filepath.Join(g.caseDir, "data", filepath.FromSlash(rel))
	g.log.Info("guest asked for test data", "path", p)
	st, err := os.Stat(p)
	switch {
	case err != nil:
		http.NotFound(w, r)
	case st.IsDir():
		w.Header().Set("Content-Type", "application/x-cpio")
		if err := writeCpio(w, p); err != nil {
			g.log.Warn("test data archive cut", "path", p, "err", err)
		}
	default:
		g.serveFile(w, r, p)
	}
}

// serveFile serves a file with a type by its extension, as Mojolicious
// picks it.
func (g *guestRoutes) serveFile(w http.ResponseWriter, r *http.Request, p string) {
	if t := mime.TypeByExtension(path.Ext(p)); t != "" {
		w.Header().Set("Content-Type", t)
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	http.ServeFile(w, r, p)
}

// asset serves one of the job's assets by its file name (the type, iso,
// hdd, repo or other, is os-autoinst's and does not matter here).
func (g *guestRoutes) asset(w http.ResponseWriter, r *http.Request) {
	name, rel := r.PathValue("name"), r.PathValue("relpath")
	p, ok := g.assets[name]
	if !ok || !allowedPath(rel) || !allowedPath(r.PathValue("type")) {
		http.NotFound(w, r)
		return
	}
	if rel != "" {
		p = filepath.Join(p, filepath.FromSlash(rel))
	}
	g.log.Info("guest asked for an asset", "path", p)
	if st, err := os.Stat(p); err != nil || !st.Mode().IsRegular() {
		http.NotFound(w, r)
		return
	}
	g.serveFile(w, r, p)
}

// vars serves the test side's vars.json as os-autoinst's {"vars": …}.
func (g *guestRoutes) vars(w http.ResponseWriter, _ *http.Request) {
	data, err := os.ReadFile(filepath.Join(g.poolDir, "vars.json"))
	if err != nil || !json.Valid(data) {
		http.Error(w, "no vars", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"vars":%s}`, data)
}

// upload takes a file the guest sends as curl --form upload=@FILE:
// upload_logs' (with upname) into the results' ulogs directory,
// upload_asset's (with target assets_public, else private) as an asset
// the job publishes, "<job>-<name>" when private, as openQA's. It is
// written to a temporary file as it comes and moved into place once
// whole.
func (g *guestRoutes) upload(w http.ResponseWriter, r *http.Request) {
	name, err := g.receive(r)
	if err != nil {
		g.log.Warn("guest upload refused", "path", guestPath(r.URL.Path, g.token), "err", err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	fmt.Fprintf(w, "OK: %s\n", name)
}

func (g *guestRoutes) receive(r *http.Request) (string, error) {
	asset := strings.HasPrefix(r.URL.Path, "/"+g.token+"/upload_asset/")
	if g.maxUpload > 0 {
		r.Body = http.MaxBytesReader(nil, r.Body, g.maxUpload)
	}
	mr, err := r.MultipartReader()
	if err != nil {
		return "", fmt.Errorf("not a form upload: %w", err)
	}
	tmp, err := os.CreateTemp(g.resultsDir, ".upload-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	var got bool
	fields := map[string]string{}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("reading the form: %w", err)
		}
		switch f := part.FormName(); f {
		case "upload":
			if _, err := io.Copy(tmp, part); err != nil {
				return "", fmt.Errorf("reading the upload: %w", err)
			}
			got = true
		case "upname", "target":
			v, err := io.ReadAll(io.LimitReader(part, 4096))
			if err != nil {
				return "", fmt.Errorf("reading the form: %w", err)
			}
			fields[f] = string(v)
		}
		part.Close()
	}
	if !got {
		return "", errors.New("upload file content missing")
	}
	if err := tmp.Close(); err != nil {
		return "", err
	}
	name := path.Base(cmp.Or(fields["upname"], r.PathValue("filename")))
	if asset {
		return g.publish(tmp.Name(), name, fields["target"])
	}
	file, err := ulogFile(g.resultsDir, name)
	if err != nil {
		return "", err
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return "", err
	}
	g.log.Info("guest uploaded a log", "file", schemas.ULogsDir+"/"+name)
	return name, nil
}

// ulogFile is where a file named name goes among the job's ulogs (the
// results' ulogs/, as os-autoinst's): what the guest uploads, and the
// dumps of a post_fail_hook.
func ulogFile(resultsDir, name string) (string, error) {
	name = filepath.Base(name)
	if name == "/" || strings.HasPrefix(name, ".") {
		return "", fmt.Errorf("a file name %q among the job's ulogs", name)
	}
	dir := filepath.Join(resultsDir, schemas.ULogsDir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return filepath.Join(dir, name), nil
}

// publish makes the uploaded file tmp an asset the job publishes.
func (g *guestRoutes) publish(tmp, name, target string) (string, error) {
	if target != "" && target != "assets_private" && target != "assets_public" {
		return "", fmt.Errorf("target %q: use assets_private or assets_public", target)
	}
	name, err := uploadedAssetName(g.job, name, target == "assets_public")
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(g.publishDir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(g.publishDir, name)
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	g.mu.Lock()
	g.published[name] = out
	g.mu.Unlock()
	g.log.Info("guest uploaded an asset", "asset", name)
	return name, nil
}

// publishInto adds the assets the guest uploaded to published.
func (g *guestRoutes) publishInto(published map[string]string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	maps.Copy(published, g.published)
}

// writeCpio writes the files below dir as a newc cpio archive, each named
// data/<its path below dir>, as os-autoinst's _test_data_dir.
func writeCpio(w io.Writer, dir string) error {
	header := func(name string, mode fs.FileMode, mtime time.Time, size int64) string {
		h := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%s\x00",
			0, 0o100000|uint32(mode.Perm()), 0, 0, 1, mtime.Unix(), size, 0, 0, 0, 0, len(name)+1, 0, name)
		return h + strings.Repeat("\x00", (4-len(h)%4)%4)
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := io.WriteString(w, header("data/"+filepath.ToSlash(rel), info.Mode(), info.ModTime(), info.Size())); err != nil {
			return err
		}
		n, err := io.Copy(w, io.LimitReader(f, info.Size()))
		if err != nil {
			return err
		}
		if n != info.Size() {
			return fmt.Errorf("%s: shrank while read", p)
		}
		_, err = io.WriteString(w, strings.Repeat("\x00", int((4-n%4)%4)))
		return err
	})
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, header("TRAILER!!!", 0, time.Unix(0, 0), 0))
	return err
}

// serveGuest serves routes on a unix socket in a new private directory
// until ctx ends, and gives the socket's path.
func serveGuest(ctx context.Context, g *guestRoutes) (string, func(), error) {
	dir, err := os.MkdirTemp("", "jetqa-guest-")
	if err != nil {
		return "", nil, err
	}
	sock := filepath.Join(dir, "s")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("the guest's routes: %w", err)
	}
	srv := &http.Server{Handler: g.handler(), ReadHeaderTimeout: time.Minute, BaseContext: func(net.Listener) context.Context { return ctx }}
	go func() { _ = srv.Serve(ln) }()
	return sock, func() {
		srv.Close()
		os.RemoveAll(dir)
	}, nil
}

// GuestBridge copies between a connection of the guest (in, out: QEMU's
// guestfwd command's standard input and output) and the job's routes on
// the unix socket sock, until both directions end.
func GuestBridge(sock string, in io.Reader, out io.Writer) error {
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return err
	}
	defer conn.Close()
	sent := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, in)
		if cw, ok := conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		sent <- err
	}()
	_, err = io.Copy(out, conn)
	if err != nil {
		return err
	}
	select {
	case err := <-sent:
		return err
	default:
		// The answer is whole: what the guest still sends has nobody
		// to read it.
		return nil
	}
}

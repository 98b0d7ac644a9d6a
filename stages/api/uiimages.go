package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"net/http"
	"strconv"

	"jetqa/schemas"
	"jetqa/streams"
	"jetqa/streams/blobs"
)

// needleImage serves the PNG of a needle one of the job's steps matched
// or showed as a candidate, from the needle store.
func (s *Server) needleImage(w http.ResponseWriter, r *http.Request) {
	j, ok := s.jobFromPath(w, r)
	if !ok {
		return
	}
	hash := r.PathValue("hash")
	if !usesNeedle(j, hash) {
		fail(w, http.StatusNotFound, "job %d shows no needle %q", j.ID, hash)
		return
	}
	_, key := streams.NeedleBlobKeys(hash)
	data, err := s.bus.GetBlob(r.Context(), streams.BucketNeedles, key)
	if err != nil {
		fail(w, http.StatusNotFound, "needle %s is not in the needle store: %v", hash, err)
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Cache-Control", "public, max-age=31536000, immutable") // content-addressed
	_, _ = w.Write(data)
}

// usesNeedle says whether one of the job's steps shows the needle hash.
func usesNeedle(j JobView, hash string) bool {
	if hash == "" {
		return false
	}
	for _, m := range j.Modules {
		for _, st := range m.Details {
			if st.NeedleHash == hash {
				return true
			}
			for _, c := range st.Candidates {
				if c.Hash == hash {
					return true
				}
			}
		}
	}
	return false
}

// diffImage draws where a step's screenshot differs from a candidate
// needle inside the needle's match areas: each area of the needle's image
// is laid over the place on the screen where it was looked for (framed in
// yellow); what is alike keeps its colours, what differs is red, and the
// rest of the screen is dimmed to grey.
func (s *Server) diffImage(w http.ResponseWriter, r *http.Request) {
	j, ok := s.jobFromPath(w, r)
	if !ok {
		return
	}
	var idx [3]int
	for i, name := range []string{"module", "step", "candidate"} {
		n, err := strconv.Atoi(r.PathValue(name))
		if err != nil || n < 0 {
			fail(w, http.StatusBadRequest, "%s %q: want a number from 0", name, r.PathValue(name))
			return
		}
		idx[i] = n
	}
	if idx[0] >= len(j.Modules) || idx[1] >= len(j.Modules[idx[0]].Details) || idx[2] >= len(j.Modules[idx[0]].Details[idx[1]].Candidates) {
		fail(w, http.StatusNotFound, "job %d has no candidate %d of step %d of module %d", j.ID, idx[2], idx[1], idx[0])
		return
	}
	step := j.Modules[idx[0]].Details[idx[1]]
	cand := step.Candidates[idx[2]]
	screen, err := s.readResult(r.Context(), j, step.Screenshot)
	if err != nil {
		fail(w, http.StatusNotFound, "job %d: screenshot %q: %v", j.ID, step.Screenshot, err)
		return
	}
	jsonKey, pngKey := streams.NeedleBlobKeys(cand.Hash)
	var blobs [2][]byte
	for i, key := range []string{jsonKey, pngKey} {
		if blobs[i], err = s.bus.GetBlob(r.Context(), streams.BucketNeedles, key); err != nil {
			fail(w, http.StatusNotFound, "needle %s is not in the needle store: %v", cand.Needle, err)
			return
		}
	}
	needle, err := schemas.ParseNeedle(cand.Needle, blobs[0])
	if err != nil {
		fail(w, http.StatusUnprocessableEntity, "needle %s: %v", cand.Needle, err)
		return
	}
	out, err := drawDiff(screen, blobs[1], needle, cand.Areas)
	if err != nil {
		fail(w, http.StatusUnprocessableEntity, "job %d: no diff of %s: %v", j.ID, cand.Needle, err)
		return
	}
	w.Header().Set("Content-Type", "image/png")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	_, _ = w.Write(out)
}

// readResult reads one of the job's result files whole.
func (s *Server) readResult(ctx context.Context, j JobView, name string) ([]byte, error) {
	key, ok := j.Files[name]
	if !ok {
		return nil, errors.New("not among the job's results")
	}
	body, _, err := s.bus.Results().Open(ctx, key, 0)
	if errors.Is(err, blobs.ErrNotFound) {
		return nil, errors.New("no longer stored")
	}
	if err != nil {
		return nil, err
	}
	defer body.Close()
	return io.ReadAll(io.LimitReader(body, 64<<20))
}

// diffThreshold is how far (0–255, in the channel that differs most) a
// pixel may differ before the diff marks it.
const diffThreshold = 32

func drawDiff(screenPNG, needlePNG []byte, needle schemas.Needle, found []schemas.AreaMatch) ([]byte, error) {
	screen, err := png.Decode(bytes.NewReader(screenPNG))
	if err != nil {
		return nil, fmt.Errorf("the screenshot: %w", err)
	}
	ref, err := png.Decode(bytes.NewReader(needlePNG))
	if err != nil {
		return nil, fmt.Errorf("the needle's image: %w", err)
	}
	b := screen.Bounds()
	out := image.NewRGBA(b)
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, _ := screen.At(x, y).RGBA()
			grey := uint8(40 + ((r+g+bl)/3>>8)/3) // dimmed: the areas stand out
			out.SetRGBA(x, y, color.RGBA{grey, grey, grey, 255})
		}
	}
	var areas []schemas.NeedleArea
	for _, a := range needle.Areas {
		if a.Type == schemas.AreaTypeMatch {
			areas = append(areas, a)
		}
	}
	yellow := image.NewUniform(color.RGBA{255, 220, 0, 255})
	for i, a := range areas {
		// Where the area was looked for: the match's place for it, else
		// where the needle has it.
		at := image.Pt(a.X, a.Y)
		if i < len(found) {
			at = image.Pt(found[i].X, found[i].Y)
		}
		at = at.Add(b.Min)
		src := image.Rect(a.X, a.Y, a.X+a.Width, a.Y+a.Height).Add(ref.Bounds().Min)
		for dy := range a.Height {
			for dx := range a.Width {
				sp, np := at.Add(image.Pt(dx, dy)), src.Min.Add(image.Pt(dx, dy))
				if !sp.In(b) || !np.In(ref.Bounds()) {
					continue
				}
				sr, sg, sb, _ := screen.At(sp.X, sp.Y).RGBA()
				nr, ng, nb, _ := ref.At(np.X, np.Y).RGBA()
				c := color.RGBA{uint8(sr >> 8), uint8(sg >> 8), uint8(sb >> 8), 255}
				if d := max(absDiff(sr, nr), absDiff(sg, ng), absDiff(sb, nb)) >> 8; d > diffThreshold {
					c = color.RGBA{uint8(min(255, 128+d)), 0, 0, 255}
				}
				out.SetRGBA(sp.X, sp.Y, c)
			}
		}
		frame := image.Rectangle{at, at.Add(image.Pt(a.Width, a.Height))}.Inset(-2)
		for _, edge := range []image.Rectangle{
			{frame.Min, image.Pt(frame.Max.X, frame.Min.Y+2)}, {image.Pt(frame.Min.X, frame.Max.Y-2), frame.Max},
			{frame.Min, image.Pt(frame.Min.X+2, frame.Max.Y)}, {image.Pt(frame.Max.X-2, frame.Min.Y), frame.Max},
		} {
			draw.Draw(out, edge.Intersect(b), yellow, image.Point{}, draw.Src)
		}
	}
	var buf bytes.Buffer
	if err := (&png.Encoder{CompressionLevel: png.BestSpeed}).Encode(&buf, out); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func absDiff(a, b uint32) uint32 {
	if a > b {
		return a - b
	}
	return b - a
}

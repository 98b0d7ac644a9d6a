package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"

	"jetqa/schemas"
)

// progressView shows download progress: bars on a terminal, plain lines
// (at most one every few seconds per asset) when the output is a pipe or a
// file. Other lines are printed through it so they never tear a bar.
type progressView struct {
	out io.Writer
	tty bool

	mu    sync.Mutex
	p     *mpb.Progress
	bars  map[string]*mpb.Bar
	said  map[string]time.Time
	every time.Duration
}

func newProgressView(out io.Writer) *progressView {
	tty := false
	if f, ok := out.(*os.File); ok {
		tty = term.IsTerminal(int(f.Fd()))
	}
	return &progressView{out: out, tty: tty, bars: map[string]*mpb.Bar{}, said: map[string]time.Time{}, every: 3 * time.Second}
}

// Println prints a line above the bars.
func (v *progressView) Println(line string) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.p != nil {
		_, _ = v.p.Write([]byte(line + "\n"))
		return
	}
	fmt.Fprintln(v.out, line)
}

// Update shows one progress report.
func (v *progressView) Update(e *schemas.AssetProgress) {
	v.mu.Lock()
	defer v.mu.Unlock()
	key := e.Setting + " " + e.Source
	finished := e.Total >= 0 && e.Done >= e.Total
	if !v.tty {
		if time.Since(v.said[key]) < v.every && !finished {
			return
		}
		v.said[key] = time.Now()
		if e.Total > 0 {
			fmt.Fprintf(v.out, "              fetching %s: %s of %s (%d%%)\n", key, mib(e.Done), mib(e.Total), e.Done*100/e.Total)
		} else {
			fmt.Fprintf(v.out, "              fetching %s: %s\n", key, mib(e.Done))
		}
		return
	}
	if v.p == nil {
		v.p = mpb.New(mpb.WithOutput(v.out), mpb.WithWidth(40))
	}
	bar := v.bars[key]
	if bar == nil {
		bar = v.p.AddBar(max(e.Total, 0),
			mpb.PrependDecorators(decor.Name("fetching "+key+" ")),
			mpb.AppendDecorators(decor.CountersKibiByte("% .1f / % .1f  "), decor.Percentage()))
		v.bars[key] = bar
	}
	bar.SetCurrent(e.Done)
	if finished {
		bar.SetTotal(e.Total, true)
	}
}

// Close ends the bars, dropping unfinished ones.
func (v *progressView) Close() {
	v.mu.Lock()
	p := v.p
	for _, b := range v.bars {
		if !b.Completed() {
			b.Abort(false)
		}
	}
	v.p = nil
	v.mu.Unlock()
	if p != nil {
		p.Wait()
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

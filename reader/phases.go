package reader

import (
	"fmt"
	"io"
	"time"
)

// phases times the steps of Open for Options.Phases; a nil writer makes
// each step a no-op.
type phases struct {
	w    io.Writer
	last time.Time
}

func newPhases(w io.Writer) *phases { return &phases{w: w, last: time.Now()} }

// done reports the time since the previous step under name.
func (p *phases) done(name string) {
	if p.w == nil {
		return
	}
	now := time.Now()
	fmt.Fprintf(p.w, "%s %.1fms\n", name, float64(now.Sub(p.last).Microseconds())/1000)
	p.last = now
}

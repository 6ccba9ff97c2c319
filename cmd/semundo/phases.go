package main

import (
	"fmt"
	"io"
	"os"
	"time"
)

// phaseLog, set by SEMUNDO_DEBUG_PHASES=1, receives a line per phase of a
// command (the reader's Open steps, the scan, the output) with its
// duration: docs/benchmarks.md's phase tables come from it.
var phaseLog = func() io.Writer {
	if os.Getenv("SEMUNDO_DEBUG_PHASES") != "" {
		return os.Stderr
	}
	return nil
}()

// phaseStart is when the last phase ended.
var phaseStart = time.Now()

// phase reports the time since the previous phase under name.
func phase(name string) {
	if phaseLog == nil {
		return
	}
	now := time.Now()
	fmt.Fprintf(phaseLog, "%s %.1fms\n", name, float64(now.Sub(phaseStart).Microseconds())/1000)
	phaseStart = now
}

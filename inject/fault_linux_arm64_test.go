package inject

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/testenv"
)

// faultTarget is one kind of target of TestKillTracerWindow: start starts
// one, probe says what is wrong with it after a kill ("" when nothing).
type faultTarget struct {
	name  string
	start func(t *testing.T) *target
	probe func(t *testing.T, tg *target) string
	// eintrWindow: the target blocks in semop, which the interrupt ends
	// with EINTR before the tracer can set it up to be issued again.
	eintrWindow bool
}

// noLine reports a line the target printed (only "err" lines exist
// unprompted).
func noLine(tg *target) string {
	select {
	case l := <-tg.lines:
		return fmt.Sprintf("printed %q", l)
	default:
		return ""
	}
}

// countsAt returns a probe that checks that the counter at addr in the
// target moves on, and that the target printed nothing ("err").
func countsAt(addr uintptr) func(t *testing.T, tg *target) string {
	return func(t *testing.T, tg *target) string {
		read := func() uint64 { return binary.LittleEndian.Uint64(readRemote(t, tg.pid, addr, 8)) }
		before := read()
		testenv.Eventually(t, fmt.Sprintf("pid %d to count on", tg.pid), func() bool { return read() > before })
		return noLine(tg)
	}
}

// TestKillTracerWindow kills a tracer that runs whole sessions one after
// another (Seize, mmap, write, getpid, munmap, Detach) at uniformly random
// moments of its life, 200 times (40 with -short), against four kinds of
// target in turn: a spinner in user space, a thread in a nanosleep loop,
// one blocked in semop, and a process of three threads. Each must go on
// as if nothing happened: the stub restores a thread without the tracer.
// The kinds run one after the other, so that busy ones do not slow the
// others.
func TestKillTracerWindow(t *testing.T) {
	trials := 200
	if testing.Short() {
		trials = 40
	}
	set := newSet(t, 1)
	kinds := []faultTarget{
		{name: "spinner", start: func(t *testing.T) *target { return ready(t, armSpinner(t)) }, probe: countsAt(armCounter)},
		{name: "nanosleep", start: func(t *testing.T) *target { return ready(t, armSleepLoop(t)) }, probe: countsAt(armCounter + 16)}, // after its timespec
		{name: "semop", eintrWindow: true, start: func(t *testing.T) *target { return ready(t, armSemopLoop(t, set)) }, probe: func(t *testing.T, tg *target) string {
			// Blocked in semop again, or it printed why not.
			testenv.Eventually(t, fmt.Sprintf("pid %d to block in semop or print", tg.pid), func() bool {
				n := syscallNr(tg.pid, tg.pid)
				return len(tg.lines) > 0 || (n == nrSemop || n == nrSemtimedop) && state(tg.pid) == 'S'
			})
			if why := noLine(tg); why != "" {
				return why + " while blocked in semop"
			}
			semop(t, set, sembuf(0, 1, 0))
			if l := tg.line(t); l != "ok" {
				return fmt.Sprintf("printed %q after a post, want ok", l)
			}
			return noLine(tg)
		}},
		{name: "threads", start: func(t *testing.T) *target { return ready(t, armThreads(t)) }, probe: func(t *testing.T, tg *target) string {
			for _, off := range []uintptr{0, 8} {
				if why := countsAt(armCounter+off)(t, tg); why != "" {
					return fmt.Sprintf("thread counting at +%d: %s", off, why)
				}
			}
			return ""
		}},
	}
	for _, k := range kinds {
		t.Run(k.name, func(t *testing.T) {
			tg := k.start(t)
			defer func() { tg.kill(t) }()
			stages := filepath.Join(t.TempDir(), "stages")
			// trial starts a tracer, kills it after wait (or after its
			// first whole session when wait is 0) and probes the target;
			// it returns what harmed it and the step the tracer was at.
			trial := func(wait time.Duration) (why, step string) {
				os.Remove(stages)
				h := startEnv(t, testenv.HelperEnviron("inject-loop", "SEMUNDO_TEST_STAGES="+stages), os.Args[0], strconv.Itoa(tg.pid))
				if wait == 0 {
					if l := h.line(t); l != "seized" {
						t.Fatalf("tracer: %s", l)
					}
				} else {
					time.Sleep(wait)
				}
				h.kill(t)
				testenv.Eventually(t, "the kernel to detach the dead tracer", func() bool { return tracerOf(tg.pid) == 0 })
				at, _ := os.ReadFile(stages)
				return k.probe(t, tg), strings.TrimSpace(string(at))
			}
			// One tracer's way to its first whole session tells how long
			// a window to draw the kills from; the tracer then goes on
			// with more sessions.
			t0 := time.Now()
			why, step := trial(0)
			span := 2 * time.Since(t0)
			n, early := trials/len(kinds), 0
			for i := 0; i <= n; i++ {
				if i > 0 {
					why, step = trial(time.Duration(rand.Int64N(int64(span))))
				}
				if why == "" {
					continue
				}
				if k.eintrWindow && (step == "seize" || step == "stopped") {
					// Killed between the interrupt that ended the semop
					// with EINTR and the first stop's registers: the
					// known window (package doc). A new target goes on.
					early++
					tg.kill(t)
					tg = k.start(t)
					continue
				}
				t.Fatalf("kill %d of %d, drawn from %v, at step %q: target harmed: %s", i, n, span, step, why)
			}
			t.Logf("%d kills drawn from %v: target unharmed but by %d EINTRs from kills before the first stop's registers were set", n+1, span, early)
		})
	}
}

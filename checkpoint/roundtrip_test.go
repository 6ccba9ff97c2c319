package checkpoint_test

// The acceptance test of checkpoint/restore (issue 4): round-trip
// equivalence. For each seed, a workload of P processes in a fresh IPC
// namespace runs a random script of semops (genScript) to a quiescent point.
//
//   - Control: the processes are killed; the kernel applies their undo
//     lists; the final values are recorded.
//   - C/R, same seed: at the same point Capture takes an image; the
//     processes are killed and the namespace dropped; in a new IPC namespace
//     RestoreSets recreates the sets, stand-ins replace the processes (what
//     CRIU would recreate) and get their lists back, then they are killed.
//
// The final values of the two runs must be equal. The model of genScript
// is a third witness: the control must match it too, so that a bug that
// hit both runs alike (a frozen process, a set left behind) cannot pass.
//
// Environment: SEMUNDO_CR_SEED=N replays one seed (every failure prints
// its seed), SEMUNDO_CR_TRIALS=N changes the number of trials (200, or 20
// under -short).

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/semundo/semundo/checkpoint"
	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/reader"
	"github.com/semundo/semundo/sysvsem"
	"github.com/semundo/semundo/undo"
)

// restoreMode is how stand-ins get their lists back.
type restoreMode int

const (
	// viaInject: plain stand-ins, then checkpoint.RestoreUndo injects
	// each list from outside (ptrace).
	viaInject restoreMode = iota
	// viaExec: each stand-in is started as `semundo exec --undo FILE --
	// CMD` and holds its list from its first instruction.
	viaExec
)

// TestRoundTrip restores the lists by injection into running stand-ins
// (checkpoint.RestoreUndo).
func TestRoundTrip(t *testing.T) {
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		testenv.Missing(t, "ptrace syscall injection", "package inject supports x86-64 and arm64 only")
	}
	roundTrip(t, viaInject, "")
}

// TestRoundTripExec starts the stand-ins with `semundo exec --undo`, the
// semundo binary built from ./cmd/semundo. It needs the go tool, so it
// cannot run in the kernel-matrix VM.
func TestRoundTripExec(t *testing.T) {
	testenv.RequireRoot(t)
	bin := testenv.BuildGo(t, "github.com/semundo/semundo/cmd/semundo")
	roundTrip(t, viaExec, bin)
}

func roundTrip(t *testing.T, mode restoreMode, semundo string) {
	rd := openReader(t)
	requireNextID(t)
	hostNS, err := ownNS()
	if err != nil {
		t.Fatal(err)
	}
	seeds := trialSeeds(t)
	dir := t.TempDir()
	start := time.Now()
	var failed, diverged int
	for _, seed := range seeds {
		sc := genScript(seed)
		err := trial(t, rd, sc, mode, semundo, dir, hostNS)
		if err == nil {
			continue
		}
		failed++
		if errors.Is(err, errDiverged) {
			diverged++
		}
		t.Errorf("seed %d: %v\nreplay: SEMUNDO_CR_SEED=%d go test -run '^%s$' ./checkpoint/\nscript %v", seed, err, seed, t.Name(), sc)
		if failed == 5 {
			t.Fatalf("stopping after 5 failed trials")
		}
	}
	el := time.Since(start)
	t.Logf("%d trials, %d failed, %d divergences of the final values; %v (%.0f ms a trial)",
		len(seeds), failed, diverged, el.Round(time.Millisecond), float64(el.Milliseconds())/float64(len(seeds)))
}

// trialSeeds returns the seeds to run: SEMUNDO_CR_SEED alone, or
// SEMUNDO_CR_TRIALS (default 200, 20 under -short) consecutive seeds from
// a random base, which is logged.
func trialSeeds(t *testing.T) []uint64 {
	if s := os.Getenv("SEMUNDO_CR_SEED"); s != "" {
		seed, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SEMUNDO_CR_SEED=%q: want an unsigned decimal number", s)
		}
		return []uint64{seed}
	}
	n := 200
	if testing.Short() {
		n = 20
	}
	if s := os.Getenv("SEMUNDO_CR_TRIALS"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			t.Fatalf("SEMUNDO_CR_TRIALS=%q: want a positive number", s)
		}
	}
	base := rand.Uint64()
	t.Logf("seeds %d to %d", base, base+uint64(n)-1)
	out := make([]uint64, n)
	for i := range out {
		out[i] = base + uint64(i)
	}
	return out
}

// errDiverged marks the failure the acceptance criterion is about: the
// restored run's final values differ from the control's.
var errDiverged = errors.New("final values diverge")

// played is a runner after a script, at its quiescent point.
type played struct {
	r       *runner
	workers []int // pids, by worker index
	ids     []int // set ids, by set index
}

// play starts a runner, creates the script's sets, spawns its workers and
// runs its steps.
func play(t *testing.T, sc *script) (*played, error) {
	r, err := newRunner(t)
	if err != nil {
		return nil, err
	}
	p := &played{r: r}
	for _, s := range sc.Sets {
		init := make([]string, len(s.Init))
		for i, v := range s.Init {
			init[i] = strconv.Itoa(v)
		}
		rep, err := r.call("create %d %d %o %s", s.Nsems, s.Key, s.Mode, strings.Join(init, ","))
		if err != nil {
			return p, err
		}
		p.ids = append(p.ids, rep.ID)
	}
	rep, err := r.call("spawn %d", sc.Workers)
	if err != nil {
		return p, err
	}
	p.workers = rep.PIDs
	flags := func(o sop, wait bool) int {
		f := 0
		if o.Undo {
			f |= sysvsem.Undo
		}
		if !wait {
			f |= sysvsem.NoWait // the model says it goes through at once
		}
		return f
	}
	for i, st := range sc.Steps {
		o := st.Op
		if st.Release == nil {
			_, err = r.call("op %d %d %d %d %d", o.W, p.ids[o.Set], o.Num, o.Val, flags(o, false))
		} else {
			rel := *st.Release
			_, err = r.call("opbg %d %d %d %d %d", o.W, p.ids[o.Set], o.Num, o.Val, flags(o, true))
			if err == nil {
				_, err = r.call("op %d %d %d %d %d", rel.W, p.ids[rel.Set], rel.Num, rel.Val, flags(rel, false))
			}
			if err == nil {
				_, err = r.call("wait %d", o.W)
			}
		}
		if err != nil {
			return p, fmt.Errorf("step %d (%v): %w", i, st, err)
		}
	}
	return p, nil
}

// wantSets is what the model says the namespace holds: the sets with the
// given values.
func wantSets(sc *script, ids []int, vals [][]int) []setState {
	var out []setState
	for i, s := range sc.Sets {
		st := setState{ID: ids[i], Key: s.Key, Mode: s.Mode}
		for _, v := range vals[i] {
			st.Values = append(st.Values, uint16(v))
		}
		out = append(out, st)
	}
	return out
}

func equalSets(a, b []setState) bool {
	return slices.EqualFunc(a, b, func(x, y setState) bool {
		return x.ID == y.ID && x.Key == y.Key && x.Mode == y.Mode && x.UID == y.UID && x.GID == y.GID && slices.Equal(x.Values, y.Values)
	})
}

// wantList is worker w's list in the model, with the sets' ids.
func wantList(sc *script, ids []int, w int) undo.List {
	var out undo.List
	for s, a := range sc.Adj[w] {
		if a == nil {
			continue
		}
		e := undo.Entry{Semid: int32(ids[s])}
		for _, v := range a {
			e.Adj = append(e.Adj, int16(v))
		}
		out = append(out, e)
	}
	return out
}

// trial runs one seed: the control run, then the C/R run, and compares.
func trial(t *testing.T, rd *reader.Reader, sc *script, mode restoreMode, semundo, dir string, hostNS uint64) error {
	// Control.
	ctl, err := play(t, sc)
	if ctl != nil {
		defer ctl.r.close()
	}
	if err != nil {
		return fmt.Errorf("control run: %w", err)
	}
	rep, err := ctl.r.call("getall")
	if err != nil {
		return err
	}
	if want := wantSets(sc, ctl.ids, sc.Vals); !equalSets(rep.Sets, want) {
		return fmt.Errorf("control run at the quiescent point: the sets are %+v, the model says %+v", rep.Sets, want)
	}
	if _, err := ctl.r.call("kill"); err != nil {
		return err
	}
	rep, err = ctl.r.call("getall")
	if err != nil {
		return err
	}
	control := rep.Sets
	if want := wantSets(sc, ctl.ids, sc.Final); !equalSets(control, want) {
		return fmt.Errorf("control run: after the workers exited the sets are %+v, the model says %+v", control, want)
	}
	if err := ctl.r.close(); err != nil {
		return fmt.Errorf("control runner: %w", err)
	}

	// C/R: the same script up to the same point, then checkpoint.
	cr, err := play(t, sc)
	if cr != nil {
		defer cr.r.close()
	}
	if err != nil {
		return fmt.Errorf("C/R run: %w", err)
	}
	if !slices.Equal(cr.ids, ctl.ids) {
		return fmt.Errorf("the fresh namespaces gave the sets different ids: %v, then %v", ctl.ids, cr.ids)
	}
	img, err := checkpoint.Capture(rd, checkpoint.CaptureOptions{PIDs: cr.workers, Version: "roundtrip test"})
	if err != nil {
		return fmt.Errorf("Capture: %w", err)
	}
	if err := checkCaptured(sc, cr, img, hostNS); err != nil {
		return err
	}
	path := filepath.Join(dir, "image.json")
	if err := image.WriteFile(path, img); err != nil {
		return err
	}
	// Kill the processes and drop their namespace: the sets go with it.
	if _, err := cr.r.call("kill"); err != nil {
		return err
	}
	if err := cr.r.close(); err != nil {
		return fmt.Errorf("C/R runner: %w", err)
	}

	// Restore in a new namespace.
	rs, err := newRunner(t)
	if err != nil {
		return err
	}
	defer rs.close()
	if _, err := rs.call("restore %s", path); err != nil {
		return fmt.Errorf("RestoreSets: %w", err)
	}
	rep, err = rs.call("getall")
	if err != nil {
		return err
	}
	if want := wantSets(sc, cr.ids, sc.Vals); !equalSets(rep.Sets, want) {
		return fmt.Errorf("after RestoreSets the sets are %+v, the image's were %+v", rep.Sets, want)
	}
	standins := make([]int, sc.Workers)
	switch mode {
	case viaInject:
		rep, err := rs.call("spawn %d", sc.Workers)
		if err != nil {
			return err
		}
		copy(standins, rep.PIDs)
		pidMap := map[int]int{}
		for w, old := range cr.workers {
			if img.ListOf(int32(old)) != nil {
				pidMap[old] = standins[w]
			}
		}
		if err := checkpoint.RestoreUndo(rd, img, checkpoint.UndoOptions{PIDMap: pidMap, AnyNamespace: true}); err != nil {
			return fmt.Errorf("RestoreUndo: %w", err)
		}
	case viaExec:
		var files []string
		for w, old := range cr.workers {
			b, err := undo.Marshal(img.ListOf(int32(old)).Undo())
			if err != nil {
				return err
			}
			file := filepath.Join(dir, fmt.Sprintf("undo-%d", w))
			if err := os.WriteFile(file, b, 0o600); err != nil {
				return err
			}
			files = append(files, file)
		}
		rep, err := rs.call("spawnexec %s %s", semundo, strings.Join(files, " "))
		if err != nil {
			return fmt.Errorf("semundo exec: %w", err)
		}
		copy(standins, rep.PIDs)
	}
	snap, err := rd.Scan()
	if err != nil {
		return err
	}
	for w, pid := range standins {
		want := img.ListOf(int32(cr.workers[w])).Undo()
		if got := snap.ByPID(pid).Undo(); !sameOrZero(got, want) {
			return fmt.Errorf("stand-in %d of worker %d (pid %d at checkpoint) holds %v, the image has %v", pid, w, cr.workers[w], got, want)
		}
	}
	if _, err := rs.call("kill"); err != nil {
		return err
	}
	rep, err = rs.call("getall")
	if err != nil {
		return err
	}
	if !equalSets(rep.Sets, control) {
		return fmt.Errorf("%w: after the stand-ins exited the sets are %+v, the control run's were %+v", errDiverged, rep.Sets, control)
	}
	if err := rs.close(); err != nil {
		return fmt.Errorf("restore runner: %w", err)
	}
	for _, s := range sc.Sets {
		if err := hostKeyFree(s.Key); err != nil {
			return err
		}
	}
	return nil
}

// checkCaptured compares the image with the model and checks that Capture
// left everything as it found it: the workers running, no thread of this
// process in their namespace.
func checkCaptured(sc *script, p *played, img *image.Image, hostNS uint64) error {
	if img.IPCNamespace != p.r.ns {
		return fmt.Errorf("image of IPC namespace %d, the workers are in %d", img.IPCNamespace, p.r.ns)
	}
	var got []setState
	for _, s := range img.Sets {
		got = append(got, setState{ID: int(s.ID), Key: s.Key, Mode: s.Mode & 0o777, UID: s.UID, GID: s.GID, Values: s.Values})
	}
	if want := wantSets(sc, p.ids, sc.Vals); !equalSets(got, want) {
		return fmt.Errorf("image sets %+v, the model says %+v", got, want)
	}
	for w, pid := range p.workers {
		l := img.ListOf(int32(pid))
		if l == nil {
			return fmt.Errorf("image has no list for worker %d (pid %d): a Go process always has one", w, pid)
		}
		if len(l.Processes) != 1 || l.Processes[0].Stopped {
			return fmt.Errorf("worker %d (pid %d): image says %+v, want the process alone and not stopped", w, pid, l.Processes)
		}
		if want := wantList(sc, p.ids, w); !l.Undo().Equal(want) {
			return fmt.Errorf("worker %d (pid %d): image holds %v, the model says %v", w, pid, l.Undo(), want)
		}
		if st, err := procState(pid); err != nil || st == 'T' || st == 't' {
			return fmt.Errorf("worker %d (pid %d) after Capture: state %c (%v), want it running again", w, pid, st, err)
		}
	}
	if len(img.Lists) != sc.Workers || len(img.Warnings) != 0 {
		return fmt.Errorf("image has %d lists (want %d) and warnings %q", len(img.Lists), sc.Workers, img.Warnings)
	}
	return noThreadOutsideNS(hostNS)
}

package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
)

// runUntil runs semundo until done accepts its output, and returns that
// output: a thread the kernel counts as waiting may still be on its way to
// sleep, and semundo reports only sleepers.
func runUntil(t *testing.T, done func(out string) bool, args ...string) string {
	t.Helper()
	var out string
	testenv.Eventually(t, "semundo "+strings.Join(args, " ")+" to show the test's waiters", func() bool {
		out = mustRun(t, args...)
		return done(out)
	})
	return out
}

// mustRun runs semundo and fails the test unless it exits 0.
func mustRun(t *testing.T, args ...string) string {
	t.Helper()
	out, errs, code := semundo(t, nil, args...)
	if code != 0 {
		t.Fatalf("semundo %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	return out
}

func TestWhoShowsWaiters(t *testing.T) {
	testenv.RequireRoot(t)
	s := holder.NewSetVal(t, 2, 0)
	h := holder.StartWaiter(t, fmt.Sprintf("hold:%d:0:1", s))
	zero := holder.StartWaiter(t, fmt.Sprintf("wait:%d:0:0", s))
	dec := holder.StartWaiter(t, "timed:3600000", fmt.Sprintf("wait:%d:1:-2,0:-1", s))
	holder.BlockedOn(t, s, 0, 1, true)
	holder.BlockedOn(t, s, 1, 1, false)

	var who struct {
		Holders []struct {
			PID int     `json:"pid"`
			Adj []int16 `json:"adj"`
		} `json:"holders"`
		Waiters []struct {
			PID, TID int
			Comm     string
			Ops      []struct{ Sem, Op, Flags int }
			Timed    bool
		} `json:"waiters"`
	}
	runUntil(t, func(out string) bool {
		if err := json.Unmarshal([]byte(out), &who); err != nil {
			t.Fatalf("who --json: %v:\n%s", err, out)
		}
		return len(who.Waiters) >= 2
	}, "who", "--json", fmt.Sprint(s))
	if len(who.Holders) != 1 || who.Holders[0].PID != h.PID || !slices.Equal(who.Holders[0].Adj, []int16{-1, 0}) {
		t.Errorf("holders %+v, want pid %d with adj [-1 0]", who.Holders, h.PID)
	}
	if len(who.Waiters) != 2 {
		t.Fatalf("waiters %+v, want 2", who.Waiters)
	}
	for _, w := range who.Waiters {
		switch w.PID {
		case zero.PID:
			if w.Timed || len(w.Ops) != 1 || w.Ops[0].Sem != 0 || w.Ops[0].Op != 0 || w.Comm != "semwait" || w.TID == 0 {
				t.Errorf("waiter for zero: %+v", w)
			}
		case dec.PID:
			if !w.Timed || len(w.Ops) != 2 || w.Ops[0].Sem != 1 || w.Ops[0].Op != -2 || w.Ops[1].Op != -1 {
				t.Errorf("timed waiter: %+v", w)
			}
		default:
			t.Errorf("waiter of pid %d, not one of the test's", w.PID)
		}
	}

	out := mustRun(t, "who", fmt.Sprint(s))
	for _, want := range []string{"0:-1", "WAITER PID", fmt.Sprintf("%d ", zero.PID), "1:-2* 0:-1"} {
		if !strings.Contains(out, want) {
			t.Errorf("who %d lacks %q:\n%s", s, want, out)
		}
	}
}

func TestWaitsCommand(t *testing.T) {
	testenv.RequireRoot(t)
	s := holder.NewSetVal(t, 1, 0)
	p := holder.StartWaiter(t, "threads:3", fmt.Sprintf("wait:%d:0:-1", s))
	holder.BlockedOn(t, s, 0, 3, false)
	var ws []struct {
		PID, TID int
		IPCNS    uint32
		Semid    int32
		Ops      []struct{ Sem, Op, Flags int }
	}
	tids := map[int]bool{}
	runUntil(t, func(out string) bool {
		if err := json.Unmarshal([]byte(out), &ws); err != nil {
			t.Fatalf("waits --json: %v", err)
		}
		clear(tids)
		for _, w := range ws {
			if w.PID == p.PID {
				if w.Semid != int32(s) || w.IPCNS == 0 || len(w.Ops) != 1 || w.Ops[0].Op != -1 {
					t.Errorf("waiter %+v", w)
				}
				tids[w.TID] = true
			}
		}
		return len(tids) >= 3
	}, "waits", "--json")
	if len(tids) != 3 {
		t.Errorf("pid %d has %d waiting threads in waits --json, want 3", p.PID, len(tids))
	}
	out := runUntil(t, func(out string) bool { return strings.Count(out, fmt.Sprintf("%d ", p.PID)) >= 3 }, "waits")
	if n := strings.Count(out, fmt.Sprintf("%d ", p.PID)); n < 3 || !strings.Contains(out, "0:-1") {
		t.Errorf("waits table shows pid %d %d times:\n%s", p.PID, n, out)
	}
}

// deadlockJSON runs deadlock --json until it shows wantEdges dependencies
// among the pids given, and returns the cycles that involve only those
// pids (the machine may have others), as pid lists.
func deadlockJSON(t *testing.T, wantEdges int, pids ...int) (cycles [][]int) {
	t.Helper()
	testenv.Eventually(t, fmt.Sprintf("deadlock --json to show %d dependencies among pids %v", wantEdges, pids), func() bool {
		var edges int
		cycles, edges = deadlockOnce(t, pids...)
		return edges >= wantEdges
	})
	return cycles
}

// deadlockOnce runs deadlock --json once; see deadlockJSON.
func deadlockOnce(t *testing.T, pids ...int) (cycles [][]int, edges int) {
	t.Helper()
	var g struct {
		Cycles []struct {
			Processes []struct {
				PID    int `json:"pid"`
				HeldBy int `json:"held_by"`
				Semid  int `json:"semid"`
			} `json:"processes"`
		} `json:"cycles"`
		Edges []struct{ Waiter, Holder int } `json:"edges"`
		Note  string                         `json:"note"`
	}
	out := mustRun(t, "deadlock", "--json")
	if err := json.Unmarshal([]byte(out), &g); err != nil {
		t.Fatalf("deadlock --json: %v", err)
	}
	if !strings.Contains(g.Note, "without SEM_UNDO") {
		t.Errorf("note %q does not say what the graph cannot see", g.Note)
	}
	ours := func(pid int) bool { return slices.Contains(pids, pid) }
	for _, c := range g.Cycles {
		var ps []int
		mine := true
		for i, p := range c.Processes {
			ps = append(ps, p.PID)
			mine = mine && ours(p.PID)
			if next := c.Processes[(i+1)%len(c.Processes)].PID; p.HeldBy != next {
				t.Errorf("cycle %+v: pid %d is held by %d, not by the next, %d", c, p.PID, p.HeldBy, next)
			}
		}
		if mine {
			cycles = append(cycles, ps)
		}
	}
	for _, e := range g.Edges {
		if ours(e.Waiter) && ours(e.Holder) {
			edges++
		}
	}
	return cycles, edges
}

func TestDeadlockTwoProcesses(t *testing.T) {
	testenv.RequireRoot(t)
	s1, s2 := holder.NewSetVal(t, 1, 1), holder.NewSetVal(t, 1, 1)
	a := holder.StartWaiter(t, fmt.Sprintf("hold:%d:0:-1", s1), "sync", fmt.Sprintf("wait:%d:0:-1", s2))
	b := holder.StartWaiter(t, fmt.Sprintf("hold:%d:0:-1", s2), fmt.Sprintf("wait:%d:0:-1", s1))
	a.Continue(t)
	holder.BlockedOn(t, s1, 0, 1, false)
	holder.BlockedOn(t, s2, 0, 1, false)
	cycles := deadlockJSON(t, 2, a.PID, b.PID)
	want := []int{min(a.PID, b.PID), max(a.PID, b.PID)}
	if len(cycles) != 1 || !slices.Equal(cycles[0], want) {
		t.Fatalf("cycles among pids %d and %d: %v, want [%v]", a.PID, b.PID, cycles, want)
	}
	out := mustRun(t, "deadlock")
	if !strings.Contains(out, fmt.Sprintf("pid %d (semwait) waits on set %d semaphore 0, held by pid %d", a.PID, s2, b.PID)) ||
		!strings.Contains(out, "without SEM_UNDO") {
		t.Errorf("deadlock does not describe the cycle:\n%s", out)
	}
	dot := mustRun(t, "deadlock", "--dot")
	for _, want := range []string{"digraph semundo {", fmt.Sprintf(`"pid %d" ->`, a.PID), fmt.Sprintf(`/%d" -> "pid %d" [label="holds 0:+1", color=red]`, s2, b.PID)} {
		if !strings.Contains(dot, want) {
			t.Errorf("deadlock --dot lacks %q:\n%s", want, dot)
		}
	}
}

func TestDeadlockThreeProcesses(t *testing.T) {
	testenv.RequireRoot(t)
	s := []int{holder.NewSetVal(t, 1, 1), holder.NewSetVal(t, 1, 1), holder.NewSetVal(t, 1, 1)}
	var ps []*holder.Waiter
	for i := range 3 {
		ps = append(ps, holder.StartWaiter(t, fmt.Sprintf("hold:%d:0:-1", s[i]), "sync", fmt.Sprintf("wait:%d:0:-1", s[(i+1)%3])))
	}
	for _, p := range ps {
		p.Continue(t)
	}
	for _, id := range s {
		holder.BlockedOn(t, id, 0, 1, false)
	}
	cycles := deadlockJSON(t, 3, ps[0].PID, ps[1].PID, ps[2].PID)
	if len(cycles) != 1 || len(cycles[0]) != 3 {
		t.Fatalf("cycles among the three: %v, want one of three", cycles)
	}
	// The cycle starts at its lowest pid and follows the waits.
	next := map[int]int{ps[0].PID: ps[1].PID, ps[1].PID: ps[2].PID, ps[2].PID: ps[0].PID}
	c := cycles[0]
	for i := range c {
		if next[c[i]] != c[(i+1)%3] || c[0] > c[i] {
			t.Fatalf("cycle %v does not follow the waits %v from its lowest pid", c, next)
		}
	}
}

// A queue of waiters behind one holder depends on it, and is no deadlock.
func TestDeadlockQueueIsNone(t *testing.T) {
	testenv.RequireRoot(t)
	s := holder.NewSetVal(t, 1, 1)
	h := holder.StartWaiter(t, fmt.Sprintf("hold:%d:0:-1", s))
	pids := []int{h.PID}
	for range 4 {
		pids = append(pids, holder.StartWaiter(t, fmt.Sprintf("wait:%d:0:-1", s)).PID)
	}
	holder.BlockedOn(t, s, 0, 4, false)
	if cycles := deadlockJSON(t, 4, pids...); len(cycles) != 0 {
		t.Fatalf("queue behind pid %d: cycles %v, want none", h.PID, cycles)
	}
}

func TestWaitsUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"waits", "1"}, "takes no arguments"},
		{[]string{"deadlock", "--json", "--dot"}, "exclude each other"},
		{[]string{"deadlock", "x"}, "takes no arguments"},
	} {
		out, errs, code := semundo(t, nil, c.args...)
		if code != exitUsage || out != "" || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and one line with %q", c.args, code, out, errs, c.want)
		}
	}
}

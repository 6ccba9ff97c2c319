package waitfor

import (
	"slices"
	"strings"
	"testing"

	"github.com/semundo/semundo/reader"
	"github.com/semundo/semundo/sysvsem"
)

const ns = 4026531839

// hold is a list of one process holding adj on set semid.
func hold(pid int, semid int32, adj ...int16) reader.List {
	return reader.List{IPCNS: ns, Processes: []reader.Process{{PID: pid, Comm: "p", TIDs: []int{pid}}},
		Entries: []reader.Entry{{Semid: semid, Adj: adj}}}
}

// wait is pid blocked on semid with ops given as num, op pairs.
func wait(pid int, semid int32, numOp ...int) reader.Waiter {
	w := reader.Waiter{PID: pid, TID: pid, Comm: "p", IPCNS: ns, Semid: semid, Blocking: -1}
	for i := 0; i < len(numOp); i += 2 {
		w.Ops = append(w.Ops, sysvsem.Sembuf{Num: uint16(numOp[i]), Op: int16(numOp[i+1])})
	}
	w.NOps = len(w.Ops)
	return w
}

func cyclePIDs(cs []Cycle) [][]int {
	var out [][]int
	for _, c := range cs {
		out = append(out, c.PIDs())
	}
	return out
}

func TestTwoProcessesTwoSets(t *testing.T) {
	g := Build(&reader.Snapshot{
		Lists:   []reader.List{hold(10, 1, 1), hold(20, 2, 1)},
		Waiters: []reader.Waiter{wait(10, 2, 0, -1), wait(20, 1, 0, -1)},
	})
	got := cyclePIDs(g.Cycles())
	if !slices.EqualFunc(got, [][]int{{10, 20}}, slices.Equal) {
		t.Fatalf("cycles %v, want [[10 20]]", got)
	}
	d := g.Cycles()[0].Describe(g)
	if !strings.Contains(d, "pid 10 (p) waits on set 2 semaphore 0, held by pid 20") {
		t.Errorf("description %q", d)
	}
}

func TestThreeInACycle(t *testing.T) {
	g := Build(&reader.Snapshot{
		Lists:   []reader.List{hold(30, 1, 1), hold(10, 2, 0, 2), hold(20, 3, 1)},
		Waiters: []reader.Waiter{wait(30, 2, 1, -1), wait(10, 3, 0, -1), wait(20, 1, 0, -1), wait(40, 1, 0, -1)},
	})
	got := cyclePIDs(g.Cycles())
	if !slices.EqualFunc(got, [][]int{{10, 20, 30}}, slices.Equal) {
		t.Fatalf("cycles %v, want [[10 20 30]]", got)
	}
	if len(g.Edges) != 4 {
		t.Errorf("edges %+v, want 4 (pid 40 waits for 30 too)", g.Edges)
	}
}

// A queue behind one holder is waiting, not a deadlock.
func TestQueueIsNoCycle(t *testing.T) {
	snap := &reader.Snapshot{Lists: []reader.List{hold(1, 7, 1)}}
	for pid := 2; pid < 10; pid++ {
		snap.Waiters = append(snap.Waiters, wait(pid, 7, 0, -1))
	}
	g := Build(snap)
	if c := g.Cycles(); len(c) != 0 || len(g.Edges) != 8 {
		t.Fatalf("cycles %v, edges %d; want none and 8", cyclePIDs(c), len(g.Edges))
	}
}

// The direction rule: a holder whose exit would raise a semaphore frees a
// waiter to decrement; one whose exit would lower it frees a waiter for
// zero; the other two combinations free nobody.
func TestDirection(t *testing.T) {
	for _, c := range []struct {
		adj, op int
		edge    bool
	}{{1, -1, true}, {-1, 0, true}, {-1, -1, false}, {1, 0, false}, {1, 1, false}} {
		g := Build(&reader.Snapshot{Lists: []reader.List{hold(1, 5, int16(c.adj))},
			Waiters: []reader.Waiter{wait(2, 5, 0, c.op)}})
		if got := len(g.Edges) == 1; got != c.edge {
			t.Errorf("adj %+d, op %+d: edge %v, want %v", c.adj, c.op, got, c.edge)
		}
	}
}

// Only the semaphores waited on count, in the waiter's own namespace, and a
// process does not wait for itself.
func TestNoFalseEdges(t *testing.T) {
	other := hold(3, 5, 1, 1)
	other.IPCNS = ns + 1
	g := Build(&reader.Snapshot{
		Lists:   []reader.List{hold(1, 5, 0, 1), hold(2, 5, 1, 0), other},
		Waiters: []reader.Waiter{wait(2, 5, 0, -1)},
	})
	if len(g.Edges) != 0 {
		t.Fatalf("edges %+v, want none", g.Edges)
	}
	g = Build(&reader.Snapshot{Lists: []reader.List{hold(1, 5, 1, 1)}, Waiters: []reader.Waiter{wait(1, 5, 0, -1)}})
	if len(g.Edges) != 0 {
		t.Fatalf("self edge %+v", g.Edges)
	}
}

func TestDot(t *testing.T) {
	g := Build(&reader.Snapshot{
		Lists:   []reader.List{hold(10, 1, 1), hold(20, 2, 1), hold(30, 3, 1)},
		Waiters: []reader.Waiter{wait(10, 2, 0, -1), wait(20, 1, 0, -1), wait(40, 3, 0, -1)},
	})
	var b strings.Builder
	if err := g.WriteDot(&b); err != nil {
		t.Fatal(err)
	}
	dot := b.String()
	for _, want := range []string{
		"digraph semundo {", "without SEM_UNDO",
		`"pid 10" [label="pid 10\np"]`, `"set 4026531839/1" [shape=box`,
		`"set 4026531839/1" -> "pid 10" [label="holds 0:+1", color=red]`,
		`"pid 20" -> "set 4026531839/1" [label="waits 0:-1 (tid 20)", style=dashed, color=red]`,
		`"set 4026531839/3" -> "pid 30" [label="holds 0:+1"]`,
		`"pid 40" -> "set 4026531839/3" [label="waits 0:-1 (tid 40)", style=dashed]`,
	} {
		if !strings.Contains(dot, want) {
			t.Errorf("dot lacks %q:\n%s", want, dot)
		}
	}
	if !strings.HasSuffix(dot, "}\n") {
		t.Errorf("dot does not end the graph:\n%s", dot)
	}
}

func TestCyclesBounded(t *testing.T) {
	// Every pair of n processes waits for each other on its own set:
	// far more than MaxCycles cycles.
	const n = 12
	var snap reader.Snapshot
	id := int32(0)
	for a := 1; a <= n; a++ {
		for b := 1; b <= n; b++ {
			if a != b {
				id++
				snap.Lists = append(snap.Lists, hold(b, id, 1))
				snap.Waiters = append(snap.Waiters, wait(a, id, 0, -1))
			}
		}
	}
	if c := Build(&snap).Cycles(); len(c) != MaxCycles {
		t.Fatalf("%d cycles, want the bound %d", len(c), MaxCycles)
	}
}

// Package waitfor builds the wait-for graph of System V semaphores from one
// reader snapshot, and finds its cycles: the deadlocks among processes that
// hold semaphores through SEM_UNDO and wait in semop for others'.
//
// A waiter depends on a holder when the holder's exit would move a
// semaphore the waiter waits on in the direction the waiter needs: an
// adjustment > 0 on a semaphore it waits to decrement, < 0 on one it waits
// to see zero. The graph sees holders only through their undo lists: a
// process that took a semaphore without SEM_UNDO holds it invisibly, and no
// edge or cycle through it can be shown.
package waitfor

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/semundo/semundo/reader"
)

// Blindness says plainly what the graph cannot see; every output carries it.
const Blindness = "semundo sees holders only through SEM_UNDO undo lists: a process that took a semaphore without SEM_UNDO holds it invisibly, and no dependency or cycle through it is shown"

// Set names a semaphore set: its id is only meaningful in its IPC namespace.
type Set struct {
	IPCNS uint32
	Semid int32
}

// Process is a process in the graph.
type Process struct {
	PID  int
	Comm string
}

// Hold is one process's undo adjustments on one set, nonzero ones only.
type Hold struct {
	PID int
	Set Set
	// Adj maps semaphore numbers to the adjustment the holder's exit
	// applies.
	Adj map[uint16]int16
}

// Edge says that Waiter waits for Holder: Holder's exit would move
// semaphores Sems of Set the way Waiter needs.
type Edge struct {
	Waiter, Holder int
	Set            Set
	Sems           []uint16
}

// Graph is the wait-for graph of one snapshot.
type Graph struct {
	// Processes are every holder and waiter, sorted by pid.
	Processes []Process
	// Holds are the nonzero adjustments, by pid then set.
	Holds []Hold
	// Waiters are the blocked calls, as the snapshot has them.
	Waiters []reader.Waiter
	// Edges are the dependencies, sorted by waiter, holder and set.
	Edges []Edge
}

// Build makes the graph of a snapshot. A process that waits on what it
// holds itself gets no edge: its undo list is shared by all its threads,
// and another of them may well release what one waits for.
func Build(snap *reader.Snapshot) *Graph {
	g := &Graph{Waiters: snap.Waiters}
	procs := map[int]string{}
	holders := map[Set][]Hold{}
	for _, l := range snap.Lists {
		for _, e := range l.Entries {
			adj := map[uint16]int16{}
			for i, v := range e.Adj {
				if v != 0 {
					adj[uint16(i)] = v
				}
			}
			if len(adj) == 0 {
				continue
			}
			set := Set{IPCNS: l.IPCNS, Semid: e.Semid}
			for _, p := range l.Processes {
				h := Hold{PID: p.PID, Set: set, Adj: adj}
				g.Holds = append(g.Holds, h)
				holders[set] = append(holders[set], h)
				procs[p.PID] = p.Comm
			}
		}
	}
	edges := map[[2]int]map[Set][]uint16{}
	for _, w := range snap.Waiters {
		if _, ok := procs[w.PID]; !ok {
			procs[w.PID] = w.Comm
		}
		set := Set{IPCNS: w.IPCNS, Semid: w.Semid}
		for _, h := range holders[set] {
			if h.PID == w.PID {
				continue
			}
			for _, op := range w.Ops {
				adj := h.Adj[op.Num]
				if (op.Op < 0 && adj > 0) || (op.Op == 0 && adj < 0) {
					k := [2]int{w.PID, h.PID}
					if edges[k] == nil {
						edges[k] = map[Set][]uint16{}
					}
					if !slices.Contains(edges[k][set], op.Num) {
						edges[k][set] = append(edges[k][set], op.Num)
					}
				}
			}
		}
	}
	for k, sets := range edges {
		for set, sems := range sets {
			slices.Sort(sems)
			g.Edges = append(g.Edges, Edge{Waiter: k[0], Holder: k[1], Set: set, Sems: sems})
		}
	}
	slices.SortFunc(g.Edges, func(a, b Edge) int {
		return cmp.Or(cmp.Compare(a.Waiter, b.Waiter), cmp.Compare(a.Holder, b.Holder),
			cmp.Compare(a.Set.IPCNS, b.Set.IPCNS), cmp.Compare(a.Set.Semid, b.Set.Semid))
	})
	slices.SortFunc(g.Holds, func(a, b Hold) int {
		return cmp.Or(cmp.Compare(a.PID, b.PID), cmp.Compare(a.Set.IPCNS, b.Set.IPCNS), cmp.Compare(a.Set.Semid, b.Set.Semid))
	})
	for pid, comm := range procs {
		g.Processes = append(g.Processes, Process{PID: pid, Comm: comm})
	}
	slices.SortFunc(g.Processes, func(a, b Process) int { return a.PID - b.PID })
	return g
}

// Comm returns the command name of pid in the graph.
func (g *Graph) Comm(pid int) string {
	i, ok := slices.BinarySearchFunc(g.Processes, pid, func(p Process, pid int) int { return p.PID - pid })
	if !ok {
		return "?"
	}
	return g.Processes[i].Comm
}

// Cycle is one deadlock: each edge's holder is the next edge's waiter, and
// the last edge's holder is the first edge's waiter.
type Cycle []Edge

// PIDs returns the cycle's processes in order.
func (c Cycle) PIDs() []int {
	out := make([]int, len(c))
	for i, e := range c {
		out[i] = e.Waiter
	}
	return out
}

// MaxCycles bounds how many cycles Cycles returns: a dense graph has
// exponentially many, and an operator needs the first few to act.
const MaxCycles = 1000

// Cycles returns the graph's elementary cycles (at most MaxCycles), each
// starting at its lowest pid, sorted. Two processes waiting for each other
// on several sets make one cycle per combination of sets.
func (g *Graph) Cycles() []Cycle {
	out := map[int][]Edge{}
	for _, e := range g.Edges {
		out[e.Waiter] = append(out[e.Waiter], e)
	}
	var cycles []Cycle
	var path []Edge
	onPath := map[int]bool{}
	var visit func(start, pid int)
	visit = func(start, pid int) {
		for _, e := range out[pid] {
			if len(cycles) >= MaxCycles {
				return
			}
			switch {
			case e.Holder == start:
				c := append(Cycle(nil), path...)
				cycles = append(cycles, append(c, e))
			case e.Holder > start && !onPath[e.Holder]:
				onPath[e.Holder] = true
				path = append(path, e)
				visit(start, e.Holder)
				path = path[:len(path)-1]
				onPath[e.Holder] = false
			}
		}
	}
	for _, p := range g.Processes {
		onPath[p.PID] = true
		visit(p.PID, p.PID)
		onPath[p.PID] = false
	}
	return cycles
}

// Describe describes the cycle on one line: who waits on what, held by whom.
func (c Cycle) Describe(g *Graph) string {
	var parts []string
	for _, e := range c {
		parts = append(parts, fmt.Sprintf("pid %d (%s) waits on set %d semaphore %s, held by pid %d (%s)",
			e.Waiter, g.Comm(e.Waiter), e.Set.Semid, joinSems(e.Sems), e.Holder, g.Comm(e.Holder)))
	}
	return strings.Join(parts, "; ")
}

func joinSems(sems []uint16) string {
	s := make([]string, len(sems))
	for i, n := range sems {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, ",")
}

// WriteDot writes the whole graph for Graphviz: processes (ellipses) and
// sets (boxes) as nodes, a "holds" edge from a set to each holder and a
// "waits" edge from each waiter to its set; edges on a cycle are red.
func (g *Graph) WriteDot(w io.Writer) error {
	onCycle := map[[2]int]bool{}
	for _, c := range g.Cycles() {
		for _, e := range c {
			onCycle[[2]int{e.Waiter, e.Holder}] = true
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "// %s.\ndigraph semundo {\n\trankdir=LR;\n", Blindness)
	setNode := func(s Set) string { return fmt.Sprintf("\"set %d/%d\"", s.IPCNS, s.Semid) }
	sets := map[Set]bool{}
	for _, p := range g.Processes {
		fmt.Fprintf(&b, "\t\"pid %d\" [label=\"pid %d\\n%s\"];\n", p.PID, p.PID, dotEscape(p.Comm))
	}
	for _, h := range g.Holds {
		sets[h.Set] = true
	}
	for _, wt := range g.Waiters {
		sets[Set{wt.IPCNS, wt.Semid}] = true
	}
	var setList []Set
	for s := range sets {
		setList = append(setList, s)
	}
	slices.SortFunc(setList, func(a, b Set) int {
		return cmp.Or(cmp.Compare(a.IPCNS, b.IPCNS), cmp.Compare(a.Semid, b.Semid))
	})
	for _, s := range setList {
		fmt.Fprintf(&b, "\t%s [shape=box, label=\"set %d\\nipcns %d\"];\n", setNode(s), s.Semid, s.IPCNS)
	}
	red := func(bad bool) string {
		if bad {
			return ", color=red"
		}
		return ""
	}
	for _, h := range g.Holds {
		nums := make([]uint16, 0, len(h.Adj))
		for n := range h.Adj {
			nums = append(nums, n)
		}
		slices.Sort(nums)
		var adj []string
		for _, n := range nums {
			adj = append(adj, fmt.Sprintf("%d:%+d", n, h.Adj[n]))
		}
		bad := false
		for _, e := range g.Edges {
			bad = bad || (e.Holder == h.PID && e.Set == h.Set && onCycle[[2]int{e.Waiter, e.Holder}])
		}
		fmt.Fprintf(&b, "\t%s -> \"pid %d\" [label=\"holds %s\"%s];\n", setNode(h.Set), h.PID, strings.Join(adj, " "), red(bad))
	}
	for _, wt := range g.Waiters {
		s := Set{wt.IPCNS, wt.Semid}
		var ops []string
		for _, o := range wt.Ops {
			ops = append(ops, fmt.Sprintf("%d:%+d", o.Num, o.Op))
		}
		bad := false
		for _, e := range g.Edges {
			bad = bad || (e.Waiter == wt.PID && e.Set == s && onCycle[[2]int{e.Waiter, e.Holder}])
		}
		fmt.Fprintf(&b, "\t\"pid %d\" -> %s [label=\"waits %s (tid %d)\", style=dashed%s];\n", wt.PID, setNode(s), strings.Join(ops, " "), wt.TID, red(bad))
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// dotEscape quotes a command name for a Graphviz label.
func dotEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s)
}

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/semundo/semundo/internal/waitfor"
	"github.com/semundo/semundo/reader"
	"github.com/semundo/semundo/sysvsem"
)

var waitsCmd = &spec{
	name:   "waits",
	about:  "list every task blocked in semop or semtimedop, a row per (task, set)",
	define: defineWaits,
}

func defineWaits(fs *flag.FlagSet, c *cli) func([]string) error {
	asJSON := fs.Bool("json", false, "print every field as JSON")
	return func(pos []string) error {
		if len(pos) > 0 {
			return usagef("waits takes no arguments, got %q", pos[0])
		}
		snap, err := scanWaiters()
		if err != nil {
			return err
		}
		if *asJSON {
			out := make([]jsonWaiter, 0, len(snap.Waiters))
			for _, w := range snap.Waiters {
				out = append(out, toJSONWaiter(w, true))
			}
			return encodeJSON(c.stdout, out)
		}
		rows := [][]string{{"PID", "TID", "COMMAND", "IPCNS", "SEMID", "TIMED", "OPS (SEM:OP[:FLAGS])"}}
		for _, w := range snap.Waiters {
			rows = append(rows, []string{strconv.Itoa(w.PID), strconv.Itoa(w.TID), w.Comm,
				strconv.FormatUint(uint64(w.IPCNS), 10), strconv.Itoa(int(w.Semid)), yesNo(w.Timed), opsText(w)})
		}
		if len(snap.Waiters) == 0 {
			_, err := fmt.Fprintln(c.stdout, "no task is blocked in semop or semtimedop")
			return err
		}
		return writeColumns(c.stdout, rows)
	}
}

// scanWaiters scans, and fails when the kernel does not show waiters: the
// commands that answer only about waiters have nothing to say then.
func scanWaiters() (*reader.Snapshot, error) {
	snap, err := scan()
	if err != nil {
		return nil, err
	}
	switch {
	case errors.Is(snap.WaitersErr, reader.ErrNotSupported):
		return nil, fmt.Errorf("cannot list blocked semop callers on this kernel (upgrade to Linux 5.17 or later): %w", snap.WaitersErr)
	case snap.WaitersErr != nil:
		return nil, snap.WaitersErr
	}
	return snap, nil
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// opsText shows a call's operations as SEM:OP with their flags, the
// blocking one marked with '*'.
func opsText(w reader.Waiter) string {
	s := make([]string, len(w.Ops))
	for i, o := range w.Ops {
		s[i] = fmt.Sprintf("%d:%+d", o.Num, o.Op)
		if f := flagNames(o.Flg); f != "" {
			s[i] += ":" + f
		}
		if i == w.Blocking {
			s[i] += "*"
		}
	}
	if w.NOps > len(w.Ops) {
		s = append(s, fmt.Sprintf("...(+%d)", w.NOps-len(w.Ops)))
	}
	return strings.Join(s, " ")
}

// flagNames names an operation's flags.
func flagNames(flg int16) string {
	var s []string
	if flg&sysvsem.Undo != 0 {
		s = append(s, "undo")
	}
	if flg&sysvsem.NoWait != 0 {
		s = append(s, "nowait")
	}
	if rest := flg &^ (sysvsem.Undo | sysvsem.NoWait); rest != 0 {
		s = append(s, fmt.Sprintf("0x%x", uint16(rest)))
	}
	return strings.Join(s, ",")
}

// The JSON schema of waiters (who --json, waits --json), documented in the
// README.
type jsonWaiter struct {
	PID      int      `json:"pid"`
	TID      int      `json:"tid"`
	Comm     string   `json:"comm"`
	IPCNS    uint32   `json:"ipcns,omitempty"`
	Semid    *int32   `json:"semid,omitempty"`
	Ops      []jsonOp `json:"ops"`
	NOps     int      `json:"nops"`
	Blocking int      `json:"blocking"`
	Timed    bool     `json:"timed"`
}

type jsonOp struct {
	Sem   uint16 `json:"sem"`
	Op    int16  `json:"op"`
	Flags int16  `json:"flags"`
}

// toJSONWaiter converts a waiter; withSet adds its namespace and set, which
// who leaves out (it asks about one set).
func toJSONWaiter(w reader.Waiter, withSet bool) jsonWaiter {
	j := jsonWaiter{PID: w.PID, TID: w.TID, Comm: w.Comm, NOps: w.NOps, Blocking: w.Blocking, Timed: w.Timed, Ops: []jsonOp{}}
	if withSet {
		semid := w.Semid
		j.IPCNS, j.Semid = w.IPCNS, &semid
	}
	for _, o := range w.Ops {
		j.Ops = append(j.Ops, jsonOp{Sem: o.Num, Op: o.Op, Flags: o.Flg})
	}
	return j
}

// encodeJSON writes v indented, with a final newline.
func encodeJSON(stdout io.Writer, v any) error {
	w := bufio.NewWriter(stdout)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	return w.Flush()
}

var deadlockCmd = &spec{
	name: "deadlock",
	about: "find deadlocks: cycles in the wait-for graph of semop waiters and SEM_UNDO holders\n" +
		"(a semaphore taken without SEM_UNDO is held invisibly)",
	more: "A waiter depends on a holder when the holder's exit would move a semaphore\n" +
		"the waiter waits on in the direction it needs: an adjustment > 0 on one it\n" +
		"waits to decrement, < 0 on one it waits to see zero. Every cycle is printed.\n" +
		waitfor.Blindness + ".\n",
	define: defineDeadlock,
}

func defineDeadlock(fs *flag.FlagSet, c *cli) func([]string) error {
	asJSON := fs.Bool("json", false, "print the cycles and the graph's edges as JSON")
	dot := fs.Bool("dot", false, "print the whole wait-for graph for Graphviz (dot -Tsvg)")
	return func(pos []string) error {
		if len(pos) > 0 {
			return usagef("deadlock takes no arguments, got %q", pos[0])
		}
		if *asJSON && *dot {
			return usagef("--json and --dot exclude each other: choose one")
		}
		snap, err := scanWaiters()
		if err != nil {
			return err
		}
		g := waitfor.Build(snap)
		cycles := g.Cycles()
		switch {
		case *dot:
			return g.WriteDot(c.stdout)
		case *asJSON:
			return encodeJSON(c.stdout, toJSONGraph(g, cycles))
		}
		if len(cycles) == 0 {
			fmt.Fprintf(c.stdout, "no deadlock: %d blocked tasks, %d dependencies on SEM_UNDO holders, no cycle\n", len(snap.Waiters), len(g.Edges))
		}
		for i, cy := range cycles {
			fmt.Fprintf(c.stdout, "deadlock %d: %s\n", i+1, cy.Describe(g))
		}
		if len(cycles) == waitfor.MaxCycles {
			fmt.Fprintf(c.stdout, "(stopped at %d cycles)\n", waitfor.MaxCycles)
		}
		_, err = fmt.Fprintf(c.stdout, "note: %s.\n", waitfor.Blindness)
		return err
	}
}

// The JSON schema of deadlock --json, documented in the README.
type jsonGraph struct {
	Cycles []jsonCycle `json:"cycles"`
	Edges  []jsonEdge  `json:"edges"`
	Note   string      `json:"note"`
}

type jsonCycle struct {
	Processes []jsonCycleStep `json:"processes"`
}

type jsonCycleStep struct {
	PID    int    `json:"pid"`
	Comm   string `json:"comm"`
	IPCNS  uint32 `json:"ipcns"`
	Semid  int32  `json:"semid"`
	Sems   []int  `json:"sems"`
	HeldBy int    `json:"held_by"`
}

type jsonEdge struct {
	Waiter int    `json:"waiter"`
	Holder int    `json:"holder"`
	IPCNS  uint32 `json:"ipcns"`
	Semid  int32  `json:"semid"`
	Sems   []int  `json:"sems"`
}

func toJSONGraph(g *waitfor.Graph, cycles []waitfor.Cycle) jsonGraph {
	out := jsonGraph{Cycles: []jsonCycle{}, Edges: []jsonEdge{}, Note: waitfor.Blindness}
	sems := func(s []uint16) []int {
		out := make([]int, len(s))
		for i, n := range s {
			out[i] = int(n)
		}
		return out
	}
	for _, cy := range cycles {
		var jc jsonCycle
		for _, e := range cy {
			jc.Processes = append(jc.Processes, jsonCycleStep{PID: e.Waiter, Comm: g.Comm(e.Waiter),
				IPCNS: e.Set.IPCNS, Semid: e.Set.Semid, Sems: sems(e.Sems), HeldBy: e.Holder})
		}
		out.Cycles = append(out.Cycles, jc)
	}
	for _, e := range g.Edges {
		out.Edges = append(out.Edges, jsonEdge{Waiter: e.Waiter, Holder: e.Holder, IPCNS: e.Set.IPCNS, Semid: e.Set.Semid, Sems: sems(e.Sems)})
	}
	return out
}

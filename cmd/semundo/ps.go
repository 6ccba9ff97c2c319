package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/semundo/semundo/reader"
)

// shortAdj is how many adjustments a ps row shows before it elides.
const shortAdj = 8

var psCmd = &spec{
	name:   "ps",
	about:  "list every process holding undo adjustments, a row per (list, set)",
	define: definePs,
}

func definePs(fs *flag.FlagSet, c *cli) func([]string) error {
	asJSON := fs.Bool("json", false, "print every value as JSON")
	all := fs.Bool("all", false, "include lists with no entries (every multi-threaded process has one)")
	return func(pos []string) error {
		if len(pos) > 0 {
			return usagef("ps takes no arguments, got %q", pos[0])
		}
		return runPs(c.stdout, *asJSON, *all)
	}
}

func runPs(stdout io.Writer, asJSON, all bool) error {
	snap, err := scan()
	if err != nil {
		return err
	}
	var lists []reader.List
	for _, l := range snap.Lists {
		if all || len(l.Entries) > 0 {
			lists = append(lists, l)
		}
	}
	if asJSON {
		return writeJSON(stdout, lists)
	}
	return writeTable(stdout, lists)
}

func pidsOf(l *reader.List) string {
	s := make([]string, len(l.Processes))
	for i, p := range l.Processes {
		s[i] = strconv.Itoa(p.PID)
	}
	return strings.Join(s, ",")
}

func commOf(l *reader.List) string {
	if len(l.Processes) == 0 {
		return "?"
	}
	return l.Processes[0].Comm
}

func writeTable(stdout io.Writer, lists []reader.List) error {
	rows := [][]string{{"PID", "COMMAND", "IPCNS", "SEMID", "KEY", "NSEMS", "ADJ"}}
	for i := range lists {
		l := &lists[i]
		pids, comm, ns := pidsOf(l), commOf(l), strconv.FormatUint(uint64(l.IPCNS), 10)
		if len(l.Entries) == 0 {
			rows = append(rows, []string{pids, comm, ns, "-", "-", "-", "-"})
			continue
		}
		for _, e := range l.Entries {
			rows = append(rows, []string{pids, comm, ns, strconv.Itoa(int(e.Semid)),
				fmt.Sprintf("0x%08x", uint32(e.Key)), strconv.Itoa(len(e.Adj)), shortAdjs(e.Adj)})
		}
	}
	return writeColumns(stdout, rows)
}

// writeColumns prints rows as columns two spaces apart, like text/tabwriter
// but in one pass over the widths: ps prints tens of thousands of rows.
func writeColumns(stdout io.Writer, rows [][]string) error {
	var width []int
	for _, r := range rows {
		for i, c := range r {
			if i == len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], len(c))
		}
	}
	w := bufio.NewWriter(stdout)
	pad := strings.Repeat(" ", slices.Max(append(width, 0))+2)
	for _, r := range rows {
		for i, c := range r {
			w.WriteString(c)
			if i < len(r)-1 {
				w.WriteString(pad[:width[i]-len(c)+2])
			}
		}
		w.WriteByte('\n')
	}
	return w.Flush()
}

// shortAdjs prints the first adjustments and how many more there are.
func shortAdjs(adj []int16) string {
	var b strings.Builder
	for i, v := range adj {
		if i == shortAdj {
			fmt.Fprintf(&b, " ...(+%d)", len(adj)-shortAdj)
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(int(v)))
	}
	return b.String()
}

// The JSON schema of ps --json, documented in the README.
type jsonList struct {
	PIDs      []int         `json:"pids"`
	Processes []jsonProcess `json:"processes"`
	IPCNS     uint32        `json:"ipcns"`
	Entries   []jsonEntry   `json:"entries"`
}

type jsonProcess struct {
	PID  int    `json:"pid"`
	Comm string `json:"comm"`
	TIDs []int  `json:"tids"`
}

type jsonEntry struct {
	Semid int32   `json:"semid"`
	Key   int32   `json:"key"`
	Nsems int     `json:"nsems"`
	Adj   []int16 `json:"adj"`
}

func writeJSON(stdout io.Writer, lists []reader.List) error {
	out := make([]jsonList, 0, len(lists))
	for _, l := range lists {
		jl := jsonList{IPCNS: l.IPCNS, PIDs: []int{}, Processes: []jsonProcess{}, Entries: []jsonEntry{}}
		for _, p := range l.Processes {
			jl.PIDs = append(jl.PIDs, p.PID)
			jl.Processes = append(jl.Processes, jsonProcess{PID: p.PID, Comm: p.Comm, TIDs: p.TIDs})
		}
		for _, e := range l.Entries {
			jl.Entries = append(jl.Entries, jsonEntry{Semid: e.Semid, Key: e.Key, Nsems: len(e.Adj), Adj: e.Adj})
		}
		out = append(out, jl)
	}
	return encodeJSON(stdout, out)
}

package main

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/semundo/semundo/reader"
)

// TestPsTable: ps's table, written into one buffer, is byte for byte what
// the rows of strings through writeColumns printed before: lists without
// entries, long and negative adjustments, several processes, wide and
// multi-byte command names, and more than one buffer's worth.
func TestPsTable(t *testing.T) {
	comms := []string{"sleep", "", "a much longer command", "caf\xc3\xa9", "日本語", "x y"}
	rnd := rand.New(rand.NewPCG(3, 4))
	// An entry wider than its NSEMS header: the kernel caps a set's size
	// below that, the table does not.
	cases := [][]reader.List{nil, {{}}, {{Entries: []reader.Entry{{Semid: 1, Adj: make([]int16, 123456)}}}}}
	for n := range 60 {
		var lists []reader.List
		count := rnd.IntN(5)
		if n == 59 {
			count = 3000 // several flushes
		}
		for range count {
			l := reader.List{IPCNS: rnd.Uint32()}
			for range rnd.IntN(3) {
				l.Processes = append(l.Processes, reader.Process{PID: rnd.IntN(1 << 22), Comm: comms[rnd.IntN(len(comms))]})
			}
			for range rnd.IntN(4) {
				e := reader.Entry{Semid: rnd.Int32N(math.MaxInt32), Key: int32(rnd.Uint32())}
				for range rnd.IntN(20) {
					e.Adj = append(e.Adj, int16(rnd.IntN(1<<16)-1<<15))
				}
				l.Entries = append(l.Entries, e)
			}
			lists = append(lists, l)
		}
		cases = append(cases, lists)
	}
	for i, lists := range cases {
		var got, want bytes.Buffer
		if err := writeTable(&got, lists); err != nil {
			t.Fatal(err)
		}
		if err := writeTableRows(&want, lists); err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Fatalf("case %d:\ngot:\n%s\nwant:\n%s", i, got.String(), want.String())
		}
	}
}

// writeTableRows is ps's table as it was first written: a row of strings
// per (list, set), aligned by writeColumns.
func writeTableRows(w *bytes.Buffer, lists []reader.List) error {
	rows := [][]string{psHeader[:]}
	for i := range lists {
		l := &lists[i]
		pids, comm, ns := pidsOf(l), commOf(l), strconv.FormatUint(uint64(l.IPCNS), 10)
		if len(l.Entries) == 0 {
			rows = append(rows, []string{pids, comm, ns, "-", "-", "-", "-"})
			continue
		}
		for _, e := range l.Entries {
			var adj strings.Builder
			for i, v := range e.Adj {
				if i == shortAdj {
					fmt.Fprintf(&adj, " ...(+%d)", len(e.Adj)-shortAdj)
					break
				}
				if i > 0 {
					adj.WriteByte(' ')
				}
				adj.WriteString(strconv.Itoa(int(v)))
			}
			rows = append(rows, []string{pids, comm, ns, strconv.Itoa(int(e.Semid)), fmt.Sprintf("0x%08x", uint32(e.Key)), strconv.Itoa(len(e.Adj)), adj.String()})
		}
	}
	return writeColumns(w, rows)
}

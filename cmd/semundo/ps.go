package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/semundo/semundo/internal/decimal"
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
	snap, err := scanHolders()
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
		err = writeJSON(stdout, lists)
	} else {
		err = writeTable(stdout, lists)
	}
	phase("output")
	return err
}

func pidsOf(l *reader.List) string { return string(appendPids(nil, l)) }

func commOf(l *reader.List) string {
	if len(l.Processes) == 0 {
		return "?"
	}
	return l.Processes[0].Comm
}

// psHeader is ps's header row.
var psHeader = [...]string{"PID", "COMMAND", "IPCNS", "SEMID", "KEY", "NSEMS", "ADJ"}

// writeTable prints lists as ps's table: what writeColumns prints of a row
// per (list, set), byte for byte (TestPsTable), but without a string per
// cell: the widths come from digit counts, and the cells are appended to
// one buffer. At 10,000 holders the rows' strings and their garbage had
// cost 15-20 ms, as much as the scan.
func writeTable(stdout io.Writer, lists []reader.List) error {
	var width [len(psHeader)]int
	for i, h := range psHeader {
		width[i] = len(h)
	}
	// The last column is not padded: its width does not matter.
	for i := range lists {
		l := &lists[i]
		width[0] = max(width[0], pidsLen(l))
		width[1] = max(width[1], len(commOf(l)))
		width[2] = max(width[2], decimal.Len(int64(l.IPCNS)))
		if len(l.Entries) == 0 {
			continue // "-" is narrower than every header
		}
		for _, e := range l.Entries {
			width[3] = max(width[3], decimal.Len(int64(e.Semid)))
			width[4] = max(width[4], len("0x00000000"))
			width[5] = max(width[5], decimal.Len(int64(len(e.Adj))))
		}
	}
	spaces := []byte(strings.Repeat(" ", slices.Max(width[:])+2))
	b := make([]byte, 0, 80<<10)
	// pad ends column i, whose cell began at start.
	pad := func(i, start int) { b = append(b, spaces[:width[i]-(len(b)-start)+2]...) }
	for i, h := range psHeader[:len(psHeader)-1] {
		s := len(b)
		b = append(b, h...)
		pad(i, s)
	}
	b = append(b, psHeader[len(psHeader)-1]...)
	b = append(b, '\n')
	var prefix []byte // a list's first three cells, the same on each of its rows
	for i := range lists {
		l := &lists[i]
		row := len(b)
		s := len(b)
		b = appendPids(b, l)
		pad(0, s)
		s = len(b)
		b = append(b, commOf(l)...)
		pad(1, s)
		s = len(b)
		b = strconv.AppendUint(b, uint64(l.IPCNS), 10)
		pad(2, s)
		if len(l.Entries) == 0 {
			for c := 3; c < len(psHeader)-1; c++ {
				s = len(b)
				b = append(b, '-')
				pad(c, s)
			}
			b = append(b, "-\n"...)
		}
		if len(l.Entries) > 1 {
			prefix = append(prefix[:0], b[row:]...)
		}
		for j, e := range l.Entries {
			if j > 0 {
				b = append(b, prefix...)
			}
			s = len(b)
			b = strconv.AppendInt(b, int64(e.Semid), 10)
			pad(3, s)
			s = len(b)
			b = appendHexKey(b, uint32(e.Key))
			pad(4, s)
			s = len(b)
			b = strconv.AppendInt(b, int64(len(e.Adj)), 10)
			pad(5, s)
			b = appendShortAdjs(b, e.Adj)
			b = append(b, '\n')
		}
		if len(b) >= 64<<10 {
			if _, err := stdout.Write(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	_, err := stdout.Write(b)
	return err
}

// appendPids appends pidsOf(l).
func appendPids(b []byte, l *reader.List) []byte {
	for i, p := range l.Processes {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(p.PID), 10)
	}
	return b
}

// pidsLen is len(pidsOf(l)).
func pidsLen(l *reader.List) int {
	n := max(len(l.Processes)-1, 0) // the commas
	for _, p := range l.Processes {
		n += decimal.Len(int64(p.PID))
	}
	return n
}

// hexKey is fmt's "0x%08x" of k, without fmt's cost per row.
func hexKey(k uint32) string { return string(appendHexKey(nil, k)) }

func appendHexKey(b []byte, k uint32) []byte {
	const digits = "0123456789abcdef"
	b = append(b, "0x00000000"...)
	for i := len(b) - 1; k != 0; i-- {
		b[i] = digits[k&15]
		k >>= 4
	}
	return b
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

// appendShortAdjs appends the first adjustments and how many more there are.
func appendShortAdjs(b []byte, adj []int16) []byte {
	for i, v := range adj {
		if i == shortAdj {
			b = append(b, " ...(+"...)
			b = strconv.AppendInt(b, int64(len(adj)-shortAdj), 10)
			return append(b, ')')
		}
		if i > 0 {
			b = append(b, ' ')
		}
		b = strconv.AppendInt(b, int64(v), 10)
	}
	return b
}

// The JSON schema of ps --json, documented in the README; writeJSON writes
// it by hand, and who --json embeds jsonProcess.
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

// writeJSON prints lists in the schema of ps --json (documented in the
// README): an array of {"pids", "processes": [{"pid", "comm", "tids"}],
// "ipcns", "entries": [{"semid", "key", "nsems", "adj"}]}, indented by two
// spaces, byte for byte as encoding/json's Encoder with SetIndent("", "  ")
// prints it (TestPsJSONEncoder holds it to that). Written by hand and
// streamed: at 10,000 holders the output is megabytes, which encoding/json
// first builds as a value tree, then encodes, then indents.
func writeJSON(stdout io.Writer, lists []reader.List) error {
	j := jsonWriter{out: stdout, b: make([]byte, 0, 80<<10)}
	j.raw("[")
	for i := range lists {
		l := &lists[i]
		j.elem(i, 1)
		j.raw("{\n")
		j.key(2, "pids")
		j.raw("[")
		for k, p := range l.Processes {
			j.elem(k, 3)
			j.int(int64(p.PID))
		}
		j.close(2, len(l.Processes))
		j.raw(",\n")
		j.key(2, "processes")
		j.raw("[")
		for k, p := range l.Processes {
			j.elem(k, 3)
			j.raw("{\n")
			j.key(4, "pid")
			j.int(int64(p.PID))
			j.raw(",\n")
			j.key(4, "comm")
			j.string(p.Comm)
			j.raw(",\n")
			j.key(4, "tids")
			ints(&j, 4, p.TIDs)
			j.raw("\n")
			j.indent(3)
			j.raw("}")
		}
		j.close(2, len(l.Processes))
		j.raw(",\n")
		j.key(2, "ipcns")
		j.int(int64(l.IPCNS))
		j.raw(",\n")
		j.key(2, "entries")
		j.raw("[")
		for k, e := range l.Entries {
			j.elem(k, 3)
			j.raw("{\n")
			j.key(4, "semid")
			j.int(int64(e.Semid))
			j.raw(",\n")
			j.key(4, "key")
			j.int(int64(e.Key))
			j.raw(",\n")
			j.key(4, "nsems")
			j.int(int64(len(e.Adj)))
			j.raw(",\n")
			j.key(4, "adj")
			ints(&j, 4, e.Adj)
			j.raw("\n")
			j.indent(3)
			j.raw("}")
		}
		j.close(2, len(l.Entries))
		j.raw("\n")
		j.indent(1)
		j.raw("}")
	}
	j.close(0, len(lists))
	j.raw("\n")
	return j.flush()
}

// jsonWriter writes indented JSON as encoding/json does: an empty array
// is "[]", each element of another on its own line, two spaces a level.
// It appends to b and writes b out in blocks of about 64 KiB.
type jsonWriter struct {
	out io.Writer
	b   []byte
	err error
}

// spaces is the indentation of the deepest level ps --json uses, and more.
const spaces = "                "

func (j *jsonWriter) raw(s string) { j.b = append(j.b, s...) }

func (j *jsonWriter) indent(level int) { j.b = append(j.b, spaces[:2*level]...) }

// elem starts element i of an array, at the element's level.
func (j *jsonWriter) elem(i, level int) {
	if len(j.b) >= 64<<10 {
		j.flush()
	}
	if i > 0 {
		j.b = append(j.b, ',')
	}
	j.b = append(j.b, '\n')
	j.indent(level)
}

// close ends an array of n elements opened at level.
func (j *jsonWriter) close(level, n int) {
	if n > 0 {
		j.b = append(j.b, '\n')
		j.indent(level)
	}
	j.b = append(j.b, ']')
}

func (j *jsonWriter) key(level int, k string) {
	j.indent(level)
	j.b = append(j.b, '"')
	j.b = append(j.b, k...)
	j.b = append(j.b, "\": "...)
}

func (j *jsonWriter) int(v int64) { j.b = strconv.AppendInt(j.b, v, 10) }

// flush writes out what b holds; the first error sticks.
func (j *jsonWriter) flush() error {
	if j.err == nil && len(j.b) > 0 {
		_, j.err = j.out.Write(j.b)
	}
	j.b = j.b[:0]
	return j.err
}

// ints writes an array of integers whose key is at level; nil is null,
// as encoding/json writes a nil slice.
func ints[T int | int16](j *jsonWriter, level int, v []T) {
	if v == nil {
		j.raw("null")
		return
	}
	j.raw("[")
	for i, x := range v {
		j.elem(i, level+1)
		j.int(int64(x))
	}
	j.close(level, len(v))
}

// string writes s quoted as encoding/json does by default: control
// characters, quotes and backslashes escaped, and <, >, &, U+2028 and
// U+2029 as \u escapes, invalid UTF-8 as U+FFFD. Command names are plain
// ASCII but for the odd one, which goes through encoding/json itself.
func (j *jsonWriter) string(s string) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s) // a string always encodes
			j.b = append(j.b, b...)
			return
		}
	}
	j.b = append(j.b, '"')
	j.b = append(j.b, s...)
	j.b = append(j.b, '"')
}

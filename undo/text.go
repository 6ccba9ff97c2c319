package undo

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/semundo/semundo/internal/decimal"
)

// Kinds of errors from Parse and Marshal; test with errors.Is. Every Parse
// error is a *SyntaxError wrapping one of them, every Marshal error an
// *EntryError wrapping one of them.
var (
	// ErrSyntax: the text is not in the format (bad character, spacing,
	// blank line, leading zero, "+", "-0", ...).
	ErrSyntax = errors.New("malformed semundo text")
	// ErrRange: a semid outside [0, 2^31-1] or an adjustment outside
	// [-32768, 32767].
	ErrRange = errors.New("number out of range")
	// ErrDuplicate: two entries for the same semid.
	ErrDuplicate = errors.New("duplicate semid")
	// ErrNoValues: an entry without any adjustment (a set has at least one
	// semaphore, so an entry has at least one value).
	ErrNoValues = errors.New("entry without adjustment values")
)

// SyntaxError reports where text given to Parse breaks the format.
type SyntaxError struct {
	Line int    // 1-based line number
	Col  int    // 1-based byte column within the line
	Msg  string // what is wrong, one line
	Err  error  // the kind: ErrSyntax, ErrRange, ErrDuplicate or ErrNoValues
}

// Error returns "line L, column C: MSG"; callers prefix the source's name.
func (e *SyntaxError) Error() string {
	return "line " + strconv.Itoa(e.Line) + ", column " + strconv.Itoa(e.Col) + ": " + e.Msg
}

// Unwrap returns the error's kind, so errors.Is(err, ErrRange) works.
func (e *SyntaxError) Unwrap() error { return e.Err }

// EntryError reports a List that Marshal cannot write.
type EntryError struct {
	Index int    // index of the offending entry in the List
	Semid int32  // its semid
	Msg   string // what is wrong, one line
	Err   error  // the kind: ErrRange, ErrDuplicate or ErrNoValues
}

// Error returns "undo: entry I (semid S): MSG".
func (e *EntryError) Error() string {
	return fmt.Sprintf("undo: entry %d (semid %d): %s", e.Index, e.Semid, e.Msg)
}

// Unwrap returns the error's kind.
func (e *EntryError) Unwrap() error { return e.Err }

// Marshal returns the canonical text of l: one line per entry, sorted by
// semid. It fails on a negative semid (the kernel's mark of a removed set,
// never to be shown), an entry without values, or two entries with the
// same semid. The empty list gives empty text.
func Marshal(l List) ([]byte, error) { return l.AppendText(nil) }

// MarshalText implements encoding.TextMarshaler with Marshal.
func (l List) MarshalText() ([]byte, error) { return Marshal(l) }

// AppendText appends the canonical text of l to b (see Marshal) and
// implements encoding.TextAppender. It sizes the output exactly and grows b
// once, and sorts only an index when l is not already in semid order, so
// large lists cost one pass to measure and one to write. On error b is
// returned unchanged.
func (l List) AppendText(b []byte) ([]byte, error) {
	var stack [32]int // index for short unsorted lists, without allocating
	order, err := writeOrder(l, stack[:0])
	if err != nil {
		return b, err
	}
	n := 0
	for i := range l {
		n += decimal.Len(int64(l[i].Semid)) + 1
		for _, v := range l[i].Adj {
			n += decimal.Len(int64(v)) + 1
		}
	}
	b = slices.Grow(b, n)
	for k := range l {
		e := &l[k]
		if order != nil {
			e = &l[order[k]]
		}
		b = strconv.AppendInt(b, int64(e.Semid), 10)
		for _, v := range e.Adj {
			b = append(b, ' ')
			b = strconv.AppendInt(b, int64(v), 10)
		}
		b = append(b, '\n')
	}
	return b, nil
}

// writeOrder checks that l can be written and returns the order to write
// it in: nil when l is already strictly sorted, else a sorted index, built
// in buf when it is large enough.
func writeOrder(l List, buf []int) ([]int, error) {
	for i := range l {
		if l[i].Semid < 0 {
			return nil, &EntryError{Index: i, Semid: l[i].Semid, Err: ErrRange,
				Msg: "semid is negative (the kernel's mark of a removed set); drop the entry"}
		}
		if len(l[i].Adj) == 0 {
			return nil, &EntryError{Index: i, Semid: l[i].Semid, Err: ErrNoValues,
				Msg: "no adjustment values; an entry needs one per semaphore of its set"}
		}
	}
	if strictlySorted(l) {
		return nil, nil
	}
	order := buf[:0]
	for i := range l {
		order = append(order, i)
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(l[a].Semid, l[b].Semid) })
	for k := 1; k < len(order); k++ {
		if l[order[k]].Semid == l[order[k-1]].Semid {
			i, j := min(order[k-1], order[k]), max(order[k-1], order[k])
			return nil, &EntryError{Index: j, Semid: l[j].Semid, Err: ErrDuplicate,
				Msg: fmt.Sprintf("same semid as entry %d; merge or drop one", i)}
		}
	}
	return order, nil
}

// UnmarshalText implements encoding.TextUnmarshaler with Parse. On error *l
// is left unchanged.
func (l *List) UnmarshalText(text []byte) error {
	got, err := Parse(text)
	if err != nil {
		return err
	}
	*l = got
	return nil
}

// Parse reads text in the semundo format and returns the list sorted by
// semid. It is strict, so that any accepted text is the canonical text up
// to line order and the final newline:
//
//   - lines end with '\n'; the last line's '\n' may be missing; there are no
//     blank lines (empty text is the empty list);
//   - a line is a semid followed by at least one adjustment, separated by
//     exactly one space, with no leading or trailing space; no '\r', no tab;
//   - numbers are decimal without '+', without leading zeros ("0" itself is
//     fine) and without "-0"; a semid is in [0, 2^31-1], an adjustment in
//     [-32768, 32767];
//   - no semid appears twice; lines may come in any order.
//
// Errors are *SyntaxError values naming the first bad line (in text order)
// and column. Parse runs in time linear in len(text) (plus sorting the
// lines when they are not in order) and never panics. The Adj slices of the
// result share one backing array, each with its capacity cut to its length.
func Parse(text []byte) (List, error) {
	if len(text) == 0 {
		return nil, nil
	}
	// A valid line holds as many values as spaces, so one backing array
	// sized by the count of spaces holds every value without regrowing.
	// Both counts are capped by what valid text of this length can hold
	// (a line takes at least 4 bytes, "0 0\n", a value at least 2, " 0"),
	// so text made of newlines or spaces cannot make Parse allocate more
	// than a few times its own size.
	list := make(List, 0, min(bytes.Count(text, []byte{'\n'})+1, len(text)/4+1))
	vals := make([]int16, 0, min(bytes.Count(text, []byte{' '}), len(text)/2))
	inOrder := true
	var seen map[int32]int // semid -> entry index, built once order breaks
	lineNo := 0
	for pos := 0; pos < len(text); {
		lineNo++
		end := bytes.IndexByte(text[pos:], '\n')
		if end < 0 {
			end = len(text)
		} else {
			end += pos
		}
		line := text[pos:end]
		pos = end + 1

		start := len(vals)
		semid, err := parseLine(line, lineNo, &vals)
		if err != nil {
			return nil, err
		}
		// Every line is an entry, so entry i sits on line i+1.
		if inOrder && len(list) > 0 && semid <= list[len(list)-1].Semid {
			inOrder = false
			seen = make(map[int32]int, cap(list))
			for i, e := range list {
				seen[e.Semid] = i
			}
		}
		if !inOrder {
			if first, dup := seen[semid]; dup {
				return nil, &SyntaxError{Line: lineNo, Col: 1, Err: ErrDuplicate,
					Msg: fmt.Sprintf("duplicate semid %d (first on line %d)", semid, first+1)}
			}
			seen[semid] = len(list)
		}
		list = append(list, Entry{Semid: semid, Adj: vals[start:len(vals):len(vals)]})
	}
	if !inOrder {
		slices.SortFunc(list, func(a, b Entry) int { return cmp.Compare(a.Semid, b.Semid) })
	}
	return list, nil
}

// parseLine parses one line (without its '\n'), appends its adjustments to
// *vals and returns its semid.
func parseLine(line []byte, lineNo int, vals *[]int16) (int32, error) {
	if len(line) == 0 {
		return 0, &SyntaxError{Line: lineNo, Col: 1, Err: ErrSyntax,
			Msg: "empty line; blank lines are not allowed"}
	}
	var semid int32
	i := 0
	for tok := 0; ; tok++ {
		neg, mag, end, err := scanNumber(line, i, lineNo)
		if err != nil {
			return 0, err
		}
		if tok == 0 {
			if neg || mag > MaxSemid {
				return 0, rangeError(lineNo, i, line[i:end], "semid", 0, MaxSemid)
			}
			semid = int32(mag)
		} else {
			if (neg && mag > -MinAdj) || (!neg && mag > MaxAdj) {
				return 0, rangeError(lineNo, i, line[i:end], "value", MinAdj, MaxAdj)
			}
			v := int16(mag)
			if neg {
				v = int16(-int32(mag))
			}
			*vals = append(*vals, v)
		}
		if end == len(line) {
			if tok == 0 {
				return 0, &SyntaxError{Line: lineNo, Col: 1, Err: ErrNoValues,
					Msg: fmt.Sprintf("semid %d has no adjustment values; a set has at least one semaphore", semid)}
			}
			return semid, nil
		}
		// scanNumber stops only at a space or the end of the line.
		i = end + 1
		if i == len(line) {
			return 0, &SyntaxError{Line: lineNo, Col: end + 1, Err: ErrSyntax,
				Msg: "trailing space at end of line"}
		}
	}
}

// scanNumber reads the number that starts at line[i] and ends before the
// next space or the end of the line. It returns its sign, its magnitude
// (saturated far above any valid value, so huge tokens cannot overflow) and
// where it ends.
func scanNumber(line []byte, i, lineNo int) (neg bool, mag uint64, end int, err error) {
	if line[i] == ' ' {
		msg := "two spaces in a row; separate numbers with one space"
		if i == 0 {
			msg = "leading space at start of line"
		}
		return false, 0, 0, &SyntaxError{Line: lineNo, Col: i + 1, Err: ErrSyntax, Msg: msg}
	}
	if line[i] == '-' {
		neg = true
		i++
	}
	digits := i
	for ; i < len(line) && line[i] != ' '; i++ {
		c := line[i]
		if c < '0' || c > '9' {
			return false, 0, 0, badByte(lineNo, i, c)
		}
		if i == digits+1 && line[digits] == '0' {
			return false, 0, 0, &SyntaxError{Line: lineNo, Col: digits + 1, Err: ErrSyntax,
				Msg: "leading zero; write numbers in plain decimal"}
		}
		if mag < 1<<40 {
			mag = mag*10 + uint64(c-'0')
		}
	}
	if i == digits {
		return false, 0, 0, &SyntaxError{Line: lineNo, Col: digits, Err: ErrSyntax,
			Msg: "'-' without digits"}
	}
	if neg && mag == 0 {
		return false, 0, 0, &SyntaxError{Line: lineNo, Col: digits, Err: ErrSyntax,
			Msg: `"-0"; write zero as "0"`}
	}
	return neg, mag, i, nil
}

// badByte describes a byte that cannot appear in a number.
func badByte(lineNo, i int, c byte) error {
	var msg string
	switch {
	case c == '\r':
		msg = `carriage return; lines end with "\n" only`
	case c == '\t':
		msg = "tab; separate numbers with one space"
	case c == '+':
		msg = "'+' sign; write positive numbers without it"
	case c == '-':
		msg = "'-' inside a number"
	case c >= 0x20 && c < 0x7f:
		msg = fmt.Sprintf("unexpected character %q", rune(c))
	default:
		msg = fmt.Sprintf("unexpected byte 0x%02x", c)
	}
	return &SyntaxError{Line: lineNo, Col: i + 1, Err: ErrSyntax, Msg: msg}
}

// rangeError reports a number outside [lo, hi]; a huge token is shortened
// so that the message stays one short line.
func rangeError(lineNo, i int, tok []byte, what string, lo, hi int) error {
	s := string(tok)
	if len(tok) > 24 {
		s = string(tok[:20]) + "..."
	}
	return &SyntaxError{Line: lineNo, Col: i + 1, Err: ErrRange,
		Msg: fmt.Sprintf("%s %s out of range [%d, %d]", what, s, lo, hi)}
}

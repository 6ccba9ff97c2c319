package undo

import (
	"errors"
	"fmt"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParseAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want List
	}{
		{"empty text is the empty list", "", nil},
		{"one line", "5 1 -1\n", List{{5, []int16{1, -1}}}},
		{"final newline optional", "5 1 -1", List{{5, []int16{1, -1}}}},
		{"zero semid", "0 7\n", List{{0, []int16{7}}}},
		{"all-zero entry is real state", "3 0 0 0\n", List{{3, []int16{0, 0, 0}}}},
		{"extremes", "2147483647 -32768 32767 0\n", List{{MaxSemid, []int16{-32768, 32767, 0}}}},
		{"sorted lines", "1 1\n2 2\n3 3\n", List{{1, []int16{1}}, {2, []int16{2}}, {3, []int16{3}}}},
		{"unsorted lines are sorted", "30 3\n1 1\n20 2 2\n", List{{1, []int16{1}}, {20, []int16{2, 2}}, {30, []int16{3}}}},
		{"unsorted without final newline", "9 1\n8 2", List{{8, []int16{2}}, {9, []int16{1}}}},
		{"different sizes per set", "1 1\n2 1 2 3 4 5 6 7 8\n", List{{1, []int16{1}}, {2, []int16{1, 2, 3, 4, 5, 6, 7, 8}}}},
		{"ten is not a leading zero", "10 10 -10 100\n", List{{10, []int16{10, -10, 100}}}},
	}
	for _, tt := range tests {
		got, err := Parse([]byte(tt.in))
		if err != nil {
			t.Errorf("%s: Parse(%q): %v", tt.name, tt.in, err)
			continue
		}
		if !got.Equal(tt.want) || !slices.IsSortedFunc(got, func(a, b Entry) int { return int(a.Semid) - int(b.Semid) }) {
			t.Errorf("%s: Parse(%q) = %v, want %v (sorted)", tt.name, tt.in, got, tt.want)
		}
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		in        string
		kind      error
		line, col int
		msg       string // a part of the message
	}{
		{"only a newline", "\n", ErrSyntax, 1, 1, "empty line"},
		{"blank line in the middle", "1 1\n\n2 2\n", ErrSyntax, 2, 1, "empty line"},
		{"two trailing newlines", "1 1\n\n", ErrSyntax, 2, 1, "empty line"},
		{"CRLF", "1 1\r\n", ErrSyntax, 1, 4, "carriage return"},
		{"CR alone", "1 1\r2 2\n", ErrSyntax, 1, 4, "carriage return"},
		{"tab separator", "1\t1\n", ErrSyntax, 1, 2, "tab"},
		{"tab at end", "1 1\t\n", ErrSyntax, 1, 4, "tab"},
		{"leading space", " 1 1\n", ErrSyntax, 1, 1, "leading space"},
		{"trailing space", "1 1 \n", ErrSyntax, 1, 4, "trailing space"},
		{"trailing space after semid", "1 \n", ErrSyntax, 1, 2, "trailing space"},
		{"two spaces", "1  1\n", ErrSyntax, 1, 3, "two spaces"},
		{"two spaces between values", "1 1  2\n", ErrSyntax, 1, 5, "two spaces"},
		{"only a space", " \n", ErrSyntax, 1, 1, "leading space"},
		{"plus sign value", "1 +1\n", ErrSyntax, 1, 3, "'+'"},
		{"plus sign semid", "+1 1\n", ErrSyntax, 1, 1, "'+'"},
		{"leading zero value", "1 01\n", ErrSyntax, 1, 3, "leading zero"},
		{"leading zero semid", "01 1\n", ErrSyntax, 1, 1, "leading zero"},
		{"double zero", "1 00\n", ErrSyntax, 1, 3, "leading zero"},
		{"negative leading zero", "1 -01\n", ErrSyntax, 1, 4, "leading zero"},
		{"negative zero value", "1 -0\n", ErrSyntax, 1, 3, `"-0"`},
		{"negative zero semid", "-0 1\n", ErrSyntax, 1, 1, `"-0"`},
		{"lone minus", "1 -\n", ErrSyntax, 1, 3, "without digits"},
		{"minus then space", "1 - 1\n", ErrSyntax, 1, 3, "without digits"},
		{"double minus", "1 --1\n", ErrSyntax, 1, 4, "inside a number"},
		{"minus inside", "1 5-3\n", ErrSyntax, 1, 4, "inside a number"},
		{"letter", "1 x\n", ErrSyntax, 1, 3, `'x'`},
		{"hex", "1 0x10\n", ErrSyntax, 1, 4, `'x'`},
		{"decimal point", "1 1.5\n", ErrSyntax, 1, 4, `'.'`},
		{"NUL byte", "1 1\x00\n", ErrSyntax, 1, 4, "0x00"},
		{"non-ASCII", "1 \xc2\xa01\n", ErrSyntax, 1, 3, "0xc2"},
		{"value too big", "1 2\n3 40000\n", ErrRange, 2, 3, "value 40000 out of range [-32768, 32767]"},
		{"value just too big", "1 32768\n", ErrRange, 1, 3, "value 32768 out of range"},
		{"value just too small", "1 -32769\n", ErrRange, 1, 3, "value -32769 out of range"},
		{"huge value", "1 " + strings.Repeat("9", 5000) + "\n", ErrRange, 1, 3, "value 99999999999999999999... out of range"},
		{"semid too big", "2147483648 1\n", ErrRange, 1, 1, "semid 2147483648 out of range [0, 2147483647]"},
		{"negative semid", "-1 1\n", ErrRange, 1, 1, "semid -1 out of range"},
		{"huge semid", strings.Repeat("1", 30) + " 1\n", ErrRange, 1, 1, "semid 11111111111111111111..."},
		{"semid alone", "7\n", ErrNoValues, 1, 1, "semid 7 has no adjustment values"},
		{"semid alone, no newline", "1 1\n7", ErrNoValues, 2, 1, "semid 7 has no"},
		{"duplicate adjacent", "1 1\n1 2\n", ErrDuplicate, 2, 1, "duplicate semid 1 (first on line 1)"},
		{"duplicate after disorder", "5 1\n9 1\n3 1\n5 2\n", ErrDuplicate, 4, 1, "duplicate semid 5 (first on line 1)"},
		{"duplicate of a later-sorted line", "9 1\n3 1\n9 2\n", ErrDuplicate, 3, 1, "duplicate semid 9 (first on line 1)"},
		{"first error wins", "1 1\n2 x\n3 40000\n", ErrSyntax, 2, 3, `'x'`},
	}
	for _, tt := range tests {
		got, err := Parse([]byte(tt.in))
		if err == nil {
			t.Errorf("%s: Parse(%q) = %v, want an error", tt.name, tt.in, got)
			continue
		}
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("%s: Parse(%q) error %v (%T) is not a *SyntaxError", tt.name, tt.in, err, err)
			continue
		}
		if !errors.Is(err, tt.kind) || se.Line != tt.line || se.Col != tt.col || !strings.Contains(se.Msg, tt.msg) {
			t.Errorf("%s: Parse(%q) = %q (kind %v, line %d, col %d), want kind %v, line %d, col %d, message with %q",
				tt.name, tt.in, err, se.Err, se.Line, se.Col, tt.kind, tt.line, tt.col, tt.msg)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: message %q has a newline", tt.name, err)
		}
		if got != nil {
			t.Errorf("%s: Parse returned %v with its error", tt.name, got)
		}
	}
}

func TestSyntaxErrorMessage(t *testing.T) {
	t.Parallel()
	_, err := Parse([]byte("1 1\n2 2\n3 40000\n"))
	const want = "line 3, column 3: value 40000 out of range [-32768, 32767]"
	if err == nil || err.Error() != want {
		t.Fatalf("Parse error = %v, want %q", err, want)
	}
}

func TestRoundTripCanonical(t *testing.T) {
	t.Parallel()
	canon := []string{
		"",
		"0 0\n",
		"5 1 -1\n",
		"1 -32768 32767\n2 0\n",
		"7 0 0 0 0 0 0 0 0\n8 1\n2147483647 -1\n",
		"3 12 -345 6789 -10000 32767 -32768\n",
		"65536 1\n98304 -3 4\n131072 0\n",
	}
	for _, in := range canon {
		l, err := Parse([]byte(in))
		if err != nil {
			t.Fatalf("Parse(%q): %v", in, err)
		}
		out, err := Marshal(l)
		if err != nil {
			t.Fatalf("Marshal(Parse(%q)): %v", in, err)
		}
		if string(out) != in {
			t.Errorf("Marshal(Parse(%q)) = %q", in, out)
		}
	}
}

func TestRoundTripLarge(t *testing.T) {
	t.Parallel()
	// A 32,000-semaphore set and 32,000 lines: the sizes kernel limits allow.
	big := Entry{Semid: 42, Adj: make([]int16, 32000)}
	for i := range big.Adj {
		big.Adj[i] = int16(i*7919 - 32768)
	}
	many := make(List, 32000)
	for i := range many {
		many[len(many)-1-i] = Entry{Semid: int32(i * 32768), Adj: []int16{int16(i), int16(-i)}}
	}
	for name, l := range map[string]List{"wide": {big}, "long": many} {
		text, err := Marshal(l)
		if err != nil {
			t.Fatalf("%s: Marshal: %v", name, err)
		}
		back, err := Parse(text)
		if err != nil {
			t.Fatalf("%s: Parse(Marshal): %v", name, err)
		}
		if !back.Equal(l) {
			t.Fatalf("%s: Parse(Marshal(l)) differs from l", name)
		}
		again, err := Marshal(back)
		if err != nil || string(again) != string(text) {
			t.Fatalf("%s: second Marshal differs (err %v)", name, err)
		}
	}
}

func TestMarshal(t *testing.T) {
	t.Parallel()
	l := List{{9, []int16{-1, 2}}, {1, []int16{32767}}, {5, []int16{0, 0, -32768}}}
	before := l.Sorted()
	got, err := Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	if want := "1 32767\n5 0 0 -32768\n9 -1 2\n"; string(got) != want {
		t.Fatalf("Marshal = %q, want %q", got, want)
	}
	if l[0].Semid != 9 || !l.Equal(before) {
		t.Fatal("Marshal modified its input")
	}
	if got, err := Marshal(nil); err != nil || len(got) != 0 {
		t.Fatalf("Marshal(nil) = %q, %v; want empty", got, err)
	}
	// AppendText appends, and leaves the buffer alone on error.
	buf := []byte("x\n")
	buf, err = List{{3, []int16{1}}}.AppendText(buf)
	if err != nil || string(buf) != "x\n3 1\n" {
		t.Fatalf("AppendText = %q, %v", buf, err)
	}
	buf2, err := List{{-1, []int16{1}}}.AppendText(buf)
	if err == nil || string(buf2) != "x\n3 1\n" {
		t.Fatalf("AppendText of a bad list = %q, %v", buf2, err)
	}
	// MarshalText and UnmarshalText agree with Marshal and Parse.
	mt, err := l.MarshalText()
	if err != nil || string(mt) != "1 32767\n5 0 0 -32768\n9 -1 2\n" {
		t.Fatalf("MarshalText = %q, %v", mt, err)
	}
	var u List
	if err := u.UnmarshalText(mt); err != nil || !u.Equal(l) {
		t.Fatalf("UnmarshalText = %v, %v", u, err)
	}
	if err := u.UnmarshalText([]byte("bad")); err == nil || !u.Equal(l) {
		t.Fatalf("UnmarshalText of bad text: err %v, list %v (want error, list unchanged)", err, u)
	}
}

func TestMarshalRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		l     List
		kind  error
		index int
	}{
		{"negative semid", List{{1, []int16{1}}, {-1, []int16{0}}}, ErrRange, 1},
		{"min int32 semid", List{{-1 << 31, []int16{0}}}, ErrRange, 0},
		{"nil values", List{{1, nil}}, ErrNoValues, 0},
		{"empty values", List{{2, []int16{1}}, {1, []int16{}}}, ErrNoValues, 1},
		{"duplicate adjacent", List{{1, []int16{1}}, {1, []int16{1}}}, ErrDuplicate, 1},
		{"duplicate unsorted", List{{4, []int16{1}}, {2, []int16{1}}, {4, []int16{2}}, {3, []int16{0}}}, ErrDuplicate, 2},
	}
	for _, tt := range tests {
		got, err := Marshal(tt.l)
		var ee *EntryError
		if !errors.As(err, &ee) || !errors.Is(err, tt.kind) || ee.Index != tt.index {
			t.Errorf("%s: Marshal = %q, %v; want *EntryError kind %v at index %d", tt.name, got, err, tt.kind, tt.index)
			continue
		}
		if ee.Semid != tt.l[tt.index].Semid || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error %q names semid %d, want %d on one line", tt.name, err, ee.Semid, tt.l[tt.index].Semid)
		}
	}
}

// refParse is an independent, slow reading of the format rules (split,
// regexp, strconv) used to check Parse on fuzzed input. It returns the
// list (unsorted) or the 1-based line of the first bad line.
func refParse(in string) (List, int) {
	if in == "" {
		return nil, 0
	}
	lines := strings.Split(in, "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	var l List
	seen := map[int64]bool{}
	for n, line := range lines {
		if !refLine.MatchString(line) {
			return nil, n + 1
		}
		f := strings.Split(line, " ")
		semid, err := strconv.ParseInt(f[0], 10, 32)
		if err != nil || seen[semid] {
			return nil, n + 1
		}
		seen[semid] = true
		e := Entry{Semid: int32(semid)}
		for _, s := range f[1:] {
			v, err := strconv.ParseInt(s, 10, 16)
			if err != nil {
				return nil, n + 1
			}
			e.Adj = append(e.Adj, int16(v))
		}
		l = append(l, e)
	}
	return l, 0
}

var refLine = regexp.MustCompile(`^(0|[1-9][0-9]*)( (0|-?[1-9][0-9]*))+$`)

// checkParse asserts the fuzz invariants on one input.
func checkParse(t *testing.T, in []byte) {
	l, err := Parse(in)
	ref, badLine := refParse(string(in))
	if err != nil {
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Fatalf("Parse(%q): error %v is not a *SyntaxError", in, err)
		}
		if strings.ContainsAny(err.Error(), "\n\r") {
			t.Fatalf("Parse(%q): message %q is not one line", in, err)
		}
		if se.Line < 1 || se.Col < 1 {
			t.Fatalf("Parse(%q): bad position in %v", in, err)
		}
		if badLine == 0 {
			t.Fatalf("Parse(%q) = %v, but the reference parser accepts it", in, err)
		}
		if se.Line != badLine {
			t.Fatalf("Parse(%q) = %v, but the reference parser fails first on line %d", in, err, badLine)
		}
		return
	}
	if badLine != 0 {
		t.Fatalf("Parse(%q) accepted it, the reference parser rejects line %d", in, badLine)
	}
	if !l.Equal(ref) {
		t.Fatalf("Parse(%q) = %v, reference %v", in, l, ref)
	}
	out, err := Marshal(l)
	if err != nil {
		t.Fatalf("Marshal(Parse(%q)): %v", in, err)
	}
	back, err := Parse(out)
	if err != nil || !back.Equal(l) {
		t.Fatalf("Parse(Marshal(Parse(%q))) = %v, %v; want %v", in, back, err, l)
	}
	// Accepted text is canonical up to line order and the final newline.
	inLines := strings.Split(strings.TrimSuffix(string(in), "\n"), "\n")
	outLines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	ascending := true
	for i := 1; i < len(inLines); i++ {
		a, _ := strconv.Atoi(strings.SplitN(inLines[i-1], " ", 2)[0])
		b, _ := strconv.Atoi(strings.SplitN(inLines[i], " ", 2)[0])
		ascending = ascending && a < b
	}
	if ascending {
		want := string(in)
		if len(in) > 0 && in[len(in)-1] != '\n' {
			want += "\n"
		}
		if string(out) != want {
			t.Fatalf("canonical input %q marshals to %q", in, out)
		}
	}
	slices.Sort(inLines)
	slices.Sort(outLines)
	if !slices.Equal(inLines, outLines) {
		t.Fatalf("input %q and its canonical form %q hold different lines", in, out)
	}
}

// FuzzParse checks Parse against the reference reading and the round trip.
// The seed corpus is in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"", "5 1 -1", "5 1 -1\n", "1 1\n1 1\n", "2 0\n1 -32768 32767\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(checkParse)
}

// TestParseLinear checks, by measuring memory rather than time, that
// pathological inputs cost work proportional to their size: quadrupling the
// input must roughly quadruple the bytes Parse allocates, not multiply them
// by sixteen. The inputs also must not panic.
func TestParseLinear(t *testing.T) {
	descending := func(n int) string {
		var b strings.Builder
		for i := n; i > 0; i-- {
			fmt.Fprintf(&b, "%d 0 1\n", i)
		}
		return b.String()
	}
	inputs := map[string]func(n int) string{
		"one wide line":      func(n int) string { return strings.Repeat("1 ", n) + "1" },
		"many lines":         func(n int) string { return strings.Repeat("0 ", n/8) + "1\n" + descending(n/8) },
		"lines out of order": descending,
		"late duplicate":     func(n int) string { return descending(n) + "1 1\n" },
		"spaces":             func(n int) string { return strings.Repeat(" ", n) },
		"huge number":        func(n int) string { return "1 " + strings.Repeat("9", n) },
		"many blank lines":   func(n int) string { return "1 1\n" + strings.Repeat("\n", n) },
		"minus signs":        func(n int) string { return "1 " + strings.Repeat("-", n) },
		"long bad last line": func(n int) string { return descending(n/8) + strings.Repeat("1 ", n) + "x" },
	}
	for name, gen := range inputs {
		small, large := []byte(gen(1<<14)), []byte(gen(1<<16))
		bs, bl := allocBytes(small), allocBytes(large)
		ratio := float64(bl) / float64(max(bs, 1))
		t.Logf("%s: %d bytes in -> %d allocated; %d -> %d (x%.1f)", name, len(small), bs, len(large), bl, ratio)
		if bl > 64<<10 && ratio > 6 {
			t.Errorf("%s: 4x the input made Parse allocate %.1fx the memory", name, ratio)
		}
		if bl > 16*uint64(len(large))+64<<10 {
			t.Errorf("%s: Parse allocated %d bytes for a %d-byte input", name, bl, len(large))
		}
	}
}

// allocBytes returns the bytes Parse allocates for in (median of 3 runs).
func allocBytes(in []byte) uint64 {
	var runs []uint64
	for range 3 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, _ = Parse(in)
		runtime.ReadMemStats(&after)
		runs = append(runs, after.TotalAlloc-before.TotalAlloc)
	}
	slices.Sort(runs)
	return runs[1]
}

func ExampleParse() {
	l, err := Parse([]byte("7 0 -1\n3 2"))
	if err != nil {
		fmt.Println(err)
		return
	}
	text, _ := Marshal(l)
	fmt.Printf("%q\n", text)
	_, err = Parse([]byte("1 1\n2 2\n3 40000\n"))
	fmt.Println(err, errors.Is(err, ErrRange))
	// Output:
	// "3 2\n7 0 -1\n"
	// line 3, column 3: value 40000 out of range [-32768, 32767] true
}

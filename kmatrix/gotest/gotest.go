// Package gotest reads the verbose output of a Go test binary (-test.v or
// -test.v=test2json) line by line and tells which tests passed, failed,
// were skipped, or started and never finished (the binary crashed, hung or
// was killed). The kernel-matrix runner uses it on output that comes back
// from a VM over a serial console, where no test2json tool is at hand.
package gotest

import (
	"strconv"
	"strings"
	"time"
)

// Status is a test's outcome.
type Status int

// Outcomes. Unfinished means "=== RUN" was seen but no result line.
const (
	Unfinished Status = iota
	Pass
	Fail
	Skip
)

// String returns the word go test prints for the outcome.
func (s Status) String() string {
	switch s {
	case Pass:
		return "PASS"
	case Fail:
		return "FAIL"
	case Skip:
		return "SKIP"
	}
	return "UNFINISHED"
}

// maxOutput bounds the lines kept per test: enough to explain a failure,
// not enough to let a chatty test fill the host's memory.
const maxOutput = 200

// Test is one test or subtest.
type Test struct {
	Name    string        // full name, e.g. TestSub/case
	Status  Status        // outcome
	Elapsed time.Duration // from the result line
	Output  []string      // output lines attributed to the test (at most 200)
	Dropped int           // output lines beyond the kept ones
	// Bench is a benchmark's result line ("BenchmarkX-2  1  5 ns/op ...");
	// go test prints no "--- PASS" for a benchmark, so this line is what
	// makes it pass.
	Bench string
}

// Result is what one binary's output said.
type Result struct {
	Tests []Test // in order of first appearance
	Final string // "PASS", "FAIL" or "" when the binary never printed its verdict
	Panic string // the first "panic: ..." line, if any
}

// Count returns how many tests have status s.
func (r Result) Count(s Status) int {
	n := 0
	for _, t := range r.Tests {
		if t.Status == s {
			n++
		}
	}
	return n
}

// Parser accumulates a Result from lines fed in order. The zero value is
// ready to use. It is not safe for concurrent use.
type Parser struct {
	tests  []Test
	index  map[string]int
	cur    string // test that output is attributed to
	framed bool   // a test2json marker (0x16) was seen: only marked lines frame
	final  string
	panic  string
}

// marker starts every framing line in -test.v=test2json mode, so that test
// output that merely looks like "--- FAIL: X" is not taken for a result.
const marker = "\x16"

// Line feeds one line of output (without its newline; a trailing "\r" is
// ignored).
func (p *Parser) Line(line string) {
	line = strings.TrimRight(line, "\r\n")
	if strings.Contains(line, marker) {
		p.framed = true
		parts := strings.Split(line, marker)
		if parts[0] != "" {
			p.output(parts[0])
		}
		for _, f := range parts[1:] {
			if !p.frame(f) {
				p.output(f)
			}
		}
		return
	}
	if p.framed || !p.frame(strings.TrimLeft(line, " ")) {
		p.output(line)
	}
}

func (p *Parser) test(name string) *Test {
	if p.index == nil {
		p.index = make(map[string]int)
	}
	i, ok := p.index[name]
	if !ok {
		i = len(p.tests)
		p.index[name] = i
		p.tests = append(p.tests, Test{Name: name})
	}
	return &p.tests[i]
}

// frame handles a framing line and reports whether s was one.
func (p *Parser) frame(s string) bool {
	switch {
	case s == "PASS" || s == "FAIL":
		p.final = s
		return true
	case strings.HasPrefix(s, "=== RUN "):
		p.cur = strings.TrimSpace(strings.TrimPrefix(s, "=== RUN "))
		if p.cur == "" {
			return false
		}
		p.test(p.cur)
		return true
	case strings.HasPrefix(s, "=== PAUSE "), strings.HasPrefix(s, "=== CONT "), strings.HasPrefix(s, "=== NAME "), s == "=== NAME":
		_, name, _ := strings.Cut(s[4:], " ")
		p.cur = strings.TrimSpace(name)
		return true
	}
	for _, st := range []Status{Pass, Fail, Skip} {
		prefix := "--- " + st.String() + ": "
		if !strings.HasPrefix(s, prefix) {
			continue
		}
		rest := s[len(prefix):]
		name, elapsed := rest, time.Duration(0)
		if i := strings.LastIndex(rest, " ("); i > 0 && strings.HasSuffix(rest, "s)") {
			if f, err := strconv.ParseFloat(rest[i+2:len(rest)-2], 64); err == nil {
				name, elapsed = rest[:i], time.Duration(f*float64(time.Second))
			}
		}
		if name == "" {
			return false
		}
		t := p.test(name)
		t.Status, t.Elapsed = st, elapsed
		p.cur = name
		return true
	}
	return false
}

func (p *Parser) output(s string) {
	if p.panic == "" && strings.HasPrefix(s, "panic: ") {
		p.panic = s
	}
	if p.cur == "" {
		return
	}
	t := p.test(p.cur)
	if isBenchResult(p.cur, s) && t.Status == Unfinished {
		t.Status, t.Bench = Pass, s
	}
	if len(t.Output) < maxOutput {
		t.Output = append(t.Output, s)
	} else {
		t.Dropped++
	}
}

// isBenchResult reports whether line is benchmark name's result: the
// name, optionally "-GOMAXPROCS", then whitespace and the iteration count.
func isBenchResult(name, line string) bool {
	if !strings.HasPrefix(name, "Benchmark") || !strings.HasPrefix(line, name) {
		return false
	}
	rest := line[len(name):]
	if strings.HasPrefix(rest, "-") {
		rest = strings.TrimLeft(rest[1:], "0123456789")
	}
	f := strings.Fields(rest)
	if len(f) < 2 || rest == "" || (rest[0] != ' ' && rest[0] != '\t') {
		return false
	}
	_, err := strconv.Atoi(f[0])
	return err == nil
}

// Result returns what the lines so far said. Tests still running count as
// Unfinished.
func (p *Parser) Result() Result {
	r := Result{Final: p.final, Panic: p.panic, Tests: make([]Test, len(p.tests))}
	copy(r.Tests, p.tests)
	for i := range r.Tests {
		r.Tests[i].Output = append([]string(nil), r.Tests[i].Output...)
	}
	return r
}

// Parse feeds all of out to a new Parser and returns its Result.
func Parse(out string) Result {
	var p Parser
	for _, l := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		p.Line(l)
	}
	return p.Result()
}

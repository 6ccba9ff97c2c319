package gotest_test

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/kmatrix/gotest"
)

// byStatus groups test names by outcome, sorted, for comparison.
func byStatus(r gotest.Result) map[gotest.Status][]string {
	m := map[gotest.Status][]string{}
	for _, t := range r.Tests {
		m[t.Status] = append(m[t.Status], t.Name)
	}
	for _, v := range m {
		sort.Strings(v)
	}
	return m
}

func TestPlainOutput(t *testing.T) {
	out := `=== RUN   TestA
    a_test.go:3: hello
--- PASS: TestA (0.25s)
=== RUN   TestB
=== RUN   TestB/x_y
    b_test.go:9: boom
=== NAME  TestB
    --- FAIL: TestB/x_y (1.50s)
--- FAIL: TestB (1.50s)
=== RUN   TestC
    c_test.go:1: missing root
--- SKIP: TestC (0.00s)
=== RUN   TestD
panic: runtime error: index out of range [recovered]
`
	r := gotest.Parse(out)
	want := map[gotest.Status][]string{
		gotest.Pass:       {"TestA"},
		gotest.Fail:       {"TestB", "TestB/x_y"},
		gotest.Skip:       {"TestC"},
		gotest.Unfinished: {"TestD"},
	}
	if got := byStatus(r); !reflect.DeepEqual(got, want) {
		t.Errorf("statuses = %v, want %v", got, want)
	}
	if r.Tests[0].Elapsed != 250*time.Millisecond || r.Tests[0].Output[0] != "    a_test.go:3: hello" {
		t.Errorf("TestA = %+v", r.Tests[0])
	}
	if r.Final != "" || !strings.HasPrefix(r.Panic, "panic: runtime error") {
		t.Errorf("Final %q Panic %q; want no verdict and the panic line", r.Final, r.Panic)
	}
	if got := r.Tests[2].Output; len(got) != 1 || !strings.Contains(got[0], "boom") {
		t.Errorf("TestB/x_y output = %q, want the boom line", got)
	}
}

func TestFramedIgnoresLookalikes(t *testing.T) {
	out := "\x16=== RUN   TestA\n--- FAIL: TestFake (0.00s)\nno newline\x16--- PASS: TestA (0.00s)\n\x16PASS\n"
	r := gotest.Parse(out)
	if len(r.Tests) != 1 || r.Tests[0].Name != "TestA" || r.Tests[0].Status != gotest.Pass || r.Final != "PASS" {
		t.Fatalf("got %+v, want only TestA passing and verdict PASS", r)
	}
	if got := r.Tests[0].Output; !reflect.DeepEqual(got, []string{"--- FAIL: TestFake (0.00s)", "no newline"}) {
		t.Errorf("output = %q", got)
	}
}

func TestOutputBounded(t *testing.T) {
	var p gotest.Parser
	p.Line("=== RUN   TestChatty")
	for i := 0; i < 1000; i++ {
		p.Line("line")
	}
	r := p.Result()
	if n := len(r.Tests[0].Output); n != 200 || r.Tests[0].Dropped != 800 {
		t.Errorf("kept %d dropped %d, want 200 and 800", n, r.Tests[0].Dropped)
	}
}

func TestGarbage(t *testing.T) {
	for _, s := range []string{"", "---", "--- PASS: ", "--- FAIL: (1s)", "=== RUN", "=== RUN   ", "\x16", "\x16\x16--- SKIP: X (zz)", "=== NAME"} {
		r := gotest.Parse(s)
		for _, tt := range r.Tests {
			if tt.Name == "" {
				t.Errorf("Parse(%q) made a test with no name", s)
			}
		}
	}
	r := gotest.Parse("\x16--- SKIP: X (zz)")
	if len(r.Tests) != 1 || r.Tests[0].Name != "X (zz)" || r.Tests[0].Status != gotest.Skip {
		t.Errorf("result line with a bad time: %+v", r.Tests)
	}
}

// TestRealBinary runs the fixture package's test binary, whose outcomes its
// source fixes, in both verbose modes and with a hang that -test.timeout
// turns into a panic.
func TestRealBinary(t *testing.T) {
	goTool := testenv.RequireTool(t, "go")
	bin := filepath.Join(t.TempDir(), "fixture.test")
	build := testenv.Command(t, "go test -c ./testdata/fixture", goTool, "test", "-c", "-o", bin, "./testdata/fixture")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go test -c: %v\n%s", err, out)
	}
	run := func(env string, args ...string) gotest.Result {
		cmd := testenv.Command(t, "the fixture's test binary "+strings.Join(args, " "), bin, args...)
		cmd.Env = append(os.Environ(), env)
		out, err := cmd.CombinedOutput() // the timeout panic goes to stderr
		if errors.Is(err, testenv.ErrDeadline) {
			t.Fatal(err)
		}
		if err == nil {
			t.Fatalf("%v: the fixture has failing tests but exited 0", args)
		}
		return gotest.Parse(string(out))
	}

	want := map[gotest.Status][]string{
		gotest.Pass: {"TestHang", "TestLookalike", "TestParallel", "TestParallel/p1", "TestParallel/p2", "TestPass", "TestSub/ok"},
		gotest.Fail: {"TestFail", "TestSub", "TestSub/bad"},
		gotest.Skip: {"TestSkip", "TestSub/skipped"},
	}
	r := run("FIXTURE_HANG=", "-test.v=test2json")
	if got := byStatus(r); !reflect.DeepEqual(got, want) || r.Final != "FAIL" {
		t.Errorf("test2json mode: %v verdict %q, want %v verdict FAIL", got, r.Final, want)
	}

	// Plain -v cannot see a result glued to output without a newline, so
	// leave TestLookalike out.
	r = run("FIXTURE_HANG=", "-test.v", "-test.run", "Pass|Fail|Skip|Sub|Parallel")
	wantPlain := map[gotest.Status][]string{
		gotest.Pass: {"TestParallel", "TestParallel/p1", "TestParallel/p2", "TestPass", "TestSub/ok"},
		gotest.Fail: want[gotest.Fail],
		gotest.Skip: want[gotest.Skip],
	}
	if got := byStatus(r); !reflect.DeepEqual(got, wantPlain) || r.Final != "FAIL" {
		t.Errorf("plain mode: %v verdict %q, want %v verdict FAIL", got, r.Final, wantPlain)
	}

	r = run("FIXTURE_HANG=1", "-test.v=test2json", "-test.run", "Pass|Hang", "-test.timeout", "1s")
	wantHang := map[gotest.Status][]string{gotest.Pass: {"TestPass"}, gotest.Unfinished: {"TestHang"}}
	if got := byStatus(r); !reflect.DeepEqual(got, wantHang) || r.Final != "" || !strings.Contains(r.Panic, "timed out") {
		t.Errorf("hang: %v verdict %q panic %q, want %v, no verdict, a timeout panic", got, r.Final, r.Panic, wantHang)
	}
}

// A benchmark passes on its result line (go test prints no "--- PASS" for
// one), and its log lines do not count as the result.
func TestBenchmarkResult(t *testing.T) {
	out := "\x16=== RUN   BenchmarkSet\nBenchmarkSet\nBenchmarkSetup is not a result\n" +
		"BenchmarkSet-2   \t       1\t2108142045 ns/op\t       406.0 floor-all-ms\n\x16=== NAME  \n\x16PASS\n" +
		"\x16=== RUN   BenchmarkOther\nBenchmarkOther said something\n\x16--- FAIL: BenchmarkOther\n\x16FAIL\n"
	r := gotest.Parse(out)
	if len(r.Tests) != 2 {
		t.Fatalf("tests %+v, want BenchmarkSet and BenchmarkOther", r.Tests)
	}
	if b := r.Tests[0]; b.Status != gotest.Pass || !strings.HasPrefix(b.Bench, "BenchmarkSet-2 ") {
		t.Errorf("BenchmarkSet: %v, result %q; want PASS with its result line", b.Status, b.Bench)
	}
	if b := r.Tests[1]; b.Status != gotest.Fail || b.Bench != "" {
		t.Errorf("BenchmarkOther: %v, result %q; want FAIL without a result line", b.Status, b.Bench)
	}
}

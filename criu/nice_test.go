package criu

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/semundo/semundo/internal/testenv"
)

func TestMain(m *testing.M) {
	testenv.RunHelper(testenv.Helpers{"criu-yield": yieldHelper})
	os.Exit(m.Run())
}

// threadNices returns the nice value of every thread of this process.
func threadNices() (map[int]int, error) {
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, err
	}
	out := map[int]int{}
	for _, e := range ents {
		b, err := os.ReadFile("/proc/self/task/" + e.Name() + "/stat")
		if err != nil {
			continue // the thread exited
		}
		// Field 19 is nice; fields after the command name start at 3.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(f) < 19-2 {
			return nil, fmt.Errorf("stat of thread %s: %q", e.Name(), b)
		}
		n, err := strconv.Atoi(f[19-3])
		if err != nil {
			return nil, fmt.Errorf("stat of thread %s: %q", e.Name(), b)
		}
		tid, _ := strconv.Atoi(e.Name())
		out[tid] = n
	}
	return out, nil
}

// yieldHelper checks yieldCPU in a process of its own: per-thread
// credentials that other tests change on their locked threads (a thread
// of uid 65534 may not renice root's) cannot leak into it, as none do in
// the real helper.
func yieldHelper([]string) int {
	before, err := threadNices()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	restore := yieldCPU()
	bad := checkNices(before, func(int) int { return lowestNice }, "while yielding")
	restore()
	bad = append(bad, checkNices(before, func(old int) int { return old }, "after restore")...)
	for _, l := range bad {
		fmt.Println(l)
	}
	fmt.Printf("%d threads\n", len(before))
	if len(bad) > 0 {
		return 1
	}
	return 0
}

// checkNices reads every thread's nice now and names each thread of
// before whose nice is not want(its nice before).
func checkNices(before map[int]int, want func(old int) int, when string) []string {
	now, err := threadNices()
	if err != nil {
		return []string{err.Error()}
	}
	var bad []string
	for tid, n := range now {
		if old, ok := before[tid]; ok && n != want(old) {
			bad = append(bad, fmt.Sprintf("thread %d: nice %d %s, want %d", tid, n, when, want(old)))
		}
	}
	return bad
}

// TestYieldCPU: the helper's load runs at nice 19 on every thread, and
// its job at the priority it started with.
func TestYieldCPU(t *testing.T) {
	testenv.RequireRoot(t)
	cmd := testenv.HelperCommand(t, "criu-yield")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("yieldCPU in a process of its own: %v\n%s", err, out)
	}
	t.Logf("%s", bytes.TrimSpace(out))
}

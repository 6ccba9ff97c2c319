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
	status := 0
	restore := yieldCPU()
	during, err := threadNices()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	for tid, n := range during {
		if _, old := before[tid]; old && n != lowestNice {
			fmt.Printf("thread %d: nice %d while yielding, want %d\n", tid, n, lowestNice)
			status = 1
		}
	}
	restore()
	after, err := threadNices()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	for tid, n := range after {
		if want, old := before[tid]; old && n != want {
			fmt.Printf("thread %d: nice %d after restore, want %d as before\n", tid, n, want)
			status = 1
		}
	}
	fmt.Printf("%d threads\n", len(before))
	return status
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

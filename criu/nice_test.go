package criu

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/semundo/semundo/internal/testenv"
)

// threadNices returns the nice value of every thread of this process.
func threadNices(t *testing.T) map[int]int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]int{}
	for _, e := range ents {
		b, err := os.ReadFile("/proc/self/task/" + e.Name() + "/stat")
		if err != nil {
			continue // the thread exited
		}
		// Field 19 is nice; fields after the command name start at 3.
		f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		n, err := strconv.Atoi(f[19-3])
		if err != nil {
			t.Fatalf("stat of thread %s: %q", e.Name(), b)
		}
		tid, _ := strconv.Atoi(e.Name())
		out[tid] = n
	}
	return out
}

// TestYieldCPU: the helper's load runs at nice 19 on every thread, and
// its job at the priority it started with.
func TestYieldCPU(t *testing.T) {
	testenv.RequireRoot(t)
	before := threadNices(t)
	restore := yieldCPU()
	t.Cleanup(func() { setNice(0) })
	for tid, n := range threadNices(t) {
		if _, old := before[tid]; old && n != lowestNice {
			t.Errorf("thread %d: nice %d while yielding, want %d", tid, n, lowestNice)
		}
	}
	restore()
	for tid, n := range threadNices(t) {
		if want, old := before[tid]; old && n != want {
			t.Errorf("thread %d: nice %d after restore, want %d as before", tid, n, want)
		}
	}
}

package checkpoint_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/semundo/semundo/checkpoint"
	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
)

// cgroup2Root returns where the cgroup v2 hierarchy is mounted.
func cgroup2Root(t *testing.T) string { return testenv.Cgroup2Root(t) }

// TestCaptureCgroup: with CaptureOptions.Cgroup the processes are frozen
// with the cgroup v2 freezer, and thawed after.
func TestCaptureCgroup(t *testing.T) {
	r := openReader(t)
	root := cgroup2Root(t)
	dir := filepath.Join(root, fmt.Sprintf("semundo-test-%d", os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	s := holder.NewSet(t, 2)
	h := holder.Start(t, "wait", []holder.Op{{Semid: s, Num: 1, Val: 3, Undo: true}}, nil)
	t.Cleanup(func() {
		// Out of the cgroup (and thawed) before it can be removed.
		os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte("0"), 0)
		os.WriteFile(filepath.Join(root, "cgroup.procs"), []byte(fmt.Sprint(h.PID)), 0)
		if !testenv.Until(testenv.Patience, func() bool { return os.Remove(dir) == nil }) {
			t.Errorf("cgroup %s still there %v after its process left it", dir, testenv.Patience)
		}
	})
	if _, err := os.Stat(filepath.Join(dir, "cgroup.freeze")); err != nil {
		testenv.Missing(t, "the cgroup v2 freezer (Linux >= 5.2)", err.Error())
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(fmt.Sprint(h.PID)), 0); err != nil {
		t.Fatal(err)
	}
	img, err := checkpoint.Capture(r, checkpoint.CaptureOptions{PIDs: []int{h.PID}, Cgroup: dir, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	l := img.ListOf(int32(h.PID))
	if l == nil || len(l.Entries) != 1 || l.Entries[0].Adj[1] != -3 {
		t.Fatalf("image list of %d: %+v", h.PID, l)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "cgroup.freeze")); strings.TrimSpace(string(b)) != "0" {
		t.Fatalf("cgroup still frozen after the capture: cgroup.freeze %q", b)
	}
	if ev, _ := os.ReadFile(filepath.Join(dir, "cgroup.events")); !strings.Contains(string(ev), "frozen 0") {
		t.Fatalf("cgroup.events after the capture: %q", ev)
	}
	// A cgroup that is not a v2 cgroup is a clear error.
	if _, err := checkpoint.Capture(r, checkpoint.CaptureOptions{PIDs: []int{h.PID}, Cgroup: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "freezer") {
		t.Fatalf("capture with a non-cgroup directory: %v", err)
	}
}

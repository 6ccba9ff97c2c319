package checkpoint

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/semundo/semundo/internal/procfs"
)

// fixtureProc writes a small /proc tree under a temporary directory: a
// process 100 with a second thread 101, and a kernel thread 102. It is
// written here rather than read from internal/procfs/testdata because the
// kernel matrix runs this package's test binary with its own directory
// only.
func fixtureProc(t *testing.T) procfs.FS {
	t.Helper()
	root := t.TempDir()
	status := func(tgid, pid, ppid int) string {
		return fmt.Sprintf("Name:\tcat\nState:\tS (sleeping)\nTgid:\t%d\nPid:\t%d\nPPid:\t%d\nTracerPid:\t0\n"+
			"Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\nNSpid:\t%d\nCapEff:\t000001ffffffffff\n", tgid, pid, ppid, pid)
	}
	// Field 9 of stat holds the flags: 0x200000 is PF_KTHREAD.
	stat := func(pid int, comm string, state byte, ppid int, flags uint) string {
		return fmt.Sprintf("%d (%s) %c %d %d 0 0 -1 %d 0 0 0 0 0 0 0 0 20 0 1 0 12 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
			pid, comm, state, ppid, pid, flags)
	}
	files := map[string]string{
		"100/status":          status(100, 100, 1),
		"100/stat":            stat(100, "cat", 'S', 1, 0x400000),
		"100/task/100/status": status(100, 100, 1),
		"100/task/100/stat":   stat(100, "cat", 'S', 1, 0x400000),
		"100/task/101/status": status(100, 101, 1),
		"100/task/101/stat":   stat(101, "cat", 'S', 1, 0x400040),
		"101/status":          status(100, 101, 1),
		"101/stat":            stat(101, "cat", 'S', 1, 0x400040),
		"102/status":          status(102, 102, 2),
		"102/stat":            stat(102, "kworker/0:1", 'I', 2, 0x4208060),
	}
	for name, text := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return procfs.NewFS(root)
}

// TestProcessOfFixtures resolves pids against a fixture tree: a thread id
// names its process, a kernel thread and a missing pid are refused.
func TestProcessOfFixtures(t *testing.T) {
	fixture := fixtureProc(t)
	for pid, want := range map[int]int{100: 100, 101: 100} {
		if got, err := processOf(fixture, pid); err != nil || got != want {
			t.Errorf("processOf(%d) = %d, %v; want %d", pid, got, err, want)
		}
	}
	if _, err := processOf(fixture, 102); err == nil || !strings.Contains(err.Error(), "kernel thread") {
		t.Errorf("processOf of a kworker: %v, want a kernel-thread refusal", err)
	}
	if _, err := processOf(fixture, 999); !errors.Is(err, ErrNoProcess) {
		t.Errorf("processOf of no process: %v, want ErrNoProcess", err)
	}
}

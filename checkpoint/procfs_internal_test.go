package checkpoint

import (
	"errors"
	"strings"
	"testing"

	"github.com/semundo/semundo/internal/procfs"
)

// TestProcessOfFixtures resolves pids against procfs's fixture trees: a
// thread id names its process, a kernel thread and a missing pid are
// refused.
func TestProcessOfFixtures(t *testing.T) {
	fixture := procfs.NewFS("../internal/procfs/testdata/proc")
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

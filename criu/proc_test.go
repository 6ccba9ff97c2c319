package criu

import (
	"bufio"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"testing"

	"github.com/semundo/semundo/internal/testenv"

	"github.com/semundo/semundo/internal/procfs"
)

// TestWalkTreeFixture walks procfs's fixture tree, whose root 200 is pid 1
// of its own PID namespace: every process comes with its pid there.
func TestWalkTreeFixture(t *testing.T) {
	fixture := procfs.NewFS("../internal/procfs/testdata/tree")
	got, err := walkTree(fixture, 200)
	want := []proc{{200, 1}, {201, 2}, {202, 3}, {205, 4}, {210, 5}}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("walkTree(200) = %v, %v; want %v", got, err, want)
	}
	// A root at the top namespace level keeps host pids.
	got, err = walkTree(fixture, 300)
	if want := []proc{{300, 300}, {301, 301}}; err != nil || !slices.Equal(got, want) {
		t.Errorf("walkTree(300) = %v, %v; want %v", got, err, want)
	}
	if _, err := walkTree(fixture, 999); err == nil {
		t.Errorf("walkTree of no process succeeded")
	}
	// The fixture has no children files: walkHeld falls back to walkTree.
	got, err = walkHeld(fixture, 200)
	if want := []proc{{200, 1}, {201, 2}, {202, 3}, {205, 4}, {210, 5}}; err != nil || !slices.Equal(got, want) {
		t.Errorf("walkHeld(200) = %v, %v; want %v", got, err, want)
	}
}

// TestWalkHeldLive: on a live tree (a shell with two children, one with a
// child of its own) walkHeld, from the children files, finds what
// walkTree finds from every process's ppid.
func TestWalkHeldLive(t *testing.T) {
	if _, err := os.Stat("/proc/self/task/" + strconv.Itoa(os.Getpid()) + "/children"); err != nil {
		testenv.Missing(t, "/proc/PID/task/TID/children (CONFIG_PROC_CHILDREN)", err.Error())
	}
	cmd := exec.Command("sh", "-c", "sleep 60 & sh -c 'sleep 60 & wait' & echo ready; wait")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		killDescendants(cmd.Process.Pid)
		cmd.Process.Kill()
		cmd.Wait()
	})
	bufio.NewReader(out).ReadString('\n')
	var want []proc
	testenv.Eventually(t, "the shell's 3 descendants", func() bool {
		want, err = walkTree(live, cmd.Process.Pid)
		return err == nil && len(want) == 4
	})
	got, err := walkHeld(live, cmd.Process.Pid)
	slices.SortFunc(got, func(a, b proc) int { return a.pid - b.pid })
	slices.SortFunc(want, func(a, b proc) int { return a.pid - b.pid })
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("walkHeld = %v, %v; walkTree found %v", got, err, want)
	}
	// From this Go process, whose threads each have a children file: the
	// shell may have been forked by any of them.
	self := os.Getpid()
	want, err = walkTree(live, self)
	if err != nil {
		t.Fatal(err)
	}
	got, err = walkHeld(live, self)
	slices.SortFunc(got, func(a, b proc) int { return a.pid - b.pid })
	slices.SortFunc(want, func(a, b proc) int { return a.pid - b.pid })
	if err != nil || !slices.Equal(got, want) || len(got) < 5 {
		t.Errorf("walkHeld(self) = %v, %v; walkTree found %v (want self and the shell's tree)", got, err, want)
	}
}

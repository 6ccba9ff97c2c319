package procfs

import (
	"errors"
	"os"
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"
)

// tree is a process tree: 1 -> 200 -> {201 -> 205 -> 210, 202}, with 200
// and its descendants in a PID namespace of their own; 1 -> 300 -> 301 (a
// zombie) and 1 -> 400 (a status without NSpid) beside it.
var tree = NewFS("testdata/tree")

func TestDescendantsFixtures(t *testing.T) {
	for _, c := range []struct {
		roots []int
		want  []int
	}{
		{[]int{200}, []int{201, 202, 205, 210}}, // breadth first
		{[]int{201}, []int{205, 210}},
		{[]int{210}, nil},        // a leaf
		{[]int{300}, []int{301}}, // a zombie is still a child
		{[]int{200, 300}, []int{201, 202, 301, 205, 210}},
		{[]int{200, 205}, []int{201, 202, 210}}, // a root is never its own descendant
		{[]int{999}, nil},                       // no such process: nothing below it
	} {
		got, err := tree.Descendants(c.roots...)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("Descendants(%v) = %v, %v; want %v", c.roots, got, err, c.want)
		}
	}
	// A walk that meets a malformed stat cannot be trusted.
	if _, err := fixtures.Descendants(100); !errors.Is(err, ErrMalformed) {
		t.Errorf("Descendants over a malformed stat: %v, want ErrMalformed", err)
	}
	if _, err := NewFS("testdata/nonexistent").Descendants(1); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Descendants without a mount point: %v, want ErrNotExist", err)
	}
}

func TestNSpidFixtures(t *testing.T) {
	for pid, want := range map[int][]int{1: {1}, 200: {200, 1}, 210: {210, 5}, 300: {300}} {
		if got, err := tree.NSpid(pid); err != nil || !slices.Equal(got, want) {
			t.Errorf("NSpid(%d) = %v, %v; want %v", pid, got, err, want)
		}
	}
	if got, err := tree.NSpid(400); !errors.Is(err, ErrMalformed) {
		t.Errorf("NSpid of a status without the line = %v, %v; want ErrMalformed", got, err)
	}
	if _, err := tree.NSpid(999); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("NSpid of no process: %v, want ESRCH", err)
	}
	st, err := tree.SelfStatus()
	if err != nil || !slices.Equal(st.NSpid, []int{5000, 70, 7}) || st.Tgid != 7 {
		t.Errorf("SelfStatus() = %+v, %v; want NSpid [5000 70 7], Tgid 7", st, err)
	}
	if _, err := fixtures.SelfStatus(); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("SelfStatus without a self directory: %v, want ErrNotExist", err)
	}
}

// The live /proc: this test binary is a descendant of its parent, and its
// NSpid starts with its own pid; the zero FS reads /proc.
func TestTreeLive(t *testing.T) {
	var p FS
	desc, err := p.Descendants(os.Getppid())
	if err != nil || !slices.Contains(desc, os.Getpid()) {
		t.Errorf("Descendants(parent) = %v, %v; lacks %d", desc, err, os.Getpid())
	}
	ns, err := p.NSpid(os.Getpid())
	if err != nil || ns[0] != os.Getpid() {
		t.Errorf("NSpid(self) = %v, %v", ns, err)
	}
	st, err := p.SelfStatus()
	if err != nil || !slices.Equal(st.NSpid, ns) {
		t.Errorf("SelfStatus().NSpid = %v, %v; want %v", st.NSpid, err, ns)
	}
}

// TestChildrenLive checks the children files against the processes this
// test starts: one child of its own that is single-threaded (sh, read by
// ThreadChildren) with two children of its own.
func TestChildrenLive(t *testing.T) {
	var p FS
	cmd := exec.Command("sh", "-c", "sleep 60 & sleep 60 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Process.Kill()
		cmd.Wait()
	})
	sh := cmd.Process.Pid
	var kids []int
	for i := 0; i < 500 && len(kids) < 2; i++ {
		time.Sleep(10 * time.Millisecond)
		var err error
		if kids, err = p.ThreadChildren(sh); err != nil {
			t.Fatalf("ThreadChildren(%d): %v", sh, err)
		}
	}
	if len(kids) != 2 {
		t.Fatalf("ThreadChildren(sh %d) = %v, want its two sleeps", sh, kids)
	}
	t.Cleanup(func() {
		for _, k := range kids {
			syscall.Kill(k, syscall.SIGKILL)
		}
	})
	all, err := p.TaskChildren(sh)
	if err != nil || !slices.Equal(all, kids) {
		t.Errorf("TaskChildren(%d) = %v, %v; ThreadChildren said %v", sh, all, err, kids)
	}
	st, err := p.Status(sh)
	if err != nil || st.Threads != 1 {
		t.Errorf("Status(sh %d).Threads = %d, %v; want 1", sh, st.Threads, err)
	}
	mine, err := p.TaskChildren(os.Getpid())
	if err != nil || !slices.Contains(mine, sh) {
		t.Errorf("TaskChildren(self) = %v, %v; lacks %d (read from every thread of this Go process)", mine, err, sh)
	}
	tids, err := p.Tasks(os.Getpid())
	if err != nil || len(tids) < 2 || !slices.IsSorted(tids) {
		t.Errorf("Tasks(self) = %v, %v: want this Go process's threads, sorted", tids, err)
	}
	if _, err := p.ThreadChildren(999999999); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("ThreadChildren of no process: %v, want ESRCH", err)
	}
}

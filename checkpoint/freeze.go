package checkpoint

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/semundo/semundo/internal/procfs"
	"golang.org/x/sys/unix"
)

// freezer stops a group of processes and lets them go again.
type freezer interface {
	freeze() error
	thaw() error
}

// cgroupFreezer uses the cgroup v2 freezer of one cgroup.
type cgroupFreezer struct {
	dir    string
	frozen bool // already frozen before: leave it so
	wrote  bool // freeze wrote cgroup.freeze: thaw must undo it
}

// stopTimeout bounds the wait for processes to stop (SIGSTOP) or a cgroup
// to freeze.
const stopTimeout = 5 * time.Second

func (f *cgroupFreezer) freeze() error {
	b, err := os.ReadFile(filepath.Join(f.dir, "cgroup.freeze"))
	if err != nil {
		return fmt.Errorf("cgroup %s: no cgroup v2 freezer (%w): pass a cgroup v2 directory, or leave out --cgroup to use SIGSTOP", f.dir, err)
	}
	f.frozen = strings.TrimSpace(string(b)) == "1"
	if f.frozen {
		return nil
	}
	if err := os.WriteFile(filepath.Join(f.dir, "cgroup.freeze"), []byte("1"), 0); err != nil {
		return fmt.Errorf("freeze cgroup %s: %w", f.dir, err)
	}
	f.wrote = true
	// The write returns before every task has stopped: cgroup.events says
	// when.
	deadline := time.Now().Add(stopTimeout)
	for {
		ev, err := os.ReadFile(filepath.Join(f.dir, "cgroup.events"))
		if err != nil {
			return fmt.Errorf("cgroup %s: %w", f.dir, err)
		}
		if bytes.Contains(ev, []byte("frozen 1")) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s did not freeze within %v (a task in uninterruptible sleep?)", f.dir, stopTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

func (f *cgroupFreezer) thaw() error {
	if f.frozen || !f.wrote {
		return nil
	}
	if err := os.WriteFile(filepath.Join(f.dir, "cgroup.freeze"), []byte("0"), 0); err != nil {
		return fmt.Errorf("thaw cgroup %s: %w", f.dir, err)
	}
	return nil
}

// signalFreezer stops processes with SIGSTOP and continues with SIGCONT
// only those that were not stopped already.
type signalFreezer struct {
	pids []int
	// stopped: in group-stop before the freeze (filled by freeze unless
	// the caller knows already).
	stopped map[int]bool
	sent    []int
}

func (f *signalFreezer) freeze() error {
	if f.stopped == nil {
		f.stopped = map[int]bool{}
		for _, pid := range f.pids {
			st, err := procState(pid)
			if err != nil {
				return err
			}
			f.stopped[pid] = st == 'T'
		}
	}
	for _, pid := range f.pids {
		if f.stopped[pid] {
			continue
		}
		if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
			return fmt.Errorf("stop pid %d: %w", pid, err)
		}
		f.sent = append(f.sent, pid)
	}
	// SIGSTOP takes effect when each thread next leaves the kernel: wait
	// until every thread reports stopped.
	for _, pid := range f.sent {
		if err := waitStopped(pid); err != nil {
			return err
		}
	}
	return nil
}

func (f *signalFreezer) thaw() error {
	var errs []error
	for _, pid := range f.sent {
		if err := unix.Kill(pid, unix.SIGCONT); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("continue pid %d: %w", pid, err))
		}
	}
	return errors.Join(errs...)
}

// waitStopped waits until every thread of pid is in group-stop (or pid is
// gone).
func waitStopped(pid int) error {
	p := procfs.NewDefaultFS()
	deadline := time.Now().Add(stopTimeout)
	for {
		// One read answers for a single-threaded process, the usual case.
		st, err := p.Stat(pid)
		if err != nil {
			return nil // exited: nothing left to capture
		}
		if st.NumThreads == 1 && (st.State == 'T' || st.State == 't') {
			return nil
		}
		tids, err := p.Tasks(pid)
		if err != nil {
			return nil // exited: nothing left to capture
		}
		all := true
		for _, tid := range tids {
			st, err := p.TaskStat(pid, tid)
			if err == nil && st.State != 'T' && st.State != 't' && !st.Dead() {
				all = false
				break
			}
		}
		if all {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d did not stop within %v of SIGSTOP (blocked in uninterruptible sleep?): retry when it is not", pid, stopTimeout)
		}
		// A stop takes microseconds: poll finely.
		time.Sleep(100 * time.Microsecond)
	}
}

// procState returns the state letter of /proc/pid/stat.
func procState(pid int) (byte, error) {
	st, err := procfs.NewDefaultFS().Stat(pid)
	return st.State, err
}

// descendants returns pid's descendants (children, grandchildren, ...),
// from the ppid field of every process.
func descendants(roots []int) ([]int, error) {
	children, err := procfs.NewDefaultFS().Children()
	if err != nil {
		return nil, err
	}
	seen := map[int]bool{}
	var out []int
	queue := append([]int(nil), roots...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
				queue = append(queue, c)
			}
		}
	}
	return out, nil
}

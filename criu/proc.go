package criu

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"

	"github.com/semundo/semundo/internal/par"
	"github.com/semundo/semundo/internal/procfs"
)

// proc is one process of a tree.
type proc struct {
	pid  int // in semundo's PID namespace (the directory name under /proc)
	vpid int // in the tree root's PID namespace
}

// walkTree returns root and all its descendants, root first, each with its
// pid in root's PID namespace. CRIU dumps exactly this set of processes.
func walkTree(p procfs.FS, root int) ([]proc, error) { return walk(p, root, false) }

// walkHeld is walkTree for a tree that CRIU holds frozen (post-dump) or
// stopped (post-resume), or that at least does not fork meanwhile: it
// reads the tree's own children files instead of every process's stat,
// which on a host of thousands of processes took most of post-dump's
// time. Without those files (CONFIG_PROC_CHILDREN) it is walkTree.
func walkHeld(p procfs.FS, root int) ([]proc, error) { return walk(p, root, true) }

func walk(p procfs.FS, root int, held bool) ([]proc, error) {
	if _, err := p.Stat(root); err != nil {
		return nil, fmt.Errorf("root of the tree, pid %d: %w", root, syscall.ESRCH)
	}
	rootNS, err := p.NSpid(root)
	if err != nil {
		return nil, err
	}
	level := len(rootNS) - 1
	if held {
		if out, err := heldTree(p, root, level); err == nil {
			return out, nil
		}
	}
	desc, err := p.Descendants(root)
	if err != nil {
		return nil, err
	}
	pids := append([]int{root}, desc...)
	out := make([]proc, 0, len(pids))
	for _, pid := range pids {
		ns, err := nspids(p, pid)
		if errors.Is(err, syscall.ESRCH) && pid != root {
			continue // exited since the walk
		}
		if err != nil {
			return nil, err
		}
		if out, err = appendProc(out, pid, ns, level, root); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// appendProc appends pid, whose NSpid is ns, to out, with its pid at the
// root's level.
func appendProc(out []proc, pid int, ns []int, level, root int) ([]proc, error) {
	if len(ns) <= level {
		return nil, fmt.Errorf("pid %d is in a PID namespace above that of its ancestor %d", pid, root)
	}
	return append(out, proc{pid: pid, vpid: ns[level]}), nil
}

// heldTree returns root and its descendants, breadth first, from their
// parents' children files. One status per process gives both its pid in
// the root's namespace and its thread count: a process of one thread has
// one children file, read without listing its task directory. Each level
// of the tree is read by one goroutine per CPU: CRIU waits, the tree
// frozen or stopped, while semundo walks it (BenchmarkTree100).
func heldTree(p procfs.FS, root, level int) ([]proc, error) {
	type visit struct {
		st   procfs.Status
		kids []int
		err  error
	}
	seen := map[int]bool{root: true}
	var out []proc
	for pids := []int{root}; len(pids) > 0; {
		visits := make([]visit, len(pids))
		eachParallel(len(pids), func(i int) {
			v := &visits[i]
			v.st, v.err = p.StatusNSpid(pids[i])
			if v.err != nil {
				return
			}
			if v.st.Threads == 1 {
				v.kids, v.err = p.ThreadChildren(pids[i])
			} else {
				v.kids, v.err = p.TaskChildren(pids[i])
			}
		})
		var next []int
		for i, pid := range pids {
			v := visits[i]
			if errors.Is(v.err, syscall.ESRCH) && pid != root {
				continue // exited since its parent's file was read
			}
			if v.err != nil {
				return nil, v.err
			}
			var err error
			if out, err = appendProc(out, pid, v.st.NSpid, level, root); err != nil {
				return nil, err
			}
			for _, c := range v.kids {
				if !seen[c] {
					seen[c] = true
					next = append(next, c)
				}
			}
		}
		pids = next
	}
	return out, nil
}

// workers is how many goroutines a loop of n /proc reads gets: one per
// CPU when n is large enough to pay for them.
func workers(n int) int {
	const perWorker = 16
	return min(runtime.GOMAXPROCS(0), n/perWorker)
}

// eachParallel calls f(0) to f(n-1) on workers(n) goroutines.
func eachParallel(n int, f func(int)) { par.Each(n, workers(n), f) }

// mapParallel is par.Map on workers(n) goroutines.
func mapParallel[T any](n int, f func(int) (T, error)) ([]T, error) { return par.Map(n, workers(n), f) }

// nspids returns pid's pid in each PID namespace from /proc's down to its
// own.
func nspids(p procfs.FS, pid int) ([]int, error) { return p.NSpid(pid) }

// runState is how far a restored process is from running.
type runState int

const (
	stateRunning  runState = iota // no thread stopped, no SIGSTOP pending
	stateStopping                 // SIGSTOP pending or part of its threads stopped
	stateStopped                  // every thread in group-stop
	stateGone                     // exited, or a zombie
)

// sigstopBit is SIGSTOP's bit in the pending masks of /proc/PID/status.
const sigstopBit = 1 << (syscall.SIGSTOP - 1)

// processState tells whether every thread of pid is in group-stop.
func processState(p procfs.FS, pid int) (runState, error) {
	st, _, err := processStateParent(p, pid)
	return st, err
}

// processStateParent is processState, and pid's parent (0 when it is
// gone).
func processStateParent(p procfs.FS, pid int) (runState, int, error) {
	// A process of one thread (most of a restored tree) is told by its
	// stat alone, whose state and thread count are read together; listing
	// its task directory cost twice as much (BenchmarkTree100).
	st, err := p.Stat(pid)
	if errors.Is(err, syscall.ESRCH) {
		return stateGone, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	rs, err := threadsState(p, pid, st)
	return rs, st.PPID, err
}

// threadsState is processState for pid, whose stat is st.
func threadsState(p procfs.FS, pid int, st procfs.Stat) (runState, error) {
	threads := []procfs.Thread{{TID: pid, Stat: st}}
	if st.NumThreads != 1 || st.Dead() {
		// A dead leader may have live threads: ask each.
		var err error
		if threads, err = p.Threads(pid); err != nil {
			if errors.Is(err, syscall.ESRCH) {
				return stateGone, nil
			}
			return 0, err
		}
	}
	stopped, live := 0, 0
	for _, th := range threads {
		switch th.Stat.State {
		case 'Z', 'X', 'x':
			continue
		case 'T':
			stopped++
		}
		live++
	}
	switch {
	case live == 0:
		return stateGone, nil
	case stopped == live:
		return stateStopped, nil
	case stopped > 0:
		return stateStopping, nil
	}
	pending, err := stopPending(p, pid)
	if err != nil {
		return 0, err
	}
	if pending {
		return stateStopping, nil
	}
	return stateRunning, nil
}

// stopPending reports whether SIGSTOP waits in pid's shared or main
// thread's pending set (CRIU sends it just before it detaches).
func stopPending(p procfs.FS, pid int) (bool, error) {
	st, err := p.Status(pid)
	if err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return false, nil
		}
		return false, err
	}
	return (st.SigPnd|st.ShdPnd)&sigstopBit != 0, nil
}

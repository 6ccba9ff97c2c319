package criu

import (
	"errors"
	"fmt"
	"syscall"

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
	var desc []int
	if held {
		desc, err = heldDescendants(p, root)
	}
	if !held || err != nil {
		desc, err = p.Descendants(root)
	}
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
		if len(ns) <= level {
			return nil, fmt.Errorf("pid %d is in a PID namespace above that of its ancestor %d", pid, root)
		}
		out = append(out, proc{pid: pid, vpid: ns[level]})
	}
	return out, nil
}

// heldDescendants returns root's descendants, breadth first, from their
// parents' children files.
func heldDescendants(p procfs.FS, root int) ([]int, error) {
	seen := map[int]bool{root: true}
	var out []int
	queue := []int{root}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		kids, err := p.TaskChildren(pid)
		if errors.Is(err, syscall.ESRCH) && pid != root {
			continue // exited since its parent's file was read
		}
		if err != nil {
			return nil, err
		}
		for _, c := range kids {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
				queue = append(queue, c)
			}
		}
	}
	return out, nil
}

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
	threads, err := p.Threads(pid)
	if err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return stateGone, nil
		}
		return 0, err
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

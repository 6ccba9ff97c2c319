package criu

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// procDir is where the process tree is read; the tests keep the default.
const procDir = "/proc"

// proc is one process of a tree.
type proc struct {
	pid  int // in semundo's PID namespace (the directory name under /proc)
	vpid int // in the tree root's PID namespace
}

// walkTree returns root and all its descendants, root first, each with its
// pid in root's PID namespace. CRIU dumps exactly this set of processes.
func walkTree(root int) ([]proc, error) {
	if _, err := os.Stat(fmt.Sprintf("%s/%d", procDir, root)); err != nil {
		return nil, fmt.Errorf("root of the tree, pid %d: %w", root, syscall.ESRCH)
	}
	ents, err := os.ReadDir(procDir)
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue // exited meanwhile
		}
		children[st.ppid] = append(children[st.ppid], pid)
	}
	rootNS, err := nspids(root)
	if err != nil {
		return nil, err
	}
	level := len(rootNS) - 1
	pids := []int{root}
	for i := 0; i < len(pids); i++ {
		kids := children[pids[i]]
		slices.Sort(kids)
		pids = append(pids, kids...)
	}
	out := make([]proc, 0, len(pids))
	for _, pid := range pids {
		ns, err := nspids(pid)
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

// nspids returns the NSpid field of pid's status: its pid in each PID
// namespace from /proc's down to its own.
func nspids(pid int) ([]int, error) {
	f, err := os.Open(fmt.Sprintf("%s/%d/status", procDir, pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("pid %d: %w", pid, syscall.ESRCH)
		}
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "NSpid:")
		if !ok {
			continue
		}
		var out []int
		for _, s := range strings.Fields(v) {
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("pid %d: malformed NSpid line %q", pid, v)
			}
			out = append(out, n)
		}
		if len(out) == 0 {
			break
		}
		return out, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	// Kernels before 4.1 lack NSpid; semundo needs 5.8.
	return nil, fmt.Errorf("pid %d: no NSpid line in its status", pid)
}

// stat is what the companion reads from /proc/PID/stat.
type stat struct {
	state byte
	ppid  int
	start uint64 // start time in clock ticks after boot
}

func readStat(pid int) (stat, error) {
	return parseStat(fmt.Sprintf("%s/%d/stat", procDir, pid))
}

func parseStat(path string) (stat, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return stat{}, fmt.Errorf("%s: %w", path, syscall.ESRCH)
		}
		return stat{}, err
	}
	// The command name may hold spaces and parentheses: the fields
	// follow the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return stat{}, fmt.Errorf("%s: malformed", path)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 || len(f[0]) != 1 {
		return stat{}, fmt.Errorf("%s: malformed", path)
	}
	var st stat
	st.state = f[0][0]
	if st.ppid, err = strconv.Atoi(f[1]); err != nil {
		return stat{}, fmt.Errorf("%s: malformed ppid", path)
	}
	if st.start, err = strconv.ParseUint(f[19], 10, 64); err != nil {
		return stat{}, fmt.Errorf("%s: malformed start time", path)
	}
	return st, nil
}

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
func processState(pid int) (runState, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("%s/%d/task", procDir, pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return stateGone, nil
		}
		return 0, err
	}
	stopped, live := 0, 0
	for _, t := range tasks {
		st, err := parseStat(fmt.Sprintf("%s/%d/task/%s/stat", procDir, pid, t.Name()))
		if err != nil {
			continue // thread exited meanwhile
		}
		switch st.state {
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
	pending, err := stopPending(pid)
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
func stopPending(pid int) (bool, error) {
	b, err := os.ReadFile(fmt.Sprintf("%s/%d/status", procDir, pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "SigPnd" && k != "ShdPnd") {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return false, fmt.Errorf("pid %d: malformed %s line", pid, k)
		}
		if mask&sigstopBit != 0 {
			return true, nil
		}
	}
	return false, nil
}

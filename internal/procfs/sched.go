package procfs

import (
	"bytes"
	"fmt"
	"strconv"
)

// Running is what TaskSyscall returns for a thread that is on a CPU (the
// kernel writes "running"): it sits in no system call that can be named.
const Running = -2

// TaskSyscall returns the number of the system call thread tid of process
// pid sits in (/proc/PID/task/TID/syscall), -1 when it is in user space,
// or Running.
func (p FS) TaskSyscall(pid, tid int) (int, error) {
	b, path, err := p.read(pid, "task", strconv.Itoa(tid), "syscall")
	if err != nil {
		return 0, err
	}
	f := bytes.Fields(b)
	if len(f) == 0 {
		return 0, fmt.Errorf("%s: empty: %w", path, ErrMalformed)
	}
	if string(f[0]) == "running" {
		return Running, nil
	}
	n, err := strconv.Atoi(string(f[0]))
	if err != nil {
		return 0, fmt.Errorf("%s: %q: %w", path, f[0], ErrMalformed)
	}
	return n, nil
}

// TaskSwitches returns how many times thread tid of process pid has left
// a CPU (voluntary_ctxt_switches + nonvoluntary_ctxt_switches of its
// status): a thread that did not run between two calls returns the same
// number.
func (p FS) TaskSwitches(pid, tid int) (uint64, error) {
	b, path, err := p.read(pid, "task", strconv.Itoa(tid), "status")
	if err != nil {
		return 0, err
	}
	return ParseSwitches(b, path)
}

// ParseSwitches parses the context switch counts of a status file (path
// names it in errors).
func ParseSwitches(b []byte, path string) (uint64, error) {
	var sum uint64
	found := 0
	for line := range bytes.Lines(b) {
		k, v, ok := bytes.Cut(line, []byte(":"))
		if !ok || (string(k) != "voluntary_ctxt_switches" && string(k) != "nonvoluntary_ctxt_switches") {
			continue
		}
		n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %s: %w", path, bytes.TrimSpace(line), ErrMalformed)
		}
		sum += n
		found++
	}
	if found != 2 {
		return 0, fmt.Errorf("%s: no context switch counts: %w", path, ErrMalformed)
	}
	return sum, nil
}

package writer

import (
	"errors"
	"fmt"
	"os"

	"github.com/semundo/semundo/inject"
	"github.com/semundo/semundo/internal/procfs"
	"golang.org/x/sys/unix"
)

// ErrOwnList: the target holds the writer's own undo list (it is the
// writer, one of its threads, or a task cloned with CLONE_SYSVSEM), which
// the kernel applies when the writer exits: the write would not last, and
// the values would move when it exits.
var ErrOwnList = errors.New("semundo's own undo list would be applied when it exits")

// kcmpSysvsem is KCMP_SYSVSEM (include/uapi/linux/kcmp.h), which x/sys
// lacks: it compares two tasks' undo lists.
const kcmpSysvsem = 6

// CheckTarget refuses, before anything changes, a target that a write
// cannot serve: the calling process, any of its threads, or a process
// sharing its undo list; the same for each pid in callers (a helper passes
// the process that asked it to write); and a target traced by another
// process (a debugger, strace), which ptrace would refuse anyway, with a
// misleading EPERM.
//
// Sharing is told by kcmp(KCMP_SYSVSEM), which also calls two tasks
// without a list equal; a Go process always has one (its runtime's
// threads are cloned with CLONE_SYSVSEM). Where the kernel does not let the
// caller compare (it needs the right to read the target), ptrace will not
// let it write either, so that case is left to ptrace.
func CheckTarget(pid int, callers ...int) error {
	st, err := procfs.NewDefaultFS().Status(pid)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return targetErrorf(pid, "pid %d: %w", pid, inject.ErrNoProcess)
		}
		return targetErrorf(pid, "pid %d: %w", pid, err)
	}
	self := os.Getpid()
	for _, c := range append([]int{self}, callers...) {
		if c <= 0 {
			continue
		}
		what := ""
		switch {
		case pid == c:
			what = "is semundo itself"
		case st.Tgid == c:
			what = fmt.Sprintf("is a thread of semundo (pid %d)", c)
		case sameList(c, pid):
			what = fmt.Sprintf("shares the undo list of semundo (pid %d)", c)
		}
		if what != "" {
			return targetErrorf(pid, "pid %d %s; use `semundo exec --undo FILE -- CMD` instead: %w", pid, what, ErrOwnList)
		}
	}
	if st.TracerPid != 0 {
		tracer := st.TracerPid
		if ts, err := procfs.NewDefaultFS().Status(tracer); err == nil {
			tracer = ts.Tgid
		}
		if tracer != self {
			comm := "?"
			if ts, err := procfs.NewDefaultFS().Stat(tracer); err == nil {
				comm = ts.Comm
			}
			return targetErrorf(pid, "pid %d is traced by pid %d (%s): detach that debugger or strace first: %w", pid, tracer, comm, inject.ErrAlreadyTraced)
		}
	}
	return nil
}

// sameList reports whether tasks a and b share an undo list, as far as
// the kernel lets the caller compare them.
func sameList(a, b int) bool {
	r, _, errno := unix.Syscall6(unix.SYS_KCMP, uintptr(a), uintptr(b), kcmpSysvsem, 0, 0, 0)
	return errno == 0 && r == 0
}

// TargetError is a failure in one target process whose text already names
// its pid. Together with *inject.OpError, which names its pid too, it is
// every error Inject returns, so callers never add the pid a second time.
type TargetError struct {
	PID int   // the target's pid
	Err error // the failure, its text naming PID
}

func (e *TargetError) Error() string { return e.Err.Error() }

// Unwrap returns the failure.
func (e *TargetError) Unwrap() error { return e.Err }

// targetErrorf formats an error that names pid (the format must).
func targetErrorf(pid int, format string, a ...any) error {
	return &TargetError{PID: pid, Err: fmt.Errorf(format, a...)}
}

// namingPID returns err as an error whose text names pid: unchanged when
// its type says it does, prefixed with the pid otherwise.
func namingPID(pid int, err error) error {
	var te *TargetError
	var oe *inject.OpError
	if err == nil || errors.As(err, &te) || errors.As(err, &oe) {
		return err
	}
	return targetErrorf(pid, "pid %d: %w", pid, err)
}

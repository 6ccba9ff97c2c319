// Package inject runs system calls inside another process by ptrace syscall
// injection, so that semundo can change a process's own System V semaphore
// undo list (semadj), which no syscall can do from outside.
//
// A Session seizes one live thread of the target (PTRACE_SEIZE without
// PTRACE_O_EXITKILL, so the target survives if the caller dies) and stops it
// with PTRACE_INTERRUPT in a PTRACE_EVENT_STOP. Injected calls run from a
// stub of 200 bytes that the session writes into the padding at the end of
// an executable segment's last page (the target's own text, a library's,
// or the vDSO's): a `syscall` instruction followed by code that puts back
// every register the thread had and jumps to where it was. Each call points
// rip at the stub with the call's number and arguments (orig_rax -1). On
// x86-64 the stub then keeps the result in r12 and sends its own thread a
// signal the process ignores (SIGWINCH or SIGURG, when it neither catches
// nor blocks it): the call ends in that signal's delivery stop, one stop,
// where the thread rests between calls and where Detach parks it.
// Otherwise, and on arm64, the call runs to its syscall-exit-stop with
// PTRACE_SYSCALL (two stops) and the result is read there. The registers
// the stub restores are the ones the thread would have resumed with: an
// interrupted system call (-ERESTARTSYS and friends in rax) is set up to be
// issued again, as the kernel would have done.
//
// So the session is kill-safe: from the moment a thread's registers point
// into the stub, it needs nobody to get back to its own state. If the
// caller dies at any instant (kill -9, the OOM killer), the kernel detaches,
// and the thread finishes the call it was given, restores itself and
// carries on. Detach, when the caller lives, moves the thread back to an
// event stop (or uses the self-stop, also inside get_signal) with its
// original registers, so the kernel's own restart logic runs with the true
// signal state, and puts the padding's bytes back.
//
// Signals that arrive while the target is held are intercepted and queued
// again at Detach; a target that was in a job-control stop (SIGSTOP) before
// Seize is stopped again after Detach.
//
// Limits:
//   - Seize waits for the thread to stop; a thread in uninterruptible sleep
//     stops only when that sleep ends. Injected calls must not block either
//     (Syscall enforces IPC_NOWAIT for semop).
//   - semop and semtimedop end with EINTR when their thread is stopped
//     (signal(7)); Detach makes such a thread issue its call again. Other
//     calls of that kind (epoll_wait, sigtimedwait) return EINTR to the
//     target, as after any debugger attach or SIGSTOP/SIGCONT.
//   - A re-queued signal sent with kill or tgkill names this process as its
//     sender (the kernel lets a tracer forge only sigqueue-style siginfo),
//     and it merges with an instance of the same standard signal that is
//     pending again by then.
//   - If the caller dies during a session, the call in flight completes
//     (so a write of several calls can stop between two of them), and
//     scratch pages from Mmap stay mapped in the target; the stub's bytes
//     stay in the padding, which nothing runs. A restarted call that the
//     stop interrupted restarts even when a signal handler without
//     SA_RESTART runs first, as it would only after the kernel's restart
//     logic saw the handler; and a thread that had set the rare flags AC, ID
//     or NT gets them back with popfq, which points rsp into the stub for
//     two instructions (a signal handled then would crash the thread).
//   - The stub needs 200 bytes of padding in some executable mapping; a
//     process without (no ELF image with room, vdso=0) cannot be injected
//     (ErrNoStubSite).
//   - When the target is the caller's own child and exits during a session,
//     the session's wait reaps it (the kernel reports a traced child's exit
//     to its tracer).
//
// linux/amd64 and linux/arm64 are implemented. On other platforms every
// entry point returns an error wrapping ErrArchNotSupported.
//
// On arm64 (session_linux_arm64.go, stub_linux_arm64.go) the stub is an
// `svc #0` followed by PC-relative loads of nzcv, sp and x0-x30 and a direct
// branch back, and the registers go through PTRACE_GETREGSET (NT_PRSTATUS,
// and NT_ARM_SYSTEM_CALL for the number of the call a thread is in).
// Its limits besides the above:
//   - The kernel restarts an interrupted call before the stop the tracer
//     sees and drops its -ERESTART* code and orig_x0 from view, so the
//     stub re-issues the call from its svc. Signals that arrived during
//     the session are queued again once the thread has entered that call
//     (Detach lets it run to the syscall-enter-stop first), so the call
//     meets them and the kernel's own restart logic decides, as without
//     the session (TestSignalRedelivery: a ppoll the signal ends with
//     EINTR). If the caller dies after the injection and before Detach,
//     such a signal is lost, as on x86-64. Which call a thread slept in is read from /proc/<pid>/task/<tid>/syscall
//     just before the interrupt: a relative nanosleep or clock_nanosleep
//     continues with restart_syscall, and a semop our stop ended gets its
//     semid back. A thread that enters its call after that reading gets the
//     conservative outcome: the sleep starts over with its full length, the
//     semop's EINTR stands. Other calls the kernel continues with
//     restart_syscall (futex waits with a timeout) start over with their
//     full timeout.
//   - The stub's branch reaches 128 MiB: it goes into 416 bytes of
//     padding within that distance of the thread's pc, in practice in the
//     ELF image or vDSO that holds the pc: after a segment's end in its
//     last page, or in the zeros between the headers and the first
//     section where the executable segment maps the file's start (Go's
//     static programs, whose text may end too close to a page end: under
//     104 bytes in about one layout in 40). Failing that, a 24-byte far
//     stub goes anywhere (the vDSO) and returns through a 104-byte
//     trampoline near the pc; a thread whose pc has not even that within
//     reach (JIT code in anonymous memory far from any ELF image) cannot be
//     injected (ErrNoStubSite).
//   - A thread stopped in user code (not at an svc) with live SVE or SME
//     streaming-mode state is refused (ErrTargetABI): the injected call
//     would discard the Z registers' upper bits and the predicates, which
//     the stub cannot put back. A thread in a system call is never
//     refused for it (the syscall ABI discards that state anyway).
//   - The stub clears PSTATE.BTYPE when it is entered, so that it also runs
//     from BTI-guarded text; the thread resumes from the stub's direct
//     branch with BTYPE 0 (no landing-pad check is pending).
//
// On both architectures, a caller killed after its interrupt has ended a
// blocked semop with EINTR and before the first stop's registers are set
// to issue it again leaves the target that EINTR: the window is the
// thread's way out of semop to the stop plus a few ptrace requests.
// Under TCG emulation on arm64 it took 3 to 7 of 51 random kills of a
// tracer running session after session against a thread in semop
// (TestKillTracerWindow, eight runs); kills anywhere else left every
// target right.
package inject

import (
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"time"

	"github.com/semundo/semundo/internal/errs"
	"golang.org/x/sys/unix"
)

// Sentinel errors. Every error this package returns for a failed operation is
// an *OpError wrapping one of these (when the failure has a category) and the
// underlying errno (when there is one), so errors.Is works for both.
var (
	// ErrArchNotSupported: this build's platform has no injector (only linux/amd64 and linux/arm64 have one).
	ErrArchNotSupported = errs.New("ptrace syscall injection is not supported on "+runtime.GOARCH, errs.ErrNotSupported)
	// ErrNoProcess: no process has the given pid (or it vanished during Seize).
	ErrNoProcess = errs.ErrNoProcess
	// ErrAlreadyTraced: another tracer (a debugger, strace, CRIU, another Session) holds the target.
	ErrAlreadyTraced = errors.New("process is already traced")
	// ErrZombie: the process has exited and has no live thread left to inject into.
	ErrZombie = errors.New("process is a zombie")
	// ErrKernelThread: the pid is a kernel thread, which has no user memory.
	ErrKernelThread = errors.New("process is a kernel thread")
	// ErrPermission: the kernel refused to let the caller ptrace the target.
	ErrPermission = fs.ErrPermission
	// ErrTargetExited: the target exited (or was killed) while the session held it.
	ErrTargetExited = errors.New("target exited during the session")
	// ErrSelf: the pid is the calling process or one of its threads.
	ErrSelf = errors.New("cannot inject into the calling process")
	// ErrTargetABI: the target runs 32-bit code (ia32 or x32 on x86-64,
	// AArch32 on arm64), which this injector does not speak.
	ErrTargetABI = errors.New("target does not run the 64-bit ABI")
	// ErrWrongThread: a Session method was called from an OS thread other than the tracer's.
	ErrWrongThread = errors.New("session used from another OS thread")
	// ErrDetached: the session was already detached.
	ErrDetached = errors.New("session is detached")
	// ErrWouldBlock: an injected semop lacks IPC_NOWAIT and could block the target forever.
	ErrWouldBlock = errors.New("injected semop could block")
	// ErrNoRoom: data given to ReadOnly does not fit after the stub.
	ErrNoRoom = errors.New("no room left after the injection stub")
	// ErrNoStubSite: no executable mapping of the target has the padding
	// the injection stub needs (200 bytes on x86-64; on arm64 416 within
	// 128 MiB of the thread's pc, or 104 there and 24 anywhere).
	ErrNoStubSite = errors.New("no room for the injection stub in the target")
	// ErrUnexpectedStop: the target stopped in a way the injection protocol does not allow.
	ErrUnexpectedStop = errors.New("target stopped unexpectedly")
)

// OpError describes a failed step of a session. It wraps Kind (a sentinel
// error above, or nil) and Err (the errno or other cause, or nil).
type OpError struct {
	Pid    int    // process id (thread-group id) of the target
	Tid    int    // thread the session traces; 0 when none was chosen yet
	Op     string // the step that failed, such as "seize", "mmap" or "detach"
	Kind   error  // sentinel category, or nil
	Err    error  // underlying cause (usually a unix.Errno), or nil
	Detail string // one-line explanation naming the object and what to do
}

// Error formats the failure on one line: "inject: pid P: op: detail (errno)".
func (e *OpError) Error() string {
	who := fmt.Sprintf("pid %d", e.Pid)
	if e.Tid != 0 && e.Tid != e.Pid {
		who += fmt.Sprintf(" (thread %d)", e.Tid)
	}
	msg := e.Detail
	if msg == "" && e.Kind != nil {
		msg = e.Kind.Error()
	}
	if e.Err != nil {
		if msg == "" {
			msg = e.Err.Error()
		} else {
			msg += " (" + e.Err.Error() + ")"
		}
	}
	return "inject: " + who + ": " + e.Op + ": " + msg
}

// Unwrap returns the sentinel and the underlying cause, so errors.Is matches
// either.
func (e *OpError) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// SyscallError reports that the injected system call itself ran in the
// target and returned an error. The session is still usable.
type SyscallError struct {
	Pid   int        // target process
	Nr    uintptr    // system call number
	Errno unix.Errno // the negated return value
}

// Error names the target, the call and the errno.
func (e *SyscallError) Error() string {
	return fmt.Sprintf("inject: pid %d: injected syscall %d failed in the target: %v (errno %d)",
		e.Pid, e.Nr, e.Errno, int(e.Errno))
}

// Unwrap returns the errno, so errors.Is(err, unix.EAGAIN) works.
func (e *SyscallError) Unwrap() error { return e.Errno }

// Stats describes one session, for logs and benchmarks.
type Stats struct {
	// StopTime is how long the session held the target stopped: from the
	// PTRACE_INTERRUPT (or, for a target already in a job-control stop, from
	// the seize) to the end of Detach. While attached it is the time so far.
	StopTime time.Duration
	// Injections counts the system calls run in the target, including the
	// mmap and munmap calls of scratch pages.
	Injections int
	// MemoryCalls counts the mmap and munmap calls among Injections: a
	// scratch page is mapped when the padding next to the stub has no
	// room for a call's data, which depends on the layout of the target's
	// executable pages.
	MemoryCalls int
	// Signals counts the signals that arrived while the target was held and
	// were queued to it again at Detach.
	Signals int
	// GroupStop reports that the target was in a job-control stop when it was
	// seized; Detach leaves it stopped.
	GroupStop bool
	// SeccompActive reports that the target has a seccomp filter that could
	// not be suspended (PTRACE_O_SUSPEND_SECCOMP needs CAP_SYS_ADMIN), so
	// the filter applies to the injected calls.
	SeccompActive bool
	// RestartedSemop reports that the target was blocked in semop or
	// semtimedop, which the kernel ends with EINTR when the thread is
	// stopped, and Detach made it re-issue the call instead.
	RestartedSemop bool
	// SelfStops counts the injected calls that ended in the stub's own
	// signal stop (one stop per call) rather than between syscall stops
	// (two, and a third at Detach): x86-64 targets that neither catch nor
	// block SIGWINCH or SIGURG.
	SelfStops int
}

package inject

import (
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The arm64 parts of a session.
//
// arm64 applies the restart of an interrupted system call before the
// stop a tracer sees (arch_do_signal_or_restart rewinds pc to the `svc`
// and puts orig_x0 back in x0 before get_signal), and orig_x0 and the
// -ERESTART* code are then gone from what ptrace shows. So the registers
// saved at the first stop already re-issue such a call, and the stub
// restores them as they are. Two things the registers no longer tell are
// read from /proc/<pid>/task/<tid>/syscall just before the interrupt,
// while the thread still sleeps in its call (sample):
//   - a relative nanosleep or clock_nanosleep, which the kernel would
//     continue with restart_syscall (x8 = __NR_restart_syscall) for the
//     time left rather than issue again with its full length;
//   - the semid (x0) of a semop or semtimedop that our stop ended with
//     EINTR (x0 holds -EINTR by then), to issue it again.
// A thread that enters such a call only after the sample gets the
// conservative outcome: the sleep starts over, the semop's EINTR stands.

// runs32Bit completes Seize's refusal of a 32-bit program.
const runs32Bit = "runs a 32-bit (AArch32) program: only arm64 processes can be injected"

// syscallLen is the length of the `svc #0` instruction.
const syscallLen = 4

const (
	insnSVC      = 0xd4000001 // svc #0
	timerAbstime = 1          // TIMER_ABSTIME: clock_nanosleep's absolute flag
)

// blockedCall is one reading of /proc/<pid>/task/<tid>/syscall: the call a
// sleeping thread is in, its six arguments, sp and pc (after the svc).
type blockedCall struct {
	ok     bool
	nr     uint64
	args   [6]uint64
	sp, pc uint64
}

// archState holds what the registers at the stop no longer show.
type archState struct {
	blocked   blockedCall
	tramp     uintptr // the far stub's trampoline (placeFar), 0 when none
	trampOrig []byte  // the bytes it replaced
}

// sample reads the call the thread sleeps in, before the interrupt ends it.
func (s *Session) sample() {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", s.pid, s.tid))
	if err != nil {
		return
	}
	f := strings.Fields(string(b))
	if len(f) != 9 || f[0] == "-1" {
		return // "running", or not in a system call
	}
	var v [9]uint64
	for i, x := range f {
		n, err := strconv.ParseUint(x, 0, 64) // decimal number, hex rest
		if err != nil {
			return
		}
		v[i] = n
	}
	c := blockedCall{ok: true, nr: v[0], sp: v[7], pc: v[8]}
	copy(c.args[:], v[1:7])
	s.arch.blocked = c
}

// checkABI refuses a thread that runs AArch32 code, or that was stopped in
// user code (not at a system call) with live SVE or streaming-mode state:
// the injected system call would discard that state (the Z registers'
// upper bits, the predicates), which code between two system calls may
// rely on and which the stub cannot put back.
func (s *Session) checkABI() error {
	if s.saved.Pstate&psrMode32 != 0 {
		return s.fail("seize", ErrTargetABI, nil, "thread runs 32-bit (AArch32) code: only arm64 code can be injected")
	}
	// At or just after an svc the state is the syscall ABI's to discard.
	if pc := s.saved.Pc; !s.isSVC(pc) && (pc < syscallLen || !s.isSVC(pc-syscallLen)) && liveVectorState(s.tid) {
		return s.fail("seize", ErrTargetABI, nil, "thread was stopped in SVE or SME code with live vector state, which an injected system call would discard: try again when it is in a system call")
	}
	return nil
}

// isSVC reports whether the instruction at addr is `svc #0`.
func (s *Session) isSVC(addr uint64) bool {
	var b [4]byte
	return s.readMemory(uintptr(addr), b[:]) == nil && binary.LittleEndian.Uint32(b[:]) == insnSVC
}

// resumeRegs returns the registers the stub restores: the saved ones (the
// kernel already rewound an interrupted call), with a relative sleep turned
// into restart_syscall and a semop our stop ended re-issued.
func (s *Session) resumeRegs() unix.PtraceRegs {
	r := s.saved
	if b := s.arch.blocked; b.ok && r.Pc+syscallLen == b.pc && r.Sp == b.sp &&
		r.Regs[8] == b.nr && r.Regs[0] == b.args[0] && s.isSVC(r.Pc) {
		switch {
		case b.nr == unix.SYS_NANOSLEEP,
			b.nr == unix.SYS_CLOCK_NANOSLEEP && b.args[1]&timerAbstime == 0 && r.Regs[1] == b.args[1]:
			// The kernel answered -ERESTART_RESTARTBLOCK, set the
			// thread's restart block, and would have set x8 so.
			r.Regs[8] = unix.SYS_RESTART_SYSCALL
		}
	}
	if s.semopRestartable() {
		s.reissueSemop(&r)
	}
	return r
}

// callRegs returns base set up to run system call nr with args from the
// stub's `svc` at stub.
func callRegs(base unix.PtraceRegs, stub, nr uintptr, a [6]uintptr) unix.PtraceRegs {
	r := base
	r.Pc = uint64(stub)
	r.Pstate &^= psrBTYPE // the stub's svc is no branch target (BTI-guarded text)
	r.Regs[8] = uint64(nr)
	for i, v := range a {
		r.Regs[i] = uint64(v)
	}
	return r
}

// putRegs sets the thread's registers after making the kernel forget the
// system call the thread is in: at a syscall-exit-stop the kernel would
// otherwise apply its restart logic to x0 as we leave it. The order
// matters if the caller dies between the two requests: a forgotten call
// with the old registers is a state the thread can resume from.
func (s *Session) putRegs(r *unix.PtraceRegs) error {
	if err := setSyscallNo(s.tid, noSyscall); err != nil {
		return err
	}
	return setRegs(s.tid, r)
}

// checkEntry compares a syscall-enter-stop with the call injected at
// addr; it returns what differs, or "".
func (s *Session) checkEntry(r *unix.PtraceRegs, addr, nr uintptr) (string, error) {
	n, err := getSyscallNo(s.tid)
	if err != nil {
		return "", err
	}
	if r.Pc != uint64(addr)+syscallLen || int64(n) != int64(nr) {
		return fmt.Sprintf("entered syscall %d at %#x, want %d at %#x", n, r.Pc-syscallLen, nr, addr), nil
	}
	return "", nil
}

// retval is a system call's result at its syscall-exit-stop.
func retval(r *unix.PtraceRegs) uint64 { return r.Regs[0] }

// reissueSemop sets r, a thread's registers at the stop that ended its
// semop with EINTR, up to issue the same call again, with the semid
// sampled before the stop.
func (s *Session) reissueSemop(r *unix.PtraceRegs) {
	r.Regs[0] = s.arch.blocked.args[0]
	r.Pc -= syscallLen
}

// semopEINTR reports whether the saved registers show the semop or
// semtimedop sampled before the stop, just ended with EINTR.
func (s *Session) semopEINTR() bool {
	r, b := s.saved, s.arch.blocked
	return int64(r.Regs[0]) == -int64(unix.EINTR) && b.ok &&
		(b.nr == unix.SYS_SEMOP || b.nr == unix.SYS_SEMTIMEDOP) && r.Regs[8] == b.nr &&
		r.Pc == b.pc && r.Sp == b.sp && r.Regs[1] == b.args[1] && r.Regs[2] == b.args[2] &&
		r.Pc >= syscallLen && s.isSVC(r.Pc-syscallLen)
}

// beforeRequeue makes the signals caught during the session meet the
// thread's interrupted call as they would have without it. Once the
// thread has left its first stop (rest ran), its registers re-issue the
// call from the svc, and the kernel's restart logic, which turns the call
// into EINTR when a handler runs (ERESTARTNOHAND, or ERESTARTSYS without
// SA_RESTART), is gone: a signal queued now would run its handler first
// and the call, issued again after it, would not see it (a ppoll waiting
// for that signal would wait on). So the thread is first let into its
// call, to the syscall-enter-stop; the signals are queued there, and the
// call, once detached, ends at once with the kernel's own restart code
// and meets them. A job-control-stopped thread stays where it is.
func (s *Session) beforeRequeue() error {
	if len(s.signals) == 0 || !s.moved || s.stats.GroupStop || s.state != stateParked {
		return nil
	}
	var r unix.PtraceRegs
	if err := getRegs(s.tid, &r); err != nil {
		return s.lost("detach", err)
	}
	if !s.isSVC(r.Pc) {
		return nil
	}
	for i := 0; i < maxStops; i++ {
		if err := toSyscall(s.tid); err != nil {
			return s.lost("detach", err)
		}
		ws, err := s.wait("detach")
		if err != nil {
			return err
		}
		switch kind, sig := classify(ws); kind {
		case stopSyscall:
			return nil // at the enter stop of its own call
		case stopSignal:
			if err := s.catch(sig); err != nil {
				return err
			}
		}
	}
	return s.fail("detach", ErrUnexpectedStop, nil, "thread never entered its own system call")
}

// stopSignal: the arm64 stub has no self-stop; its calls run between
// syscall stops.
func (s *Session) stopSignal() unix.Signal { return 0 }

// runToSelfStop is never reached on arm64 (stopSignal is 0).
func (s *Session) runToSelfStop(op string) (uint64, error) {
	return 0, s.fail(op, ErrUnexpectedStop, nil, "no self-stopping stub on arm64")
}

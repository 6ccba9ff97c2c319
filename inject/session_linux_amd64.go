package inject

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// The x86-64 parts of a session: how a call is put into the registers, how
// a stopped thread's own call is found and issued again.

const userCS64 = 0x33 // __USER_CS: the thread runs 64-bit code

// runs32Bit completes Seize's refusal of a 32-bit program.
const runs32Bit = "runs a 32-bit (ia32 or x32) program: only x86-64 processes can be injected"

// syscallLen is the length of the `syscall` instruction.
const syscallLen = 2

// archState: x86-64 sees everything it needs in the registers.
type archState struct{}

// sample is a no-op on x86-64: orig_rax and rax at the stop tell which
// call the thread was in and how it ended.
func (s *Session) sample() {}

// checkABI refuses a thread that runs 32-bit code, or sits in a 32-bit
// system call made with int $0x80 from 64-bit code: the kernel would restart
// such a call by the compat rules, which a 64-bit call injected meanwhile
// can upset.
func (s *Session) checkABI() error {
	if s.saved.Cs != userCS64 {
		return s.fail("seize", ErrTargetABI, nil, fmt.Sprintf("thread runs 32-bit code (CS %#x): only x86-64 code can be injected", s.saved.Cs))
	}
	if int64(s.saved.Orig_rax) >= 0 && s.saved.Rip >= 2 {
		var b [2]byte
		if err := s.readMemory(uintptr(s.saved.Rip-2), b[:]); err == nil && b == [2]byte{0xcd, 0x80} {
			return s.fail("seize", ErrTargetABI, nil, fmt.Sprintf("thread is in 32-bit system call %d (int $0x80): try again when it has returned", s.saved.Orig_rax))
		}
	}
	return nil
}

// resumeRegs returns the registers the stub restores (see resumeRegs).
func (s *Session) resumeRegs() unix.PtraceRegs {
	return resumeRegs(s.saved, s.semopRestartable())
}

// callRegs returns base set up to run system call nr with args from the
// stub's `syscall` at stub.
func callRegs(base unix.PtraceRegs, stub, nr uintptr, a [6]uintptr) unix.PtraceRegs {
	r := base
	r.Rip = uint64(stub)
	r.Rax = uint64(nr)
	r.Rdi, r.Rsi, r.Rdx = uint64(a[0]), uint64(a[1]), uint64(a[2])
	r.R10, r.R8, r.R9 = uint64(a[3]), uint64(a[4]), uint64(a[5])
	return r
}

// putRegs sets the thread's registers; orig_rax is among them, so a
// system call in progress is forgotten or not with the rest.
func (s *Session) putRegs(r *unix.PtraceRegs) error { return setRegs(s.tid, r) }

// checkEntry compares a syscall-enter-stop with the call injected at
// addr; it returns what differs, or "".
func (s *Session) checkEntry(r *unix.PtraceRegs, addr, nr uintptr) (string, error) {
	if r.Rip != uint64(addr)+syscallLen || r.Orig_rax != uint64(nr) {
		return fmt.Sprintf("entered syscall %d at %#x, want %d at %#x", int64(r.Orig_rax), r.Rip-syscallLen, nr, addr), nil
	}
	return "", nil
}

// retval is a system call's result at its syscall-exit-stop.
func retval(r *unix.PtraceRegs) uint64 { return r.Rax }

// reissueSemop sets r, a thread's registers at the stop that ended its
// semop with EINTR, up to issue the same call again.
func (s *Session) reissueSemop(r *unix.PtraceRegs) {
	r.Rax = r.Orig_rax
	r.Rip -= syscallLen
	r.Orig_rax = ^uint64(0)
}

// semopEINTR reports whether the saved registers show a semop or
// semtimedop that just ended with EINTR.
func (s *Session) semopEINTR() bool {
	r := s.saved
	if int64(r.Rax) != -int64(unix.EINTR) ||
		(r.Orig_rax != unix.SYS_SEMOP && r.Orig_rax != unix.SYS_SEMTIMEDOP) || r.Rip < syscallLen {
		return false
	}
	var b [2]byte
	return s.readMemory(uintptr(r.Rip-syscallLen), b[:]) == nil && b == [2]byte{0x0f, 0x05}
}

// beforeRequeue is a no-op on x86-64: the thread rests with its own
// registers, -ERESTART* code and all, so the kernel's restart logic meets
// the re-queued signals as it would have.
func (s *Session) beforeRequeue() error { return nil }

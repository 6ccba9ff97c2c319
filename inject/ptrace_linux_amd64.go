package inject

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// PTRACE_GETREGS/SETREGS are used rather than PTRACE_GETREGSET (what
// x/sys/unix.PtraceGetRegs uses) because GETREGSET hands a 64-bit tracer
// the 32-bit register layout when the tracee runs in 32-bit mode, and the
// CS check (checkABI) must see the 64-bit layout.

func getRegs(tid int, r *unix.PtraceRegs) error {
	return ptracePtr(unix.PTRACE_GETREGS, tid, 0, unsafe.Pointer(r))
}

func setRegs(tid int, r *unix.PtraceRegs) error {
	return ptracePtr(unix.PTRACE_SETREGS, tid, 0, unsafe.Pointer(r))
}

package inject

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// arm64 has no PTRACE_GETREGS: the registers are regsets. NT_PRSTATUS is
// struct user_pt_regs (x0-x30, sp, pc, pstate); the number of the system
// call a thread is in is not among them (the kernel keeps it apart from
// x8, in pt_regs.syscallno) and is read and changed with
// NT_ARM_SYSTEM_CALL.
const (
	ntPrstatus      = 1     // NT_PRSTATUS
	ntArmSystemCall = 0x404 // NT_ARM_SYSTEM_CALL
	ntArmSVE        = 0x405 // NT_ARM_SVE: the SVE registers
	ntArmSSVE       = 0x40b // NT_ARM_SSVE: the streaming-mode SVE registers (SME)
	psrMode32       = 0x10  // PSR_MODE32_BIT: the thread runs AArch32 code
	psrBTYPE        = 0xc00 // PSTATE.BTYPE: the pending branch-target check
	svePtRegsSVE    = 1     // SVE_PT_REGS_SVE: the header's flag for live SVE state
	noSyscall       = -1    // NO_SYSCALL: no system call in progress
)

func regset(tid, req, typ int, p unsafe.Pointer, size int) (int, error) {
	iov := unix.Iovec{Base: (*byte)(p)}
	iov.SetLen(size)
	if err := ptracePtr(req, tid, uintptr(typ), unsafe.Pointer(&iov)); err != nil {
		return 0, err
	}
	return int(iov.Len), nil
}

// getRegs reads the thread's registers. A thread running AArch32 code gets
// the compat layout, which is shorter: then r is zero but for pstate's
// 32-bit mode bit, which is what checkABI refuses.
func getRegs(tid int, r *unix.PtraceRegs) error {
	n, err := regset(tid, unix.PTRACE_GETREGSET, ntPrstatus, unsafe.Pointer(r), int(unsafe.Sizeof(*r)))
	if err == nil && n != int(unsafe.Sizeof(*r)) {
		*r = unix.PtraceRegs{Pstate: psrMode32}
	}
	return err
}

func setRegs(tid int, r *unix.PtraceRegs) error {
	_, err := regset(tid, unix.PTRACE_SETREGSET, ntPrstatus, unsafe.Pointer(r), int(unsafe.Sizeof(*r)))
	return err
}

// getSyscallNo returns the number of the system call the thread is in
// (noSyscall when none), valid at any ptrace stop.
func getSyscallNo(tid int) (int32, error) {
	var n int32
	_, err := regset(tid, unix.PTRACE_GETREGSET, ntArmSystemCall, unsafe.Pointer(&n), 4)
	return n, err
}

// setSyscallNo changes it: at a syscall-enter-stop this changes the call
// that runs (noSyscall skips it); elsewhere noSyscall makes the kernel
// forget the call, so that its restart logic does not act on it.
func setSyscallNo(tid int, n int32) error {
	_, err := regset(tid, unix.PTRACE_SETREGSET, ntArmSystemCall, unsafe.Pointer(&n), 4)
	return err
}

// liveVectorState reports whether the thread holds live SVE register state
// (NT_ARM_SVE, or NT_ARM_SSVE in SME's streaming mode) beyond the FP/SIMD
// registers: the Z registers' upper bits, P0-P15 and FFR, which any system
// call discards (Documentation/arch/arm64/sve.rst). Only the 16-byte
// header is read; a kernel or CPU without the regset answers an error,
// which means no such state.
func liveVectorState(tid int) bool {
	for _, typ := range []int{ntArmSVE, ntArmSSVE} {
		var hdr [16]byte // struct user_sve_header
		if n, err := regset(tid, unix.PTRACE_GETREGSET, typ, unsafe.Pointer(&hdr[0]), len(hdr)); err == nil && n >= 14 &&
			uint16(hdr[8])|uint16(hdr[9])<<8 != 0 && (uint16(hdr[12])|uint16(hdr[13])<<8)&svePtRegsSVE != 0 {
			return true
		}
	}
	return false
}

package checkpoint

import "golang.org/x/sys/unix"

// errRestartNoIntr is the kernel's -ERESTARTNOINTR: a system call that
// returns it at a stop is restarted when the thread resumes.
const errRestartNoIntr = 513

// restartSemEINTR: traced thread tid, held in a ptrace stop, sits at the
// exit of semop or semtimedop with EINTR, which the interrupt caused
// (semop never restarts after a stop): its return value becomes
// -ERESTARTNOINTR, so the kernel issues the call again when it resumes.
// (A semtimedop restarts with its full timeout.)
func restartSemEINTR(tid int) {
	var regs unix.PtraceRegs
	if unix.PtraceGetRegs(tid, &regs) != nil {
		return
	}
	if !semCall(int(int64(regs.Orig_rax))) || int64(regs.Rax) != -int64(unix.EINTR) {
		return
	}
	neg := int64(-errRestartNoIntr)
	regs.Rax = uint64(neg)
	unix.PtraceSetRegs(tid, &regs)
}

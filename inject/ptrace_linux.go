//go:build linux && (amd64 || arm64)

package inject

import (
	"errors"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Thin wrappers over the ptrace requests both architectures share; the
// register requests are in ptrace_linux_$GOARCH.go.

func ptraceReq(req, tid int, addr, data uintptr) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, data, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func ptracePtr(req, tid int, addr uintptr, data unsafe.Pointer) error {
	_, _, e := unix.Syscall6(unix.SYS_PTRACE, uintptr(req), uintptr(tid), addr, uintptr(data), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func getSiginfo(tid int, si *unix.Siginfo) error {
	return ptracePtr(unix.PTRACE_GETSIGINFO, tid, 0, unsafe.Pointer(si))
}

func seize(tid int, options uintptr) error {
	return ptraceReq(unix.PTRACE_SEIZE, tid, 0, options)
}

func interrupt(tid int) error { return ptraceReq(unix.PTRACE_INTERRUPT, tid, 0, 0) }

// resume continues the tracee; the data argument 0 suppresses the signal of
// a signal-delivery-stop (this package re-queues such signals at Detach).
func resume(tid int) error { return ptraceReq(unix.PTRACE_CONT, tid, 0, 0) }

// toSyscall resumes the tracee up to its next syscall-enter or -exit stop.
func toSyscall(tid int) error { return ptraceReq(unix.PTRACE_SYSCALL, tid, 0, 0) }

func detach(tid int) error { return ptraceReq(unix.PTRACE_DETACH, tid, 0, 0) }

// rtTgsigqueueinfo queues sig with the given siginfo to thread tid of tgid.
func rtTgsigqueueinfo(tgid, tid int, sig unix.Signal, si *unix.Siginfo) error {
	_, _, e := unix.Syscall6(unix.SYS_RT_TGSIGQUEUEINFO, uintptr(tgid), uintptr(tid), uintptr(sig),
		uintptr(unsafe.Pointer(si)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// stopKind classifies a wait status of a traced thread.
type stopKind int

const (
	stopExited  stopKind = iota // exited or killed; the thread is reaped
	stopEvent                   // PTRACE_EVENT_STOP: interrupt, group-stop or SIGCONT notification
	stopSignal                  // signal-delivery-stop
	stopSyscall                 // syscall-enter or syscall-exit stop (PTRACE_O_TRACESYSGOOD)
	stopOther                   // any other ptrace stop (not requested by this package)
)

func classify(ws unix.WaitStatus) (stopKind, unix.Signal) {
	switch {
	case ws.Exited() || ws.Signaled():
		return stopExited, 0
	case !ws.Stopped():
		return stopOther, 0
	}
	sig := unix.Signal(ws.StopSignal())
	if sig == unix.SIGTRAP|0x80 {
		return stopSyscall, unix.SIGTRAP
	}
	switch event := int(uint32(ws)>>16) & 0xff; event {
	case unix.PTRACE_EVENT_STOP:
		return stopEvent, sig
	case 0:
		return stopSignal, sig
	}
	return stopOther, sig
}

// wait4 waits for a state change of thread tid (__WALL: it may be a
// non-leader thread). A wait for one specific traced thread cannot block
// forever once the thread is killed: the kernel reports its exit to the
// tracer. ECHILD means the thread is no longer ours to wait for (gone).
func wait4(tid int, options int) (unix.WaitStatus, int, error) {
	for {
		var ws unix.WaitStatus
		got, err := unix.Wait4(tid, &ws, options|unix.WALL, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		return ws, got, err
	}
}

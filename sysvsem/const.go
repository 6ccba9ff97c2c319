//go:build linux

package sysvsem

import (
	"strconv"

	"golang.org/x/sys/unix"
)

// Flags for [Sembuf.Flg] and [Get].
const (
	// Undo is SEM_UNDO: the kernel records the inverse of the operation in
	// the calling process's undo list and applies it when the process exits.
	Undo = 0x1000

	// NoWait is IPC_NOWAIT (re-exported from x/sys/unix): an operation that
	// would block fails with EAGAIN instead.
	NoWait = unix.IPC_NOWAIT

	// Private is IPC_PRIVATE, the key that always creates a new set.
	Private = unix.IPC_PRIVATE
)

// semctl commands from <linux/sem.h> and <linux/ipc.h> that x/sys/unix
// lacks. The wrappers in this package use them; they are exported for
// callers that build raw system calls (for example ptrace injection).
const (
	CmdIPCInfo = 3  // IPC_INFO: system limits into a struct seminfo
	CmdGetPid  = 11 // GETPID: pid of the last process to change a semaphore
	CmdGetVal  = 12 // GETVAL: value of one semaphore
	CmdGetAll  = 13 // GETALL: values of every semaphore in the set
	CmdGetNcnt = 14 // GETNCNT: processes waiting for a semaphore to increase
	CmdGetZcnt = 15 // GETZCNT: processes waiting for a semaphore to become zero
	CmdSetVal  = 16 // SETVAL: set one value (zeroes its undo adjustments)
	CmdSetAll  = 17 // SETALL: set every value (zeroes the set's undo adjustments)
	CmdStat    = 18 // SEM_STAT: IPC_STAT by index; returns the full id
	CmdInfo    = 19 // SEM_INFO: like IPC_INFO with usage counts
	CmdStatAny = 20 // SEM_STAT_ANY: SEM_STAT without the read-permission check (Linux >= 4.17)
)

const (
	cmdIPCRmid  = unix.IPC_RMID
	cmdIPCSet   = unix.IPC_SET
	cmdIPCStat  = unix.IPC_STAT
	cmdIPC64Bit = 0x100 // IPC_64; never passed on amd64/arm64, see the package doc
)

// Kernel limits that are compile-time constants, not sysctls.
const (
	// SemVMX is SEMVMX, the largest value a semaphore can hold.
	SemVMX = 32767
	// SemAEM is SEMAEM, the largest adjustment-on-exit magnitude.
	SemAEM = 32767
)

// cmdName is the kernel's name for a semctl command, used in OpError.Op.
func cmdName(cmd int) string {
	switch cmd {
	case cmdIPCRmid:
		return "IPC_RMID"
	case cmdIPCSet:
		return "IPC_SET"
	case cmdIPCStat:
		return "IPC_STAT"
	case CmdIPCInfo:
		return "IPC_INFO"
	case CmdGetPid:
		return "GETPID"
	case CmdGetVal:
		return "GETVAL"
	case CmdGetAll:
		return "GETALL"
	case CmdGetNcnt:
		return "GETNCNT"
	case CmdGetZcnt:
		return "GETZCNT"
	case CmdSetVal:
		return "SETVAL"
	case CmdSetAll:
		return "SETALL"
	case CmdStat:
		return "SEM_STAT"
	case CmdInfo:
		return "SEM_INFO"
	case CmdStatAny:
		return "SEM_STAT_ANY"
	}
	return "cmd " + strconv.Itoa(cmd)
}

//go:build linux

package sysvsem

import (
	"errors"
	"fmt"
	"strings"

	"github.com/semundo/semundo/internal/errs"
	"golang.org/x/sys/unix"
)

var (
	// ErrNotSupported is wrapped by errors from commands the running kernel
	// does not implement (SEM_STAT_ANY before Linux 4.17).
	ErrNotSupported = errs.ErrNotSupported

	// ErrNsemsMismatch is wrapped when SetAll gets a number of values that
	// differs from the set's size.
	ErrNsemsMismatch = errors.New("number of values differs from the set's size")

	// ErrMalformed is wrapped by errors from parsing /proc/sys/kernel/sem
	// and from decoding kernel structures (DecodeSemidDS, DecodeSeminfo).
	ErrMalformed = errors.New("malformed semaphore limits")
)

// OpError reports a failed semaphore system call. It wraps the kernel's
// errno (or a sentinel of this package), so errors.Is(err, unix.EIDRM)
// works on any error this package returns for a call.
type OpError struct {
	// Op is the call: "semget", "semop", "semtimedop", or "semctl(CMD)"
	// with the kernel's command name, e.g. "semctl(GETALL)".
	Op string
	// Semid is the set's id; for SEM_STAT and SEM_STAT_ANY it is the index
	// passed in; -1 for semget and the IPC_INFO and SEM_INFO commands.
	Semid int
	// Key is the key passed to semget; meaningful only when Op is "semget".
	Key int32
	// Err is the cause, usually a unix.Errno.
	Err error
}

// Error returns one line naming the call, its object, the cause and, for
// the usual errnos, what it means for a semaphore call.
func (e *OpError) Error() string {
	var b strings.Builder
	b.WriteString("sysvsem: ")
	b.WriteString(e.Op)
	switch e.Op {
	case "semget":
		fmt.Fprintf(&b, " key %#x", uint32(e.Key))
	case "semctl(SEM_STAT)", "semctl(SEM_STAT_ANY)":
		fmt.Fprintf(&b, " index %d", e.Semid)
	case "semctl(IPC_INFO)", "semctl(SEM_INFO)":
		// These describe the namespace, not a set.
	default:
		fmt.Fprintf(&b, " semid %d", e.Semid)
	}
	b.WriteString(": ")
	if e.Err == nil {
		b.WriteString("<nil>")
		return b.String()
	}
	b.WriteString(e.Err.Error())
	if h := hint(e.Op, e.Err); h != "" {
		b.WriteString(" (")
		b.WriteString(h)
		b.WriteString(")")
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *OpError) Unwrap() error { return e.Err }

// hint says what an errno means for a semaphore call, so the message tells
// the reader what to check.
func hint(op string, err error) string {
	var errno unix.Errno
	if !errors.As(err, &errno) {
		return ""
	}
	switch errno {
	case unix.EINVAL:
		if op == "semget" {
			return "nsems out of range for a new set, or larger than the existing set's"
		}
		return "no set with this id or index, or an argument out of range"
	case unix.EIDRM:
		return "the set was removed"
	case unix.EACCES:
		return "the caller lacks read or alter permission on the set"
	case unix.EPERM:
		return "only the owner, the creator or CAP_SYS_ADMIN may do this"
	case unix.ENOENT:
		return "no set has this key; add IPC_CREAT to create one"
	case unix.EEXIST:
		return "a set with this key exists; drop IPC_EXCL to open it"
	case unix.ENOSPC:
		return "SEMMNI or SEMMNS reached; see /proc/sys/kernel/sem"
	case unix.E2BIG:
		return "more operations than SEMOPM allows; see /proc/sys/kernel/sem"
	case unix.EFBIG:
		return "semaphore number beyond the set's size"
	case unix.ERANGE:
		return "a value would leave 0..32767 or an undo adjustment would overflow"
	case unix.EAGAIN:
		return "the operation would block"
	case unix.EFAULT:
		return "buffer smaller than the set; was it replaced by a larger one with the same id?"
	case unix.ENOSYS:
		return "kernel built without System V IPC (CONFIG_SYSVIPC)"
	}
	return ""
}

func ctlError(cmd, semid int, err error) error {
	return &OpError{Op: "semctl(" + cmdName(cmd) + ")", Semid: semid, Err: err}
}

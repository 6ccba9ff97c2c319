package plan

import (
	"errors"
	"fmt"
	"syscall"

	"github.com/semundo/semundo/sysvsem"
)

// ErrWouldBlock is what Apply returns where the kernel would put the caller
// to sleep: an op without IPC_NOWAIT that cannot proceed yet.
var ErrWouldBlock = errors.New("semop would block")

// OpError is a failure of Apply: the kernel's errno (syscall.Errno, so
// errors.Is(err, unix.ERANGE) works) or ErrWouldBlock, and the op that
// caused it.
type OpError struct {
	Index int   // the failing op's index in the call; -1 for the call itself
	Op    Op    // the failing op (zero when Index is -1)
	Err   error // a syscall.Errno, or ErrWouldBlock
}

// Error returns a one-line description naming the op.
func (e *OpError) Error() string {
	if e.Index < 0 {
		return "plan: simulated semop: " + e.Err.Error()
	}
	return fmt.Sprintf("plan: simulated semop, op %d {num %d, op %d, flg %#x}: %v",
		e.Index, e.Op.Num, e.Op.Op, uint16(e.Op.Flg), e.Err)
}

// Unwrap returns the errno or ErrWouldBlock.
func (e *OpError) Unwrap() error { return e.Err }

// Apply runs one semop call on a model of a set, the way the kernel's
// do_semtimedop and perform_atomic_semop_slow do (see the package doc):
// values are the set's semaphore values, adj the calling process's
// adjustments for the set (len(adj) == len(values)), semopm the op limit
// (0 or less: no limit). It checks nsops (EINVAL, E2BIG) and sem_num
// (EFBIG), then applies the ops in order against the running state; on
// success values and adj hold the new state, on failure they are left as
// they were and the error says which op failed: EAGAIN (would block, with
// IPC_NOWAIT), ErrWouldBlock (without it) or ERANGE.
//
// It does not model what needs a real kernel: permissions, a removed set
// (EIDRM), sempid, sem_otime, waking other waiters, and the all-zero undo
// entry a failed SEM_UNDO call can leave behind.
func Apply(values []int, adj []int16, call []Op, semopm int) error {
	if len(adj) != len(values) {
		return fmt.Errorf("plan: simulated set has %d values but %d adjustments: %w", len(values), len(adj), ErrSize)
	}
	if len(call) < 1 {
		return &OpError{Index: -1, Err: syscall.EINVAL}
	}
	if semopm > 0 && len(call) > semopm {
		return &OpError{Index: -1, Err: syscall.E2BIG}
	}
	for i, op := range call {
		if int(op.Num) >= len(values) {
			return &OpError{Index: i, Op: op, Err: syscall.EFBIG}
		}
	}
	for i, op := range call {
		if err := applyOne(values, adj, op); err != nil {
			// Roll back like the kernel's undo: label, newest first.
			for j := i - 1; j >= 0; j-- {
				o := call[j]
				values[o.Num] -= int(o.Op)
				if o.Flg&sysvsem.Undo != 0 {
					adj[o.Num] += o.Op
				}
			}
			return &OpError{Index: i, Op: op, Err: err}
		}
	}
	return nil
}

// applyOne applies one op to the running state or says why it cannot.
func applyOne(values []int, adj []int16, op Op) error {
	v := values[op.Num]
	blocked := false
	r := v + int(op.Op)
	switch {
	case op.Op == 0 && v != 0:
		blocked = true // wait-for-zero
	case r < 0:
		blocked = true
	case r > sysvsem.SemVMX:
		return syscall.ERANGE
	}
	if blocked {
		if op.Flg&sysvsem.NoWait != 0 {
			return syscall.EAGAIN
		}
		return ErrWouldBlock
	}
	if op.Flg&sysvsem.Undo != 0 {
		u := int(adj[op.Num]) - int(op.Op)
		if u < MinAdj || u > MaxAdj {
			return syscall.ERANGE
		}
		adj[op.Num] = int16(u)
	}
	values[op.Num] = r
	return nil
}

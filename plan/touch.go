package plan

import "github.com/semundo/semundo/sysvsem"

// Touch returns the semop call that gives the calling process an undo
// entry for a set without changing any value or adjustment: an entry that
// holds only zeros, which the kernel creates on a set's first SEM_UNDO
// operation and which a restore must recreate, since it is real state
// (a reader shows it). value is semaphore num's value; the caller has no
// entry yet, so its adjustment is 0.
//
// The call is two SEM_UNDO ops on num, +1 and -1, both with IPC_NOWAIT: the
// value moves by one and back and the adjustment by one and back, so the
// call has no net effect but the entry (and, as any call, sempid and
// otime). The order keeps the value inside [0, SEMVMX] in between: +1
// first unless the value is at SEMVMX. Unlike Semaphore's pairs both ops
// carry SEM_UNDO, and no op is zero: sem_op 0 would wait for the value to
// reach zero.
func Touch(num uint16, value int) ([]Op, error) {
	if value < 0 || value > sysvsem.SemVMX {
		return nil, &RangeError{Num: int(num), What: "value", Value: value, Min: 0, Max: sysvsem.SemVMX}
	}
	up := Op{Num: num, Op: 1, Flg: sysvsem.Undo | sysvsem.NoWait}
	down := Op{Num: num, Op: -1, Flg: sysvsem.Undo | sysvsem.NoWait}
	if value < sysvsem.SemVMX {
		return []Op{up, down}, nil
	}
	return []Op{down, up}, nil
}

//go:build linux

package sysvsem

import (
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Get returns the id of the set with the given key (semget(2)). flags
// combines unix.IPC_CREAT, unix.IPC_EXCL and the permission bits of a new
// set; nsems is the size of a new set (0 is allowed when opening an existing
// one). key may be given as a signed or unsigned 32-bit value, as ftok
// produces; use Private for a new set no key can find.
func Get(key, nsems, flags int) (int, error) {
	if key < math.MinInt32 || key > math.MaxUint32 {
		return -1, &OpError{Op: "semget", Semid: -1, Key: int32(key),
			Err: fmt.Errorf("key %d does not fit key_t (32 bits): %w", key, unix.EINVAL)}
	}
	k := int32(uint32(key))
	if err := fitsInt32("nsems", nsems); err != nil {
		return -1, &OpError{Op: "semget", Semid: -1, Key: k, Err: err}
	}
	if err := fitsInt32("flags", flags); err != nil {
		return -1, &OpError{Op: "semget", Semid: -1, Key: k, Err: err}
	}
	r, _, e := unix.Syscall(unix.SYS_SEMGET, uintptr(k), uintptr(nsems), uintptr(flags))
	if e != 0 {
		return -1, &OpError{Op: "semget", Semid: -1, Key: k, Err: e}
	}
	return int(r), nil
}

// Op performs the operations atomically: all of them or none (semop(2)).
// Without NoWait in an operation's flags it waits as long as it takes.
// When a signal interrupts the wait, Op waits again: Go programs receive
// runtime signals their code never asked for, and an interrupted semop has
// changed nothing.
func Op(semid int, sops []Sembuf) error {
	if err := checkOp(semid, sops); err != nil {
		return &OpError{Op: "semop", Semid: semid, Err: err}
	}
	for {
		_, _, e := unix.Syscall(unix.SYS_SEMOP, uintptr(semid), uintptr(sembufPtr(sops)), uintptr(len(sops)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return &OpError{Op: "semop", Semid: semid, Err: e}
		}
		return nil
	}
}

// TimedOp is Op with a limit on the wait (semtimedop(2)). When the
// operations cannot complete within timeout, it fails with EAGAIN and has
// changed nothing. A zero or negative timeout does not wait at all: the
// call fails with EAGAIN at once if any operation would block, as if every
// operation carried NoWait. To wait without a limit, use Op. A signal does
// not cut the wait short; TimedOp resumes it for the time that is left.
func TimedOp(semid int, sops []Sembuf, timeout time.Duration) error {
	if err := checkOp(semid, sops); err != nil {
		return &OpError{Op: "semtimedop", Semid: semid, Err: err}
	}
	deadline := time.Now().Add(timeout)
	for {
		ts := unix.NsecToTimespec(int64(max(timeout, 0)))
		_, _, e := unix.Syscall6(unix.SYS_SEMTIMEDOP, uintptr(semid), uintptr(sembufPtr(sops)), uintptr(len(sops)),
			uintptr(unsafe.Pointer(&ts)), 0, 0)
		if e == unix.EINTR {
			timeout = time.Until(deadline)
			continue
		}
		if e != 0 {
			return &OpError{Op: "semtimedop", Semid: semid, Err: e}
		}
		return nil
	}
}

func sembufPtr(sops []Sembuf) unsafe.Pointer {
	if len(sops) == 0 {
		return nil // the kernel rejects nsops == 0 with EINVAL before reading
	}
	return unsafe.Pointer(&sops[0])
}

func checkOp(semid int, sops []Sembuf) error {
	if err := fitsInt32("semid", semid); err != nil {
		return err
	}
	if len(sops) > math.MaxInt32 {
		return fmt.Errorf("%d operations: %w", len(sops), unix.E2BIG)
	}
	return nil
}

// fitsInt32 guards the kernel's int parameters: a larger Go int would be
// truncated to a different, valid-looking value.
func fitsInt32(what string, v int) error {
	if v < math.MinInt32 || v > math.MaxInt32 {
		return fmt.Errorf("%s %d does not fit a C int: %w", what, v, unix.EINVAL)
	}
	return nil
}

// semctl issues one semctl(2). p is passed as the fourth argument (union
// semun's pointer members); arg is used when p is nil (SETVAL's value).
func semctl(semid, semnum, cmd int, p unsafe.Pointer, arg uintptr) (int, error) {
	if err := fitsInt32("semid", semid); err != nil {
		return -1, ctlError(cmd, semid, err)
	}
	if err := fitsInt32("semnum", semnum); err != nil {
		return -1, ctlError(cmd, semid, err)
	}
	var r uintptr
	var e unix.Errno
	if p != nil {
		r, _, e = unix.Syscall6(unix.SYS_SEMCTL, uintptr(semid), uintptr(semnum), uintptr(cmd), uintptr(p), 0, 0)
	} else {
		r, _, e = unix.Syscall6(unix.SYS_SEMCTL, uintptr(semid), uintptr(semnum), uintptr(cmd), arg, 0, 0)
	}
	if e != 0 {
		return -1, ctlError(cmd, semid, e)
	}
	return int(int32(r)), nil
}

// Stat returns the set's ownership, times and size (IPC_STAT). It needs
// read permission on the set.
func Stat(semid int) (SemidDS, error) {
	var raw semid64DS
	if _, err := semctl(semid, 0, cmdIPCStat, unsafe.Pointer(&raw), 0); err != nil {
		return SemidDS{}, err
	}
	return raw.decode(), nil
}

// SetPerm changes the set's owner and permission bits (IPC_SET); only the low
// nine bits of mode are used. The caller must own or have created the set,
// or have CAP_SYS_ADMIN. The creator ids cannot be changed.
func SetPerm(semid int, uid, gid, mode uint32) error {
	var raw semid64DS
	raw.Perm.UID = uid
	raw.Perm.GID = gid
	raw.Perm.Mode = mode
	_, err := semctl(semid, 0, cmdIPCSet, unsafe.Pointer(&raw), 0)
	return err
}

// Remove removes the set at once (IPC_RMID). Processes waiting on it wake
// with EIDRM; undo entries for it are dropped without being applied.
func Remove(semid int) error {
	_, err := semctl(semid, 0, cmdIPCRmid, nil, 0)
	return err
}

// GetVal returns the value of semaphore semnum (GETVAL).
func GetVal(semid, semnum int) (int, error) {
	return semctl(semid, semnum, CmdGetVal, nil, 0)
}

// SetVal sets semaphore semnum to val, which must be in 0..SemVMX (SETVAL).
// It zeroes every process's undo adjustment for that semaphore and wakes
// waiters the new value satisfies.
func SetVal(semid, semnum, val int) error {
	if val < math.MinInt32 || val > math.MaxInt32 {
		return ctlError(CmdSetVal, semid, fmt.Errorf("value %d outside 0..%d: %w", val, SemVMX, unix.ERANGE))
	}
	// The kernel reads the low 32 bits of the argument as the int value
	// on little-endian 64-bit machines, which both supported ones are.
	_, err := semctl(semid, semnum, CmdSetVal, nil, uintptr(uint32(int32(val))))
	return err
}

// GetPid returns the pid (in the caller's pid namespace) of the process
// that last changed semaphore semnum by semop, SETVAL, SETALL or an undo at
// exit (GETPID); 0 if none has or that process is not visible.
func GetPid(semid, semnum int) (int, error) {
	return semctl(semid, semnum, CmdGetPid, nil, 0)
}

// GetNcnt returns how many processes wait for semaphore semnum to increase
// (GETNCNT).
func GetNcnt(semid, semnum int) (int, error) {
	return semctl(semid, semnum, CmdGetNcnt, nil, 0)
}

// GetZcnt returns how many processes wait for semaphore semnum to become
// zero (GETZCNT).
func GetZcnt(semid, semnum int) (int, error) {
	return semctl(semid, semnum, CmdGetZcnt, nil, 0)
}

// GetAll returns the values of all semaphores of the set (GETALL). The
// buffer is sized from the set's nsems (IPC_STAT) and placed against an
// inaccessible page, so a set replaced under the same id by a larger one
// makes the call fail with EFAULT rather than overwrite memory; GetAll
// retries a few times when the size changed between the two calls.
func GetAll(semid int) ([]uint16, error) {
	var last error
	for range 3 {
		ds, err := Stat(semid)
		if err != nil {
			return nil, ctlError(CmdGetAll, semid, errors.Unwrap(err))
		}
		vals, err := getAllN(semid, ds.Nsems)
		if err == nil {
			after, err := Stat(semid)
			if err != nil {
				return nil, ctlError(CmdGetAll, semid, errors.Unwrap(err))
			}
			if after.Nsems == ds.Nsems {
				return vals, nil
			}
			last = ctlError(CmdGetAll, semid, fmt.Errorf("set size changed from %d to %d during the call: %w", ds.Nsems, after.Nsems, unix.EAGAIN))
			continue
		}
		last = err
		if !errors.Is(err, unix.EFAULT) {
			break
		}
	}
	return nil, last
}

// GetAllN is GetAll for a caller that knows the set's size (from IPC_STAT
// or SEM_STAT): one system call instead of three. A set with more
// semaphores under the same id makes it fail with EFAULT (the buffer ends at
// an inaccessible page), never overwrite memory; one with fewer returns
// fewer meaningful values, which the caller detects by checking the size
// again when it matters.
func GetAllN(semid, nsems int) ([]uint16, error) { return getAllN(semid, nsems) }

func getAllN(semid, nsems int) ([]uint16, error) {
	var out []uint16
	err := withGuard(nsems, func(vals []uint16, p unsafe.Pointer) error {
		if _, err := semctl(semid, 0, CmdGetAll, p, 0); err != nil {
			return err
		}
		out = append([]uint16(nil), vals...)
		return nil
	})
	if err != nil {
		if _, ok := err.(*OpError); !ok {
			err = ctlError(CmdGetAll, semid, err)
		}
		return nil, err
	}
	return out, nil
}

// SetAll sets every semaphore of the set (SETALL); len(vals) must equal the
// set's size, checked with IPC_STAT first (errors wrap ErrNsemsMismatch),
// and every value must be at most SemVMX (ERANGE). It zeroes all undo
// adjustments for the set. As in GetAll, the kernel reads the values from
// in front of an inaccessible page, so a larger set that took over the id
// meanwhile fails with EFAULT and is left unchanged.
func SetAll(semid int, vals []uint16) error {
	ds, err := Stat(semid)
	if err != nil {
		return ctlError(CmdSetAll, semid, errors.Unwrap(err))
	}
	if ds.Nsems != len(vals) {
		return ctlError(CmdSetAll, semid, fmt.Errorf("%w: %d values for %d semaphores", ErrNsemsMismatch, len(vals), ds.Nsems))
	}
	return setAllN(semid, vals)
}

func setAllN(semid int, vals []uint16) error {
	err := withGuard(len(vals), func(buf []uint16, p unsafe.Pointer) error {
		copy(buf, vals)
		_, err := semctl(semid, 0, CmdSetAll, p, 0)
		return err
	})
	if _, ok := err.(*OpError); err != nil && !ok {
		err = ctlError(CmdSetAll, semid, err)
	}
	return err
}

// Info returns the namespace's limits (IPC_INFO) and the highest index in
// use in the kernel's table of sets (0 when there are none: check
// SemInfo's Semusz to tell).
func Info() (Seminfo, int, error) {
	return info(CmdIPCInfo)
}

// SemInfo is Info with usage counts (SEM_INFO): Semusz is the number of sets
// and Semaem the number of semaphores in the caller's IPC namespace.
func SemInfo() (Seminfo, int, error) {
	return info(CmdInfo)
}

func info(cmd int) (Seminfo, int, error) {
	var si Seminfo
	maxIdx, err := semctl(0, 0, cmd, unsafe.Pointer(&si), 0)
	if err != nil {
		err.(*OpError).Semid = -1
		return Seminfo{}, 0, err
	}
	return si, maxIdx, nil
}

// StatIndex returns the set at the given index of the kernel's table and
// its full id (SEM_STAT). Free indexes fail with EINVAL; sets the caller
// may not read fail with EACCES.
func StatIndex(index int) (int, SemidDS, error) {
	var raw semid64DS
	id, err := semctl(index, 0, CmdStat, unsafe.Pointer(&raw), 0)
	if err != nil {
		return -1, SemidDS{}, err
	}
	return id, raw.decode(), nil
}

// statAnyWorks records that SEM_STAT_ANY has succeeded once, so the probe
// in StatAnyIndex is not repeated.
var statAnyWorks atomic.Bool

// StatAnyIndex is StatIndex without the read-permission check
// (SEM_STAT_ANY, Linux >= 4.17; LSMs still apply). On older kernels it
// fails with an error wrapping both ErrNotSupported and EINVAL.
//
// The kernel answers an unknown command and a free index with the same
// EINVAL, so on EINVAL StatAnyIndex asks SEM_STAT about the same index: if
// a set is there, SEM_STAT_ANY itself was refused (asked twice, to rule
// out a set created between the calls).
func StatAnyIndex(index int) (int, SemidDS, error) {
	var raw semid64DS
	id, err := semctl(index, 0, CmdStatAny, unsafe.Pointer(&raw), 0)
	if err == nil {
		statAnyWorks.Store(true)
		return id, raw.decode(), nil
	}
	if statAnyWorks.Load() || !errors.Is(err, unix.EINVAL) {
		return -1, SemidDS{}, err
	}
	if _, _, serr := StatIndex(index); serr != nil && !errors.Is(serr, unix.EACCES) {
		return -1, SemidDS{}, err // free index: SEM_STAT agrees
	}
	id, err = semctl(index, 0, CmdStatAny, unsafe.Pointer(&raw), 0)
	if err == nil {
		statAnyWorks.Store(true)
		return id, raw.decode(), nil
	}
	if errors.Is(err, unix.EINVAL) {
		return -1, SemidDS{}, ctlError(CmdStatAny, index,
			fmt.Errorf("%w: SEM_STAT_ANY needs Linux 4.17 or later: %w", ErrNotSupported, unix.EINVAL))
	}
	return -1, SemidDS{}, err
}

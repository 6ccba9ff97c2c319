// Package plan computes the semop calls that change a process's own System V
// semaphore adjustments (semadj) without changing any semaphore's value. It
// is pure: it makes no system calls; the caller runs the calls (in the
// process itself, or injected into another one) and must read the values
// right before, because the plan depends on them.
//
// # Why pairs
//
// No system call sets semadj. A SEM_UNDO op of sem_op = x changes the value
// by x and the adjustment by -x; a plain op changes only the value. So one
// call holding {+a, IPC_NOWAIT} and {-a, SEM_UNDO|IPC_NOWAIT} on the same
// semaphore raises the adjustment by a and leaves the value where it was.
// The two ops run one after the other, so the value in between (v+a or v-a,
// by the order chosen) must stay inside [0, SEMVMX]; a pair of size s
// therefore fits when s <= max(v, 32767-v), which is always at least 16384.
// Semaphore splits a change into the fewest such pairs (at most four: a
// change spans at most 65535), each pair in the order whose intermediate
// value fits, so a plan works for every value and every pair of
// adjustments, and each pair leaves the value as it found it.
//
// # Kernel rules the plan relies on
//
// From mainline ipc/sem.c; kernel_linux_test.go checks Apply against the
// running kernel.
//
// do_semtimedop rejects nsops < 1 with EINVAL and nsops > SEMOPM (the third
// field of /proc/sys/kernel/sem, per IPC namespace) with E2BIG before anything
// else; a sem_num >= nsems gives EFBIG. With any SEM_UNDO op, find_alloc_undo
// creates the process's (all-zero) undo entry for the set before the ops
// run, so even a failed call may leave one. It then notes, with a bitmap
// of sem_num % BITS_PER_LONG, whether an altering op (sem_op != 0) touches a
// semaphore an earlier altering op already touched; if so (q->dupsop, always
// the case for a pair) perform_atomic_semop_slow applies the ops one by one
// against the running value and running semadj, and undoes the applied ones
// when one fails. Without duplicates perform_atomic_semop checks every op
// against the original state and then applies all; the result is the same,
// because then no op follows an altering op on its semaphore, so the
// original state is the running state. For each op, in order:
//
//   - sem_op == 0 waits until the value is 0 (would block when it is not);
//   - value + sem_op < 0 would block;
//   - value + sem_op > SEMVMX (32767) fails with ERANGE;
//   - with SEM_UNDO, semadj - sem_op outside [-32768, 32767] (SEMAEM is
//     32767) fails with ERANGE; else semadj becomes semadj - sem_op;
//
// and an op that would block fails the call with EAGAIN when it has
// IPC_NOWAIT, else the caller sleeps. The call is atomic: all ops or none.
// On success every touched semaphore's sempid becomes the caller's tgid and
// sem_otime is updated: those side effects are visible and cannot be
// avoided. Apply models exactly these rules.
//
// Every op a plan holds has IPC_NOWAIT, so a stale plan fails with EAGAIN
// or ERANGE instead of blocking the target, and no plan holds a zero op.
package plan

import (
	"errors"
	"fmt"

	"github.com/semundo/semundo/sysvsem"
)

// Limits of the kernel's semaphore state.
const (
	MinAdj = -32768 // smallest adjustment (semadj is a short, -(SEMAEM+1))
	MaxAdj = 32767  // largest adjustment (SEMAEM)
	// MaxSems is the largest set Adjust accepts: what sembuf's 16-bit sem_num
	// can address (the kernel's SEMMSL is lower, 32000 by default).
	MaxSems = 1 << 16
)

// Op is one semaphore operation: package sysvsem's Sembuf, the kernel's
// struct sembuf, so a plan's calls go to sysvsem.Semop as they are.
type Op = sysvsem.Sembuf

// Errors returned by Semaphore and Adjust (through *RangeError or wrapped).
var (
	// ErrRange: a value or adjustment the kernel cannot hold, given as input.
	ErrRange = errors.New("out of range")
	// ErrSemopm: the per-call op limit cannot hold even one pair.
	ErrSemopm = errors.New("semopm too small for a pair of ops")
	// ErrSize: the slices given to Adjust describe no set.
	ErrSize = errors.New("bad set size")
)

// RangeError reports an input outside what the kernel can hold.
type RangeError struct {
	Num      int    // the semaphore's index
	What     string // "value", "current adjustment" or "wanted adjustment"
	Value    int    // what was given
	Min, Max int    // the allowed range
}

// Error returns a one-line description naming the semaphore.
func (e *RangeError) Error() string {
	return fmt.Sprintf("plan: semaphore %d: %s %d out of range [%d, %d]", e.Num, e.What, e.Value, e.Min, e.Max)
}

// Unwrap returns ErrRange.
func (e *RangeError) Unwrap() error { return ErrRange }

// Semaphore returns the ops, to be run in one semop call, that move the
// calling process's adjustment of semaphore num from curAdj to wantAdj
// while its value, now value, ends where it was. It returns no ops when
// curAdj == wantAdj. The ops are pairs (plain op, SEM_UNDO op on the same
// semaphore, in either order), at most four pairs, all with IPC_NOWAIT.
func Semaphore(num uint16, value int, curAdj, wantAdj int) ([]Op, error) {
	return appendSemaphore(nil, num, value, curAdj, wantAdj)
}

// maxStep is the largest pair size that keeps the intermediate value of a
// pair inside [0, SEMVMX] for the given value: one order goes up by s, the
// other down by s. It is in [16384, 32767], so it also fits sem_op.
func maxStep(value int) int { return max(value, sysvsem.SemVMX-value) }

func appendSemaphore(dst []Op, num uint16, value, curAdj, wantAdj int) ([]Op, error) {
	if value < 0 || value > sysvsem.SemVMX {
		return dst, &RangeError{Num: int(num), What: "value", Value: value, Min: 0, Max: sysvsem.SemVMX}
	}
	if curAdj < MinAdj || curAdj > MaxAdj {
		return dst, &RangeError{Num: int(num), What: "current adjustment", Value: curAdj, Min: MinAdj, Max: MaxAdj}
	}
	if wantAdj < MinAdj || wantAdj > MaxAdj {
		return dst, &RangeError{Num: int(num), What: "wanted adjustment", Value: wantAdj, Min: MinAdj, Max: MaxAdj}
	}
	d := wantAdj - curAdj
	if d == 0 {
		return dst, nil
	}
	sign, mag := 1, d
	if d < 0 {
		sign, mag = -1, -d
	}
	m := maxStep(value)
	pairs := (mag + m - 1) / m
	// Even steps rather than greedy ones: same count, and no step is a
	// sliver. Each is at least mag/pairs >= 1, so no op is ever zero, and
	// the adjustment moves monotonically from curAdj to wantAdj, so the
	// SEM_UNDO op can never leave [MinAdj, MaxAdj].
	for k := range pairs {
		s := mag*(k+1)/pairs - mag*k/pairs
		plain := Op{Num: num, Op: int16(sign * s), Flg: sysvsem.NoWait}
		undo := Op{Num: num, Op: int16(-sign * s), Flg: sysvsem.Undo | sysvsem.NoWait}
		up, down := plain, undo
		if sign < 0 {
			up, down = undo, plain
		}
		// Raise first when the value can go up by s; otherwise s <= value
		// (as s <= maxStep(value)) and lowering first fits.
		if value+s <= sysvsem.SemVMX {
			dst = append(dst, up, down)
		} else {
			dst = append(dst, down, up)
		}
	}
	return dst, nil
}

// Adjust returns the semop calls that move the calling process's adjustments
// of a whole set from cur to want without changing any value. values, cur
// and want are indexed by semaphore number and must have the same length,
// the set's nsems. semopm is the kernel's per-call op limit (SEMOPM, the
// third field of /proc/sys/kernel/sem; 500 by default).
//
// Only semaphores whose adjustment changes get ops. All ops go in one call,
// written atomically, when they fit in semopm. Otherwise they are cut into
// as few calls as a greedy packing in semaphore order gives, never cutting
// a semaphore's ops apart when they fit in one call: a chunked set is NOT
// written atomically, a failure part-way leaves the earlier calls done, and
// the caller must re-read and re-plan. Only when a single semaphore needs
// more ops than semopm allows (possible only with semopm below 8, for a
// change larger than max(value, 32767-value)) are its pairs spread over
// consecutive calls; a pair itself is never cut, so every value is
// unchanged between any two calls. semopm below 2 cannot hold
// a pair: ErrSemopm, unless nothing changes.
//
// The returned calls share one backing array; each has its capacity cut to
// its length, so appending to one cannot overwrite another.
func Adjust(values []int, cur, want []int16, semopm int) ([][]Op, error) {
	n := len(values)
	if len(cur) != n || len(want) != n {
		return nil, fmt.Errorf("plan: %d values, %d current and %d wanted adjustments; give one of each per semaphore: %w",
			n, len(cur), len(want), ErrSize)
	}
	if n > MaxSems {
		return nil, fmt.Errorf("plan: set of %d semaphores; sem_num addresses at most %d: %w", n, MaxSems, ErrSize)
	}
	if semopm < 1 {
		return nil, fmt.Errorf("plan: semopm %d; pass the kernel's SEMOPM (the third field of /proc/sys/kernel/sem): %w",
			semopm, ErrSemopm)
	}
	changing := 0
	for i := range n {
		if cur[i] != want[i] {
			changing++
		}
	}
	all := make([]Op, 0, 2*changing) // most changes take one pair
	ends := make([]int, 0, changing) // where each changing semaphore's ops end in all
	for i := range n {
		before := len(all)
		var err error
		if all, err = appendSemaphore(all, uint16(i), values[i], int(cur[i]), int(want[i])); err != nil {
			return nil, err
		}
		if len(all) > before {
			ends = append(ends, len(all))
		}
	}
	if len(all) == 0 {
		return nil, nil
	}
	if semopm < 2 {
		return nil, fmt.Errorf("plan: semopm %d cannot hold one pair of ops (2); raise SEMOPM in /proc/sys/kernel/sem: %w",
			semopm, ErrSemopm)
	}
	// Calls are contiguous runs of all. Pack units greedily: a unit is a
	// semaphore's ops, or one pair when its ops exceed semopm; cut before
	// a unit that does not fit in the current call.
	var calls [][]Op
	start := 0
	cut := func(at int) {
		if at > start {
			calls = append(calls, all[start:at:at])
			start = at
		}
	}
	prev := 0
	for _, end := range ends {
		unit := end - prev
		if unit > semopm {
			unit = 2
		}
		for u := prev; u < end; u += unit {
			if u+unit-start > semopm {
				cut(u)
			}
		}
		prev = end
	}
	cut(len(all))
	return calls, nil
}

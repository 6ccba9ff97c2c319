package reader

import (
	"errors"
	"fmt"
	"runtime"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/semundo/semundo/sysvsem"
	"golang.org/x/sys/unix"
)

// Waiter is a task blocked in semop or semtimedop: the operations it waits
// to perform on one set, all of which the kernel applies at once.
type Waiter struct {
	// PID is the process id (thread-group id) in the reader's PID namespace.
	PID int
	// TID is the blocked thread.
	TID int
	// Comm is the blocked thread's command name.
	Comm string
	// IPCNS is the inode number of the IPC namespace Semid belongs to.
	IPCNS uint32
	// Semid is the set the task waits on.
	Semid int32
	// Ops are the call's operations, in the caller's order. At most 1024
	// are kept; NOps says how many the call has.
	Ops []sysvsem.Sembuf
	// NOps is the number of operations in the call.
	NOps int
	// Blocking is the index in Ops of the operation the kernel found it
	// could not perform, or -1 when the kernel does not say.
	Blocking int
	// Timed: the call is a semtimedop with a timeout.
	Timed bool
}

// Mirrors of the waiter #defines in bpf/records.h.
const (
	iterSemundoTaskWaiter   = 32
	iterSemundoMaxWaitOps   = 1024
	iterSemundoWaitTimed    = 1
	iterSemundoWaitTrunc    = 2
	waitSize                = 64
	sembufSize              = 6
	waiterKernelRequirement = "Linux >= 5.17 (bpf_loop, bpf_task_pt_regs) on amd64 or arm64"
)

// waitersSupport says whether this kernel lets the iterator find blocked
// semop callers: it reads their registers (bpf_task_pt_regs, 5.15), walks
// queues of any length (bpf_loop, 5.17), and needs the kernel's struct
// sem_queue in its BTF, which semQueue says it has. bounded is
// Options.Bounded.
func waitersSupport(bounded bool, semQueue func() (bool, error)) error {
	if runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64" {
		return fmt.Errorf("reading blocked semop callers is implemented for amd64 and arm64, not %s: %w", runtime.GOARCH, ErrNotSupported)
	}
	if bounded {
		return fmt.Errorf("reading blocked semop callers needs the bpf_loop variant of the iterator (%s), and the bounded one was asked for: %w", waiterKernelRequirement, ErrNotSupported)
	}
	for _, h := range []struct {
		fn   asm.BuiltinFunc
		name string
	}{{asm.FnLoop, "bpf_loop"}, {asm.FnTaskPtRegs, "bpf_task_pt_regs"}} {
		if err := haveHelper(h.fn); err != nil {
			return fmt.Errorf("reading blocked semop callers needs the BPF helper %s (%s): %w (%w)", h.name, waiterKernelRequirement, ErrNotSupported, err)
		}
	}
	ok, err := semQueue()
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("kernel BTF has no struct sem_queue, which blocked semop callers are read through: %w", ErrNotSupported)
	}
	return nil
}

// kernelHasStruct says whether the kernel's BTF, decoded by cilium/ebpf
// into types, has a struct of that name.
func kernelHasStruct(types *btf.Cache, name string) (bool, error) {
	spec, err := types.Kernel()
	if err != nil {
		return false, fmt.Errorf("read kernel BTF: %w (%w)", ErrNotSupported, err)
	}
	var s *btf.Struct
	return spec.TypeByName(name, &s) == nil, nil
}

// setWaiters makes a reader object (either one: they share waiters.h) read
// blocked semop callers with a sleepers table of that many slots, a power
// of two; 0 leaves them out, and the table at one slot: want_waiters stays
// 0, and the verifier drops the code that would touch it.
func setWaiters(spec *ebpf.CollectionSpec, sleepers uint32) error {
	vars := map[string]uint32{}
	if sleepers == 0 {
		sleepers = 1
	} else {
		semop, semtimedop := syscallNumbers()
		vars = map[string]uint32{"want_waiters": 1, "nr_semop": semop, "nr_semtimedop": semtimedop}
	}
	vars["sleepers_mask"] = sleepers - 1
	spec.Maps["sleepers"].MaxEntries = sleepers
	for name, v := range vars {
		if err := spec.Variables[name].Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	return nil
}

// syscallNumbers are semop's and semtimedop's numbers on this architecture.
func syscallNumbers() (semop, semtimedop uint32) {
	return uint32(unix.SYS_SEMOP), uint32(unix.SYS_SEMTIMEDOP)
}

// decodeWait decodes a waiter record and its operations from b, returning
// the bytes used, or errShort when b holds only part of it.
func decodeWait(b []byte, ws *waitSlab) (Waiter, int, error) {
	if len(b) < waitSize {
		return Waiter{}, 0, errShort
	}
	nops := ne.Uint32(b[28:])
	if nops > iterSemundoMaxWaitOps {
		return Waiter{}, 0, fmt.Errorf("BPF waiter record claims %d operations", nops)
	}
	l := waitSize + (int(nops)*sembufSize+3)&^3
	if len(b) < l {
		return Waiter{}, 0, errShort
	}
	w := Waiter{
		TID:      int(ne.Uint32(b[0:])),
		PID:      int(ne.Uint32(b[4:])),
		IPCNS:    ne.Uint32(b[12:]),
		Semid:    int32(ne.Uint32(b[20:])),
		NOps:     int(ne.Uint32(b[24:])),
		Timed:    ne.Uint32(b[32:])&iterSemundoWaitTimed != 0,
		Blocking: int(int32(ne.Uint32(b[36:]))),
		Comm:     ws.comm(b[40:56]),
		Ops:      ws.ops(int(nops)),
	}
	for i := range w.Ops {
		o := b[waitSize+i*sembufSize:]
		w.Ops[i] = sysvsem.Sembuf{Num: ne.Uint16(o), Op: int16(ne.Uint16(o[2:])), Flg: int16(ne.Uint16(o[4:]))}
	}
	if w.Blocking >= len(w.Ops) {
		w.Blocking = -1
	}
	return w, l, nil
}

// WaitersOf returns the snapshot's waiters on set semid of IPC namespace
// ipcns (0: any namespace).
func (s *Snapshot) WaitersOf(ipcns uint32, semid int32) []Waiter {
	var out []Waiter
	for _, w := range s.Waiters {
		if w.Semid == semid && (ipcns == 0 || w.IPCNS == ipcns) {
			out = append(out, w)
		}
	}
	return out
}

// sortWaiters orders waiters by pid, then tid. The iterator shows tasks in
// tid order: one process's threads in order, but the threads of processes that
// started together interleaved. Moving 10,000 records of 88 bytes around in
// a comparison sort cost more than reading them, so they are grouped by pid
// through a sort of packed keys (pid, then position: stable), moved once
// into place, and only sorted outright when that left them out of order.
func sortWaiters(ws []Waiter) {
	cmp := func(a, b Waiter) int {
		if a.PID != b.PID {
			return a.PID - b.PID
		}
		return a.TID - b.TID
	}
	if slices.IsSortedFunc(ws, cmp) {
		return
	}
	keys := make([]uint64, len(ws))
	for i, w := range ws {
		keys[i] = uint64(uint32(w.PID))<<32 | uint64(i)
	}
	slices.Sort(keys)
	// Place them, following each cycle of the permutation: the record for
	// position i is at the position keys[i] names. A done position's key
	// gets its top bit.
	const done = 1 << 63
	for i := range keys {
		if keys[i]&done != 0 {
			continue
		}
		tmp := ws[i]
		j := i
		for {
			k := int(uint32(keys[j]))
			keys[j] |= done
			if k == i {
				ws[j] = tmp
				break
			}
			ws[j] = ws[k]
			j = k
		}
	}
	if !slices.IsSortedFunc(ws, cmp) {
		slices.SortFunc(ws, cmp)
	}
}

// waitSlab spares a scan of 10,000 waiters 20,000 allocations: operations
// are carved from large blocks, and the threads of one program, which wait
// alike, share their command name's string.
type waitSlab struct {
	free  []sysvsem.Sembuf
	comms map[[16]byte]string
	// last is the last name looked up, which the next waiter most often
	// shares: spares it hashing the key.
	last     [16]byte
	lastComm string
	haveLast bool
}

func (s *waitSlab) ops(n int) []sysvsem.Sembuf {
	if n > len(s.free) {
		if n > 1<<10 {
			return make([]sysvsem.Sembuf, n)
		}
		s.free = make([]sysvsem.Sembuf, 1<<14)
	}
	o := s.free[:n:n]
	s.free = s.free[n:]
	return o
}

func (s *waitSlab) comm(b []byte) string {
	var key [16]byte
	copy(key[:], b)
	if s.haveLast && key == s.last {
		return s.lastComm
	}
	if c, ok := s.comms[key]; ok {
		s.last, s.lastComm, s.haveLast = key, c, true
		return c
	}
	var raw [16]int8
	for i := range raw {
		raw[i] = int8(key[i])
	}
	c := commString(raw)
	if s.comms == nil {
		s.comms = make(map[[16]byte]string)
	}
	s.comms[key] = c
	s.last, s.lastComm, s.haveLast = key, c, true
	return c
}

// errWaitersOff is a Snapshot's WaitersErr when Options.NoWaiters asked
// the reader not to read them.
var errWaitersOff = errors.New("the reader was opened without waiters (Options.NoWaiters)")

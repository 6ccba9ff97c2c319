package writer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/semundo/semundo/inject"
	"github.com/semundo/semundo/internal/procfs"
	"github.com/semundo/semundo/plan"
	"github.com/semundo/semundo/reader"
	"github.com/semundo/semundo/sysvsem"
	"github.com/semundo/semundo/undo"
	"golang.org/x/sys/unix"
)

// scratchSize holds the largest thing a write passes through the target's
// memory: the values of a 65535-semaphore set (GETALL).
const scratchSize = 2*plan.MaxSems + 4096

// maxNsems is the largest set a write handles: sem_num is 16 bits.
const maxNsems = 65535

// Inject writes want into process pid, whose current list is cur (as a
// reader saw it), by ptrace syscall injection: the semctl and semop calls
// run inside pid, with its IPC namespace, its credentials and its undo
// list. pid is stopped for the duration (one of its threads: the list is
// shared by all of them), and left exactly as it was, stopped or running.
//
// The caller needs the right to ptrace pid (the kernel's
// PTRACE_MODE_ATTACH check); semundo adds no privilege of its own. A pid
// that holds the caller's own list, or is traced, is refused (CheckTarget).
func Inject(pid int, cur, want undo.List, opts *Options) (err error) {
	defer func() { err = namingPID(pid, err) }()
	if err := CheckTarget(pid, opts.callers()...); err != nil {
		return err
	}
	s, err := inject.Seize(pid)
	if err != nil {
		return err
	}
	defer func() {
		if derr := s.Detach(); derr != nil && err == nil {
			err = derr
		}
		if opts != nil && opts.Stats != nil {
			opts.Stats(pid, s.Stats())
		}
	}()
	addr, err := s.Mmap(scratchSize)
	if err != nil {
		return err
	}
	defer func() {
		if merr := s.Munmap(addr, scratchSize); merr != nil && err == nil {
			err = merr
		}
	}()
	return apply(&remote{s: s, addr: addr, local: sameIPCNamespace(pid)}, cur, want, opts)
}

// sameIPCNamespace reports whether pid shares the caller's IPC namespace:
// then its sets can be read from here, sparing it a stop per call.
func sameIPCNamespace(pid int) bool {
	var self, other unix.Stat_t
	if unix.Stat("/proc/self/ns/ipc", &self) != nil || unix.Stat(fmt.Sprintf("/proc/%d/ns/ipc", pid), &other) != nil {
		return false
	}
	return self.Dev == other.Dev && self.Ino == other.Ino
}

// WriteProcess writes want into process pid: it reads pid's current list with r,
// injects the write, and reads the list again to check that the listed sets
// now hold exactly what was asked.
func WriteProcess(r *reader.Reader, pid int, want undo.List, opts *Options) error {
	return WriteProcesses(r, []Write{{PID: pid, List: want}}, opts)
}

// Write is one process's part of a WriteProcesses.
type Write struct {
	PID  int
	List undo.List
}

// Job is one injection: the list a process holds now and the one to write.
type Job struct {
	PID     int
	Current undo.List
	Want    undo.List
}

// WriteProcesses writes several processes' lists with one read of all lists
// before and one after (WriteProcess reads twice per process). It stops at the
// first failure and returns it; the writes before it stay. Every target
// passes CheckTarget before the first write.
func WriteProcesses(r *reader.Reader, writes []Write, opts *Options) error {
	for _, w := range writes {
		if err := CheckTarget(w.PID, opts.callers()...); err != nil {
			return err
		}
	}
	snap, err := r.Scan()
	if err != nil {
		return err
	}
	jobs := make([]Job, len(writes))
	for i, w := range writes {
		jobs[i] = Job{PID: w.PID, Current: snap.ByPID(w.PID).Undo(), Want: w.List}
	}
	if opts != nil && opts.Injector != nil {
		if err := opts.Injector(jobs); err != nil {
			return err
		}
	} else {
		for _, j := range jobs {
			if err := Inject(j.PID, j.Current, j.Want, opts); err != nil {
				return err // it names the pid
			}
		}
	}
	after, err := r.Scan()
	if err != nil {
		return err
	}
	for _, w := range writes {
		if err := verifyIn(after, w.PID, w.List); err != nil {
			return err
		}
	}
	return nil
}

// Verify reads pid's list and checks that each set of want holds exactly
// want's adjustments.
func Verify(r *reader.Reader, pid int, want undo.List) error {
	snap, err := r.Scan()
	if err != nil {
		return err
	}
	return verifyIn(snap, pid, want)
}

func verifyIn(snap *reader.Snapshot, pid int, want undo.List) error {
	got := snap.ByPID(pid)
	if got == nil && len(want) > 0 && exited(pid) {
		return targetErrorf(pid, "pid %d exited right after the write, and its exit applied the list it was given: %w", pid, ErrExited)
	}
	for _, w := range want {
		var adj []int16
		if got != nil {
			if e := got.Entry(w.Semid); e != nil {
				adj = e.Adj
			}
		}
		if !equalEntry(adj, w.Adj) {
			return targetErrorf(pid, "pid %d: set %d %s after the write (did another thread change it?): %w",
				pid, w.Semid, difference(adj, w.Adj), ErrMismatch)
		}
	}
	return nil
}

// exited reports whether pid is gone or a zombie: its list was applied.
func exited(pid int) bool {
	st, err := procfs.NewDefaultFS().Stat(pid)
	return err != nil || st.Dead()
}

// difference says in a few words how got differs from want, naming the
// first semaphore that differs: a set may hold thousands of values, and an
// error is one short line.
func difference(got, want []int16) string {
	if got == nil {
		return "has no entry"
	}
	if len(got) != len(want) {
		return fmt.Sprintf("holds %d values, not %d", len(got), len(want))
	}
	first, n := -1, 0
	for i := range got {
		if got[i] != want[i] {
			if first < 0 {
				first = i
			}
			n++
		}
	}
	if first < 0 {
		return "holds what was asked"
	}
	msg := fmt.Sprintf("semaphore %d holds %d, not %d", first, got[first], want[first])
	if n > 1 {
		msg += fmt.Sprintf(", and %d more differ", n-1)
	}
	return msg
}

// equalEntry compares adjustments, where got is nil when the process has
// no entry for the set: a listed set must have one, even of zeros (a
// write creates it).
func equalEntry(got, want []int16) bool {
	return got != nil && slices.Equal(got, want)
}

// remote runs the calls inside the target.
type remote struct {
	s      *inject.Session
	addr   uintptr
	cache  *Creds
	semmsl int // from IPC_INFO, once read
	// local: the target is in the caller's IPC namespace, so reading a set
	// (IPC_STAT, GETALL, IPC_INFO) need not run in the target. Changes
	// (semop) always do: they belong to its undo list.
	local bool
}

func (x *remote) pid() int { return x.s.Pid() }

func (x *remote) semctl(semid int32, cmd int, out []byte) error {
	if _, err := x.s.Syscall(unix.SYS_SEMCTL, uintptr(semid), 0, uintptr(cmd), x.addr); err != nil {
		return err
	}
	return x.s.ReadMemory(x.addr, out)
}

func (x *remote) stat(semid int32) (sysvsem.SemidDS, error) {
	if x.local {
		ds, err := sysvsem.Stat(int(semid))
		if err == nil && ds.Nsems > maxNsems {
			return ds, fmt.Errorf("set %d has %d semaphores; semundo writes sets of at most %d", semid, ds.Nsems, maxNsems)
		}
		// The caller may lack read permission where the target has it.
		if !errors.Is(err, unix.EACCES) {
			return ds, err
		}
	}
	buf := make([]byte, sysvsem.SemidDSSize)
	if err := x.semctl(semid, unix.IPC_STAT, buf); err != nil {
		return sysvsem.SemidDS{}, err
	}
	ds, err := sysvsem.DecodeSemidDS(buf)
	if err == nil && ds.Nsems > maxNsems {
		return ds, fmt.Errorf("set %d has %d semaphores; semundo writes sets of at most %d", semid, ds.Nsems, maxNsems)
	}
	return ds, err
}

func (x *remote) getAll(semid int32, nsems int) ([]uint16, error) {
	if x.local {
		vals, err := sysvsem.GetAll(int(semid))
		if err == nil && len(vals) != nsems {
			return nil, errSizeChanged(semid)
		}
		if !errors.Is(err, unix.EACCES) {
			return vals, err
		}
	}
	// The kernel writes the values of the set as it is now, which could be
	// a larger set with the same id: unless SEMMSL keeps every set within
	// the scratch memory, check the size first.
	if x.semmsl == 0 {
		info, err := x.info()
		if err != nil {
			return nil, err
		}
		x.semmsl = int(info.Semmsl)
	}
	if x.semmsl > maxNsems {
		ds, err := x.stat(semid)
		if err != nil {
			return nil, err
		}
		if ds.Nsems != nsems {
			return nil, errSizeChanged(semid)
		}
	}
	buf := make([]byte, 2*nsems)
	if err := x.semctl(semid, sysvsem.CmdGetAll, buf); err != nil {
		return nil, err
	}
	vals := make([]uint16, nsems)
	for i := range vals {
		vals[i] = binary.NativeEndian.Uint16(buf[2*i:])
	}
	return vals, nil
}

func (x *remote) semop(semid int32, ops []plan.Op) error {
	buf := make([]byte, 6*len(ops))
	for i, o := range ops {
		binary.NativeEndian.PutUint16(buf[6*i:], o.Num)
		binary.NativeEndian.PutUint16(buf[6*i+2:], uint16(o.Op))
		binary.NativeEndian.PutUint16(buf[6*i+4:], uint16(o.Flg))
	}
	if err := x.s.WriteMemory(x.addr, buf); err != nil {
		return err
	}
	_, err := x.s.Syscall(unix.SYS_SEMOP, uintptr(semid), x.addr, uintptr(len(ops)))
	return err
}

// info runs IPC_INFO in the target: the limits of its IPC namespace.
func (x *remote) info() (sysvsem.Seminfo, error) {
	if x.local {
		info, _, err := sysvsem.Info()
		return info, err
	}
	buf := make([]byte, sysvsem.SeminfoSize)
	if err := x.semctl(0, sysvsem.CmdIPCInfo, buf); err != nil {
		return sysvsem.Seminfo{}, fmt.Errorf("IPC_INFO in pid %d: %w", x.pid(), err)
	}
	return sysvsem.DecodeSeminfo(buf)
}

func (x *remote) semopm() (int, error) {
	info, err := x.info()
	return int(info.Semopm), err
}

func (x *remote) creds() (*Creds, error) {
	if x.cache == nil {
		c, err := ReadCreds(x.pid())
		if err != nil {
			return nil, err
		}
		x.cache = c
	}
	return x.cache, nil
}

func errSizeChanged(semid int32) error {
	return fmt.Errorf("set %d was replaced by a set of another size during the write: %w", semid, ErrNoSet)
}

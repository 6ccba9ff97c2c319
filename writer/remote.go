package writer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/semundo/semundo/inject"
	"github.com/semundo/semundo/internal/par"
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
	if err := CheckTarget(pid, opts.callers()...); err != nil {
		return err
	}
	return injectChecked(pid, cur, want, opts)
}

// injectChecked is Inject for a target that passed CheckTarget.
func injectChecked(pid int, cur, want undo.List, opts *Options) (err error) {
	defer func() { err = namingPID(pid, err) }()
	// In the caller's IPC namespace the sets are read from here, sparing
	// the target a stop per call; else from a thread that joins its
	// namespace, which is cheaper than injected reads.
	if own := ownNamespace(); own != 0 && namespaceOf(fmt.Sprintf("/proc/%d/ns/ipc", pid)) == own {
		th := &nsThread{ns: own, stay: true}
		defer th.caps.close()
		return injectOn(pid, cur, want, opts, th)
	}
	return onThreadOfItsOwn(func() error {
		th := &nsThread{ns: ownNamespace()}
		defer th.caps.close()
		return injectOn(pid, cur, want, opts, th)
	})
}

// nsThread is the OS thread a write runs on, as far as namespaces go: the
// IPC namespace it is in, whether it may join another (stay: it runs
// other goroutines afterwards), and whether it did (moved: it must end
// with its goroutine). A worker of InjectAll keeps one for all its
// targets, so that targets in one namespace (a restored container's) cost
// one join and one thread, not one each.
type nsThread struct {
	ns          uint64
	stay, moved bool
	// caps: the answers of the capability walk for its targets, which
	// in a restored container are all alike.
	caps capCache
}

// namespaceOf returns the inode of the namespace file at path, 0 when it
// cannot be read.
func namespaceOf(path string) uint64 {
	var st unix.Stat_t
	if unix.Stat(path, &st) != nil {
		return 0
	}
	return st.Ino
}

// ownNamespace returns the inode of the calling thread's IPC namespace, 0
// when it cannot be read.
func ownNamespace() uint64 {
	return namespaceOf(fmt.Sprintf("/proc/self/task/%d/ns/ipc", unix.Gettid()))
}

// local reports whether the sets of thread tid of pid, which is seized,
// can be read from th's thread, joining its namespace when th may. It
// returns the inode of that thread's IPC namespace, 0 if unread.
func (th *nsThread) local(pid, tid int) (uint64, bool) {
	ns := namespaceOf(fmt.Sprintf("/proc/%d/task/%d/ns/ipc", pid, tid))
	switch {
	case ns == 0:
		return 0, false
	case ns == th.ns:
		return ns, true
	case th.stay || joinIPCNamespace(pid, tid) != nil:
		return ns, false
	}
	th.ns, th.moved = ns, true
	return ns, true
}

// onThreadOfItsOwn runs f on an OS thread that ends with it: f may change
// the thread (join a namespace) that no other goroutine must run on
// afterwards. The goroutine stays locked (never UnlockOSThread), and the
// runtime ends the thread when it returns. Never the main thread: the
// runtime would keep it, wedged, and the kernel shows the main thread as
// the process (/proc/self/ns, kcmp in CheckTarget). While one goroutine
// holds the main thread locked, no other can run on it.
func onThreadOfItsOwn(f func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			done <- onThreadOfItsOwn(f)
			runtime.UnlockOSThread()
			return
		}
		done <- f()
	}()
	return <-done
}

// injectOn seizes pid and writes want, from th's thread: the calling
// goroutine's, locked to it. Sets are read from there when the thread is
// in pid's IPC namespace or may join it (th.local), else by injected
// calls.
func injectOn(pid int, cur, want undo.List, opts *Options, th *nsThread) (err error) {
	// The namespace is joined and the sets checked between the attach and
	// the stop when they can be read from here: the target is held by
	// then (a seized process keeps its pid, even if it dies, until it is
	// detached, so the namespace opened is the target's), and this is
	// not stop time. The kernel checks the target's own rights again when
	// its semop runs.
	var x *remote
	var sets []*setState
	s, err := inject.SeizeThen(pid, func(s *inject.Session) error {
		x = &remote{s: s, early: true, caps: &th.caps}
		x.ipcNS, x.local = th.local(pid, s.Tid())
		if !x.local {
			return nil
		}
		var err error
		sets, err = validate(x, cur, want)
		if errors.Is(err, errNotStopped) {
			// A set the caller may not read: the target reads it,
			// once stopped.
			sets, err = nil, nil
		}
		return err
	})
	if err != nil {
		return err
	}
	x.early = false
	defer func() {
		if derr := s.Detach(); derr != nil && err == nil {
			err = derr
		}
		if opts != nil && opts.Stats != nil {
			opts.Stats(pid, s.Stats())
		}
	}()
	defer func() {
		if x.addr != 0 {
			if merr := s.Munmap(x.addr, scratchSize); merr != nil && err == nil {
				err = merr
			}
		}
	}()
	if sets == nil {
		return apply(x, cur, want, opts)
	}
	return write(x, sets, opts)
}

// joinIPCNamespace moves the calling thread into the IPC namespace of
// thread tid of pid (it
// needs CAP_SYS_ADMIN there). The kernel detaches the thread's undo list
// on the way (exit_sem); the list is shared with the process's other
// threads (a Go runtime clones them with CLONE_SYSVSEM), so nothing is
// applied: the thread just holds none afterwards, and it makes no semop.
func joinIPCNamespace(pid, tid int) error {
	// The seized thread's: it is alive, where the leader may be a zombie
	// whose namespaces /proc no longer shows.
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/task/%d/ns/ipc", pid, tid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Setns(fd, unix.CLONE_NEWIPC)
}

// InjectAll runs Inject for each job, up to opts.Parallel of them at a time:
// the targets are separate processes, and each session keeps to its own
// thread (ptrace binds a tracee to the thread that seized it). Each job is
// all or nothing, as Inject is. After the first failure no new job starts;
// the error then names, besides each failure, the processes whose lists
// were written and those never tried, since a failure does not undo the
// other targets' writes. Every target passes CheckTarget before the
// first write.
func InjectAll(jobs []Job, opts *Options) error {
	for _, j := range jobs {
		if err := CheckTarget(j.PID, opts.callers()...); err != nil {
			return err
		}
	}
	return injectAll(jobs, opts)
}

// injectAll is InjectAll for targets that passed CheckTarget.
func injectAll(jobs []Job, opts *Options) error {
	var (
		mu      sync.Mutex
		next    int
		stopped bool
		wg      sync.WaitGroup
	)
	errs := make([]error, len(jobs))
	done := make([]bool, len(jobs))
	// Each worker writes from a thread of its own, which joins the
	// targets' namespace once and ends with the worker.
	worker := func() error {
		th := &nsThread{ns: ownNamespace()}
		defer th.caps.close()
		for {
			mu.Lock()
			if stopped || next == len(jobs) {
				mu.Unlock()
				return nil
			}
			i := next
			next++
			mu.Unlock()
			j := jobs[i]
			err := namingPID(j.PID, injectOn(j.PID, j.Current, j.Want, opts, th))
			mu.Lock()
			errs[i], done[i] = err, err == nil
			stopped = stopped || err != nil
			mu.Unlock()
		}
	}
	for range min(opts.parallel(), len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = onThreadOfItsOwn(worker)
		}()
	}
	wg.Wait()
	var failed []error
	for _, e := range errs {
		if e != nil {
			failed = append(failed, e)
		}
	}
	if len(failed) == 0 {
		return nil
	}
	// One line: the failures (each names its pid), in job order.
	err := failed[0]
	for _, e := range failed[1:] {
		err = fmt.Errorf("%w; %w", err, e)
	}
	var written, untried []string
	for i, j := range jobs {
		switch {
		case done[i]:
			written = append(written, strconv.Itoa(j.PID))
		case errs[i] == nil:
			untried = append(untried, strconv.Itoa(j.PID))
		}
	}
	if len(written)+len(untried) == 0 {
		return err
	}
	return fmt.Errorf("%w (written: %s; not tried: %s)", err, pidList(written), pidList(untried))
}

// pidList says "none" or lists the pids.
func pidList(pids []string) string {
	if len(pids) == 0 {
		return "none"
	}
	return "pids " + strings.Join(pids, " ")
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
// before and one after (WriteProcess reads twice per process), injecting
// with InjectAll unless opts.Injector is set. After a failure no new write
// starts, the writes done stay, and the error says which processes were
// written. Every target passes CheckTarget before the first write.
func WriteProcesses(r *reader.Reader, writes []Write, opts *Options) error {
	// A check is a status read and a kcmp, on as many threads as the
	// writes will use: 99 of them took 1.8 ms on one while CRIU held the
	// tree stopped.
	if _, err := par.Map(len(writes), opts.parallel(), func(i int) (struct{}, error) {
		return struct{}{}, CheckTarget(writes[i].PID, opts.callers()...)
	}); err != nil {
		return err
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
	} else if err := injectAll(jobs, opts); err != nil {
		return err
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
	s *inject.Session
	// addr is the scratch mapping in the target, 0 until a call needs it.
	addr uintptr
	// noRoom: the padding after the injector's stub has proved too small
	// for a call's arguments (inject.ErrNoRoom), so they go to addr.
	noRoom bool
	cache  *Creds
	caps   *capCache // the writer thread's, for the capability walk
	semmsl int       // from IPC_INFO, once read
	// local: the target is in the caller's IPC namespace, so reading a set
	// (IPC_STAT, GETALL, IPC_INFO) need not run in the target. Changes
	// (semop) always do: they belong to its undo list.
	local bool
	// ipcNS: the inode of the seized thread's IPC namespace, as read
	// between the attach and the stop (0 if unread).
	ipcNS uint64
	// early: the target is seized but not stopped yet, so nothing may be
	// injected (semctl answers errNotStopped).
	early bool
}

func (x *remote) pid() int { return x.s.Pid() }

// mapped returns the scratch mapping, mapping it first if need be.
func (x *remote) mapped() (uintptr, error) {
	if x.addr == 0 {
		addr, err := x.s.Mmap(scratchSize)
		if err != nil {
			return 0, err
		}
		x.addr = addr
	}
	return x.addr, nil
}

// put copies b, which the call only reads, into the target and returns
// the address: after the injector's stub when it fits there (no page to
// map and unmap: a typical write injects one call, its semop, and a
// killed writer leaves no page behind), else into the scratch mapping. The
// target's stack is no place for it: a Go thread's goroutine stack may end
// right below its red zone.
func (x *remote) put(b []byte) (uintptr, error) {
	if !x.noRoom {
		addr, err := x.s.ReadOnly(b)
		if err == nil {
			return addr, nil
		}
		if !errors.Is(err, inject.ErrNoRoom) {
			return 0, err
		}
		x.noRoom = true
	}
	addr, err := x.mapped()
	if err != nil {
		return 0, err
	}
	return addr, x.s.WriteMemory(addr, b)
}

// errNotStopped: a check needs an injected call, which must wait for the
// stop (see injectOn).
var errNotStopped = errors.New("needs the target stopped")

func (x *remote) semctl(semid int32, cmd int, out []byte) error {
	if x.early {
		return errNotStopped
	}
	addr, err := x.mapped()
	if err != nil {
		return err
	}
	if _, err := x.s.Syscall(unix.SYS_SEMCTL, uintptr(semid), 0, uintptr(cmd), addr); err != nil {
		return err
	}
	return x.s.ReadMemory(addr, out)
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
	addr, err := x.put(buf)
	if err != nil {
		return err
	}
	_, err = x.s.Syscall(unix.SYS_SEMOP, uintptr(semid), addr, uintptr(len(ops)))
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
		// The seized thread's: it makes the semop, and credentials are
		// per thread (a zombie leader may show others).
		tid := x.s.Tid()
		if st := x.s.ThreadStatus(); x.early && st.Tgid != 0 {
			// Before the stop the thread may change its credentials
			// after any read: the seize's serves as well as a new one,
			// which would cost a status read per target.
			x.cache = credsIn(tid, st, x.caps, x.ipcNS)
		} else {
			// Once stopped they are fixed: read them as they are.
			c, err := readCreds(tid, x.caps)
			if err != nil {
				return nil, err
			}
			x.cache = c
		}
	}
	return x.cache, nil
}

func errSizeChanged(semid int32) error {
	return fmt.Errorf("set %d was replaced by a set of another size during the write: %w", semid, ErrNoSet)
}

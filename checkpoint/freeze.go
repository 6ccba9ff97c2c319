package checkpoint

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/semundo/semundo/internal/procfs"
	"golang.org/x/sys/unix"
)

// freezer stops a group of processes and lets them go again.
type freezer interface {
	freeze() error
	thaw() error
}

// cgroupFreezer uses the cgroup v2 freezer of one cgroup.
type cgroupFreezer struct {
	dir    string
	frozen bool // already frozen before: leave it so
	wrote  bool // freeze wrote cgroup.freeze: thaw must undo it
}

// stopTimeout bounds the wait for processes to stop (SIGSTOP) or a cgroup
// to freeze.
const stopTimeout = 5 * time.Second

func (f *cgroupFreezer) freeze() error {
	b, err := os.ReadFile(filepath.Join(f.dir, "cgroup.freeze"))
	if err != nil {
		return fmt.Errorf("cgroup %s: no cgroup v2 freezer (%w): pass a cgroup v2 directory, or leave out --cgroup to use SIGSTOP", f.dir, err)
	}
	f.frozen = strings.TrimSpace(string(b)) == "1"
	if f.frozen {
		return nil
	}
	if err := os.WriteFile(filepath.Join(f.dir, "cgroup.freeze"), []byte("1"), 0); err != nil {
		return fmt.Errorf("freeze cgroup %s: %w", f.dir, err)
	}
	f.wrote = true
	// The write returns before every task has stopped: cgroup.events says
	// when.
	deadline := time.Now().Add(stopTimeout)
	for {
		ev, err := os.ReadFile(filepath.Join(f.dir, "cgroup.events"))
		if err != nil {
			return fmt.Errorf("cgroup %s: %w", f.dir, err)
		}
		if bytes.Contains(ev, []byte("frozen 1")) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s did not freeze within %v (a task in uninterruptible sleep?)", f.dir, stopTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

func (f *cgroupFreezer) thaw() error {
	if f.frozen || !f.wrote {
		return nil
	}
	if err := os.WriteFile(filepath.Join(f.dir, "cgroup.freeze"), []byte("0"), 0); err != nil {
		return fmt.Errorf("thaw cgroup %s: %w", f.dir, err)
	}
	return nil
}

// sleeper is a thread left running because it sleeps in semop or
// semtimedop, with what it showed when it was left: if it shows anything
// else afterwards, it ran meanwhile.
type sleeper struct {
	pid, tid int
	nr       int    // the system call it sleeps in
	switches uint64 // procfs.TaskSwitches
}

// signalFreezer holds processes still one by one, each thread in a ptrace
// interrupt stop except those asleep in semop or semtimedop, which are
// left asleep; a process that cannot be traced (another tracer holds it)
// is stopped with SIGSTOP. Processes in group-stop before are left alone.
// It lets go only what it held.
type signalFreezer struct {
	pids []int
	// stopped: in group-stop before the freeze (filled by freeze unless
	// the caller knows already).
	stopped map[int]bool
	sent    []int
	// traced: thread id -> signal to deliver when it is let go.
	traced map[int]int
	// leader: thread id -> its process, for the threads in traced.
	leader   map[int]int
	sleepers []sleeper
	// warnings say where a process had to be stopped whole although a
	// thread of it sleeps in semop.
	warnings []string
}

// semCall says whether nr is a system call a sleeping thread is left in.
func semCall(nr int) bool { return nr == unix.SYS_SEMOP || nr == unix.SYS_SEMTIMEDOP }

// sleepersOf returns the threads of pid that sleep in semop or
// semtimedop and its other live threads (none when it has exited).
func sleepersOf(pid int) (asleep []sleeper, others []int) {
	threads, err := procfs.NewDefaultFS().Threads(pid)
	if err != nil {
		return nil, nil
	}
	for _, th := range threads {
		if th.Stat.Dead() {
			continue
		}
		if s, ok := asleepInSem(pid, th.TID, th.Stat.State); ok {
			asleep = append(asleep, s)
		} else {
			others = append(others, th.TID)
		}
	}
	return asleep, others
}

// asleepInSem says whether thread tid, in state (of its stat), sleeps in
// semop or semtimedop, and records its switch count. Capture takes these
// before it reads anything: a run after that shows in the count, and one
// before it changed nothing the capture reads afterwards.
func asleepInSem(pid, tid int, state byte) (sleeper, bool) {
	if state != 'S' {
		return sleeper{}, false
	}
	p := procfs.NewDefaultFS()
	nr, err := p.TaskSyscall(pid, tid)
	if err != nil || !semCall(nr) {
		return sleeper{}, false
	}
	sw, err := p.TaskSwitches(pid, tid)
	if err != nil {
		return sleeper{}, false
	}
	return sleeper{pid: pid, tid: tid, nr: nr, switches: sw}, true
}

func (f *signalFreezer) freeze() error {
	if f.stopped == nil {
		f.stopped = map[int]bool{}
		for _, pid := range f.pids {
			st, err := procState(pid)
			if err != nil {
				return err
			}
			f.stopped[pid] = st == 'T'
		}
	}
	f.traced, f.leader = map[int]int{}, map[int]int{}
	// Every process's threads are interrupted first and waited for
	// after, so that they stop in parallel.
	interrupted := map[int][]int{}
	sleeping := map[int][]sleeper{}
	var order []int
	for _, pid := range f.pids {
		if f.stopped[pid] {
			continue
		}
		// Thread by thread, not SIGSTOP: a stop wakes a thread asleep in
		// semop with EINTR (semop never restarts after a stop), so those
		// are left asleep; and one that enters semop just before its
		// interrupt has its call restarted (restartSemEINTR). Nor does
		// a ptrace stop tell the parent (SIGCHLD) or run a SIGCONT
		// handler, and it ends by itself if semundo is killed.
		asleep, others := sleepersOf(pid)
		var tids []int
		var err error
		if len(asleep) == 0 && childOfCaller(pid) {
			// The caller's own child: its wait for it, if one runs
			// meanwhile, would take the ptrace stops (a tracer hears of
			// them whatever the options). SIGSTOP, which such a wait
			// does not report, wakes no sleeper here.
			err = errOwnChild
		} else {
			tids, err = f.interrupt(pid, others)
		}
		if err == nil {
			interrupted[pid], sleeping[pid] = tids, asleep
			order = append(order, pid)
			continue
		}
		// Traced by another (strace, gdb): only SIGSTOP holds it.
		if len(asleep) > 0 && err != errOwnChild {
			f.warnings = append(f.warnings, fmt.Sprintf("pid %d was stopped with SIGSTOP (its thread %d sleeps in semop and may see EINTR): %v", pid, asleep[0].tid, err))
		}
		if err := unix.Kill(pid, unix.SIGSTOP); err != nil {
			return fmt.Errorf("stop pid %d: %w", pid, err)
		}
		f.sent = append(f.sent, pid)
	}
	for _, pid := range order {
		asleep, err := f.settle(pid, sleeping[pid], interrupted[pid])
		if err != nil {
			return err
		}
		f.sleepers = append(f.sleepers, asleep...)
	}
	// SIGSTOP takes effect when each thread next leaves the kernel: wait
	// until every thread reports stopped.
	for _, pid := range f.sent {
		if err := waitStopped(pid); err != nil {
			return err
		}
	}
	return nil
}

// interrupt seizes the given threads of pid and sends each a ptrace
// interrupt, and returns those it seized (not those that exited). On
// failure it lets go those it seized.
func (f *signalFreezer) interrupt(pid int, tids []int) ([]int, error) {
	var mine []int
	fail := func(err error) ([]int, error) {
		for _, tid := range mine {
			f.release(tid)
			delete(f.traced, tid)
		}
		return nil, err
	}
	for _, tid := range tids {
		if err := unix.PtraceSeize(tid); err != nil {
			if errors.Is(err, unix.ESRCH) {
				continue // exited
			}
			return fail(fmt.Errorf("ptrace thread %d: %w", tid, err))
		}
		mine = append(mine, tid)
		f.traced[tid], f.leader[tid] = 0, pid
		if err := unix.PtraceInterrupt(tid); err != nil && !errors.Is(err, unix.ESRCH) {
			return fail(fmt.Errorf("interrupt thread %d: %w", tid, err))
		}
	}
	return mine, nil
}

// settle waits until the interrupted threads tids of pid stop, then holds
// any thread they created meanwhile (asleep in semop: left so, and added
// to asleep), until every live thread of pid is held or asleep; it
// returns those asleep.
func (f *signalFreezer) settle(pid int, asleep []sleeper, tids []int) ([]sleeper, error) {
	known := map[int]bool{}
	for _, s := range asleep {
		known[s.tid] = true
	}
	p := procfs.NewDefaultFS()
	for round := 0; ; round++ {
		for _, tid := range tids {
			known[tid] = true
			if _, ok := f.traced[tid]; !ok {
				continue
			}
			if err := f.waitTraceStop(pid, tid); err != nil {
				return nil, err
			}
		}
		// A thread cloned before its creator stopped runs free: hold it
		// too. Held threads create none, so this ends.
		all, err := p.Tasks(pid)
		if err != nil {
			return asleep, nil // exited
		}
		var fresh []int
		for _, tid := range all {
			if known[tid] {
				continue
			}
			known[tid] = true
			st, err := p.TaskStat(pid, tid)
			if err != nil || st.Dead() {
				continue
			}
			if s, ok := asleepInSem(pid, tid, st.State); ok {
				asleep = append(asleep, s)
			} else {
				fresh = append(fresh, tid)
			}
		}
		if len(fresh) == 0 {
			return asleep, nil
		}
		if round == 100 {
			return nil, fmt.Errorf("pid %d keeps creating threads: retry", pid)
		}
		if tids, err = f.interrupt(pid, fresh); err != nil {
			return nil, err
		}
	}
}

// release lets traced thread tid go: at once from its stop; when it is
// not stopped yet (interrupted a moment ago), once it is; and when it was
// killed while held (a thread left asleep woke and ended the process, or
// SIGKILL), by reaping it.
func (f *signalFreezer) release(tid int) error {
	sig := f.traced[tid]
	deadline := time.Now().Add(stopTimeout)
	for {
		err := detach(tid, sig)
		if !errors.Is(err, unix.ESRCH) {
			if err != nil {
				return fmt.Errorf("release thread %d: %w", tid, err)
			}
			return nil
		}
		dead, ws, werr := traceReport(tid)
		switch {
		case werr != nil:
			return nil // not ours any more
		case dead || ws == 0 && exiting(f.leader[tid], tid):
			reapTraced(f.leader[tid], tid)
			return nil
		case ws.Stopped() && int(ws>>16) == unix.PTRACE_EVENT_STOP:
			restartSemEINTR(tid) // as waitTraceStop does
		case ws.Stopped():
			sig = int(ws.StopSignal())
		case ws == 0 && time.Now().After(deadline):
			return fmt.Errorf("release thread %d: it did not stop within %v of its interrupt", tid, stopTimeout)
		case ws == 0:
			time.Sleep(100 * time.Microsecond)
		}
	}
}

// detach lets traced thread tid go, delivering sig (0: none).
func detach(tid, sig int) error {
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_DETACH, uintptr(tid), 0, uintptr(sig), 0, 0); e != 0 {
		return e
	}
	return nil
}

// waitTraceStop waits until traced thread tid stops, keeping the signal a
// signal-delivery-stop reports for its release.
func (f *signalFreezer) waitTraceStop(pid, tid int) error {
	deadline := time.Now().Add(stopTimeout)
	for {
		dead, ws, err := traceReport(tid)
		if err != nil {
			if errors.Is(err, unix.ECHILD) {
				delete(f.traced, tid) // gone and reaped already
				return nil
			}
			return fmt.Errorf("wait for thread %d of pid %d: %w", tid, pid, err)
		}
		switch {
		case dead:
			delete(f.traced, tid)
			reapTraced(pid, tid)
			return nil
		case ws.Stopped() && int(ws>>16) == unix.PTRACE_EVENT_STOP:
			// The interrupt stop, or a group-stop (its signal is the
			// stop's, not one to deliver). A thread that entered semop
			// after it was looked at was woken with EINTR: make the
			// kernel restart the call instead.
			restartSemEINTR(tid)
			return nil
		case ws.Stopped():
			// A signal arrived first: it is held in this stop and
			// delivered at the release.
			f.traced[tid] = int(ws.StopSignal())
			return nil
		}
		if st, err := procfs.NewDefaultFS().TaskStat(pid, tid); err == nil && st.State == 't' {
			// Held, but another wait of this process took the report
			// (the caller waiting for its own child): ask the thread.
			if sig, event := heldStop(tid); event {
				restartSemEINTR(tid)
			} else {
				f.traced[tid] = sig
			}
			return nil
		}
		if exiting(pid, tid) {
			// A leader whose process is ending is reported only once
			// its other threads are reaped: the release takes it.
			return nil
		}
		if time.Now().After(deadline) {
			st, _ := procfs.NewDefaultFS().TaskStat(pid, tid)
			nr, _ := procfs.NewDefaultFS().TaskSyscall(pid, tid)
			return fmt.Errorf("thread %d of pid %d did not stop within %v (state %c, system call %d; blocked in uninterruptible sleep?): retry when it is not", tid, pid, stopTimeout, st.State, nr)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// errOwnChild: a process the caller started is held with SIGSTOP.
var errOwnChild = errors.New("the caller's own child")

// childOfCaller says whether pid's parent is the calling process.
func childOfCaller(pid int) bool {
	st, err := procfs.NewDefaultFS().Stat(pid)
	return err == nil && st.PPID == os.Getpid()
}

// heldStop says, for traced thread tid in a ptrace stop whose report
// another wait took, whether it is an interrupt stop, else which signal
// it holds for delivery (0 for a group-stop, which has none).
func heldStop(tid int) (sig int, event bool) {
	var si siginfo
	if _, _, e := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_GETSIGINFO, uintptr(tid), 0, uintptr(unsafe.Pointer(&si)), 0, 0); e != 0 {
		return 0, false // EINVAL: a group-stop
	}
	if si.Signo == int32(unix.SIGTRAP) && int(si.Code>>8) == unix.PTRACE_EVENT_STOP {
		return 0, true
	}
	return int(si.Signo), false
}

// exiting says whether thread tid of pid has exited (a zombie, maybe not
// yet reportable) or is gone.
func exiting(pid, tid int) bool {
	st, err := procfs.NewDefaultFS().TaskStat(pid, tid)
	return err != nil || st.Dead()
}

// siginfo is waitid's siginfo_t for SIGCHLD.
type siginfo struct {
	Signo, Errno, Code, _ int32
	Pid, UID, Status      int32
	_                     [100]byte
}

func waitid(tid, options int) (siginfo, error) {
	var si siginfo
	_, _, e := unix.Syscall6(unix.SYS_WAITID, unix.P_PID, uintptr(tid), uintptr(unsafe.Pointer(&si)), uintptr(options|unix.WNOHANG|unix.WALL), 0, 0)
	if e != 0 {
		return si, e
	}
	return si, nil
}

// si_code values of a SIGCHLD siginfo that mean an exit.
const (
	cldExited = 1
	cldKilled = 2
	cldDumped = 3
)

// traceReport returns what traced thread tid reports, without waiting:
// its stop (taken, as wait4 would give it), or that it exited (left
// unreaped: reapTraced decides), or nothing (ws 0).
func traceReport(tid int) (dead bool, ws unix.WaitStatus, err error) {
	// Without WEXITED this takes a stop, never an exit.
	si, err := waitid(tid, unix.WSTOPPED)
	if err != nil || si.Pid != 0 {
		return false, unix.WaitStatus(uint32(si.Status)<<8 | 0x7f), err
	}
	// A tracer hears of a tracee's stops whatever the options say: with
	// WNOWAIT this only looks.
	si, err = waitid(tid, unix.WEXITED|unix.WNOWAIT)
	if err != nil || si.Pid == 0 {
		return false, 0, err
	}
	switch si.Code {
	case cldExited, cldKilled, cldDumped:
		return true, 0, nil
	}
	return false, 0, nil // a stop that came in between: the next call takes it
}

// reapTraced takes the exit of traced thread tid of pid, which only its
// tracer's wait releases: until then the real parent hears nothing (and a
// leader is not reported while a thread of it is unreaped). The one left
// is the leader of a process that semundo itself started: there the
// tracer's wait would be the parent's, and the exit status its own code
// waits for.
func reapTraced(pid, tid int) {
	if tid == pid {
		if st, err := procfs.NewDefaultFS().Stat(pid); err == nil && st.PPID == os.Getpid() {
			return
		}
	}
	// A leader is reportable once its other threads are reaped: give it
	// a moment.
	for range 1000 {
		var ws unix.WaitStatus
		got, err := unix.Wait4(tid, &ws, unix.WALL|unix.WNOHANG, nil)
		if got == tid || err != nil {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// ran returns the first thread left running that ran since it was left
// (it no longer sleeps in the same call with the same switch count), as
// an error naming it, or nil.
func (f *signalFreezer) ran() error {
	for _, s := range f.sleepers {
		st, err := procfs.NewDefaultFS().TaskStat(s.pid, s.tid)
		if err != nil {
			return fmt.Errorf("thread %d of pid %d, left asleep in semop, ended: %w", s.tid, s.pid, errWoken)
		}
		// The count last: a switch after the state was read shows.
		now, ok := asleepInSem(s.pid, s.tid, st.State)
		if !ok || now.nr != s.nr || now.switches != s.switches {
			return fmt.Errorf("thread %d of pid %d, left asleep in semop, was %w", s.tid, s.pid, errWoken)
		}
	}
	return nil
}

func (f *signalFreezer) thaw() error {
	var errs []error
	// Leaders last: one is reported only once its threads are reaped.
	tids := slices.Collect(maps.Keys(f.traced))
	isLeader := func(tid int) int {
		if f.leader[tid] == tid {
			return 1
		}
		return 0
	}
	slices.SortFunc(tids, func(a, b int) int { return cmp.Compare(isLeader(a), isLeader(b)) })
	for _, tid := range tids {
		if err := f.release(tid); err != nil {
			errs = append(errs, err)
		}
	}
	f.traced = nil
	for _, pid := range f.sent {
		if err := unix.Kill(pid, unix.SIGCONT); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("continue pid %d: %w", pid, err))
		}
	}
	f.sent = nil
	return errors.Join(errs...)
}

// waitStopped waits until every thread of pid is in group-stop (or pid is
// gone).
func waitStopped(pid int) error {
	p := procfs.NewDefaultFS()
	deadline := time.Now().Add(stopTimeout)
	for {
		// One read answers for a single-threaded process, the usual case.
		st, err := p.Stat(pid)
		if err != nil {
			return nil // exited: nothing left to capture
		}
		if st.NumThreads == 1 && (st.State == 'T' || st.State == 't') {
			return nil
		}
		tids, err := p.Tasks(pid)
		if err != nil {
			return nil // exited: nothing left to capture
		}
		all := true
		for _, tid := range tids {
			st, err := p.TaskStat(pid, tid)
			if err == nil && st.State != 'T' && st.State != 't' && !st.Dead() {
				all = false
				break
			}
		}
		if all {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d did not stop within %v of SIGSTOP (blocked in uninterruptible sleep?): retry when it is not", pid, stopTimeout)
		}
		// A stop takes microseconds: poll finely.
		time.Sleep(100 * time.Microsecond)
	}
}

// procState returns the state letter of /proc/pid/stat.
func procState(pid int) (byte, error) {
	st, err := procfs.NewDefaultFS().Stat(pid)
	return st.State, err
}

// cgroupSleeper returns a thread of cgroup dir (or of a cgroup below it)
// that sleeps in semop or semtimedop, or nil. A cgroup frozen already is
// left as it is, and has none to wake.
func cgroupSleeper(dir string) (*sleeper, error) {
	if b, err := os.ReadFile(filepath.Join(dir, "cgroup.freeze")); err != nil || strings.TrimSpace(string(b)) == "1" {
		return nil, nil // not a cgroup v2 directory: the freeze says so
	}
	var found *sleeper
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() || found != nil {
			return err
		}
		b, err := os.ReadFile(filepath.Join(path, "cgroup.procs"))
		if err != nil {
			return nil // removed meanwhile
		}
		for _, f := range strings.Fields(string(b)) {
			pid, err := strconv.Atoi(f)
			if err != nil {
				continue
			}
			if asleep, _ := sleepersOf(pid); len(asleep) > 0 {
				found = &asleep[0]
				return filepath.SkipAll
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	return found, nil
}

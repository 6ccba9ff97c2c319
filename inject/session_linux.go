//go:build linux && (amd64 || arm64)

package inject

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	"github.com/semundo/semundo/internal/procfs"
	"golang.org/x/sys/unix"
)

const (
	pageSize  = 4096
	maxStops  = 100000 // bound on stops handled for one call; each one is kernel progress
	siTkill   = -6     // SI_TKILL: rt_tgsigqueueinfo refuses to forge it
	sembufLen = 6      // sizeof(struct sembuf)
	maxSembuf = 1 << 16
	// errnoMax: a raw result in [-4095, -1] is a negated errno.
	errnoMax = 4095
)

// defaultIgnored holds the signals whose default action does nothing to a
// running process (SIGCHLD, SIGCONT, SIGURG, SIGWINCH): unless caught, they
// would not have interrupted a blocked semop.
const defaultIgnored = 1<<(unix.SIGCHLD-1) | 1<<(unix.SIGCONT-1) | 1<<(unix.SIGURG-1) | 1<<(unix.SIGWINCH-1)

// spinWait bounds how long a wait polls before it sleeps.
const spinWait = 200 * time.Microsecond

// activeSessions counts sessions that hold a tracer thread; tests use it to
// check that no session leaks.
var activeSessions atomic.Int32

// hooks let tests reach paths that real targets rarely take. They belong to
// one session, so tests running in parallel do not see each other's; the
// zero value is what Seize uses.
type hooks struct {
	skipELFCheck     bool               // reach the CS check with a 32-bit target
	noSuspendSeccomp bool               // show what a seccomp filter does to injected calls
	pokeOnly         bool               // skip process_vm_readv/writev and /proc/<pid>/mem
	syscallStops     bool               // run injected calls between syscall stops, never the self-stop
	selfStopAnyway   bool               // the self-stop even under an active seccomp filter
	popf             bool               // restore flags with popfq even when stackless would do
	noVDSO           bool               // find the stub's place through /proc maps
	dataApart        bool               // ReadOnly data in padding of its own, not after the stub
	onStage          func(stage string) // called at named points of an injection
}

type sessionState int

const (
	// stateNew: seized, not yet stopped where we want it.
	stateNew sessionState = iota
	// stateParked: the thread sits in a PTRACE_EVENT_STOP with its own
	// registers in place. If the caller dies now the kernel detaches and
	// the thread resumes as if never touched.
	stateParked
	// stateInStub: the thread's registers point into the stub (it sits at
	// the self-stop or the syscall-exit-stop of the last injected call). If the caller dies
	// now the thread finishes the stub, which restores its registers.
	stateInStub
	// stateDirty: an injection failed midway; the thread is somewhere in
	// the stub. Only Detach is allowed.
	stateDirty
	stateExited   // the traced thread is gone (and reaped)
	stateDetached // Detach ran
)

type region struct{ addr, size uintptr }

type caughtSignal struct {
	sig  unix.Signal
	info unix.Siginfo
}

// Session is one ptrace session on one thread of a target process. All
// methods must be called from the goroutine that called Seize: ptrace binds
// the tracee to the tracer's OS thread, and Seize locks the goroutine to it
// (runtime.LockOSThread) until Detach. A Session is not safe for concurrent
// use.
type Session struct {
	pid, tid     int
	tracer       int // OS thread id holding the ptrace attachment
	state        sessionState
	saved        unix.PtraceRegs // the thread's registers at the first stop
	parked       unix.PtraceRegs // what it holds while parked: saved, or with its semop re-issued (restartAtOnce)
	resumed      unix.PtraceRegs // what the stub restores: saved, restart applied (resumeRegs)
	stub         uintptr         // the stub's address in the target, 0 until placed
	stubOrig     []byte          // the bytes the stub replaced
	stubWhere    string          // the mapping that holds the stub, for tests and errors
	stubLimit    uintptr         // where the free bytes after the stub end; 0: none usable (a far stub)
	dataAt       uintptr         // where ReadOnly puts data, 0 until its first call
	dataOrig     []byte          // the bytes there that ReadOnly may replace
	dataUsed     int             // how many of them it has replaced
	stopSig      unix.Signal     // the signal the stub stops itself with after a call (stopSignal); 0: syscall stops
	stopAt       uintptr         // where the thread stands in that signal's delivery stop
	sigCgt       uint64          // the signals the process catches, when the thread was picked
	picked       procfs.Status   // the seized thread's status, read just before the seize
	atSelfStop   bool            // the thread sits in the stub's own signal stop, inside get_signal
	early        earlySite       // the stub's place, found before the stop (findSiteEarly)
	mem          int             // /proc/<pid>/task/<tid>/mem opened read-write, when memOpen
	memOpen      bool            // forceWrite opened mem
	memTried     bool            // forceWrite tried to open mem (once a session)
	restartEarly bool            // restartAtOnce changed the registers at the first stop
	moved        bool            // the thread left its first stop (rest ran)
	regions      []region        // scratch mappings still mapped in the target
	signals      []caughtSignal  // signals to queue again at Detach
	start        time.Time
	stats        Stats
	hooks        hooks
	proc         procfs.FS // the target's tasks; the zero FS reads /proc
	arch         archState // what one architecture needs besides the registers
}

// Seize attaches to process pid and stops one of its threads (the
// thread-group leader when it is alive, else another live thread), ready for
// injection. pid may also name any thread of the process; Pid reports the
// process id. The calling goroutine stays locked to its OS thread until
// Detach, which must always be called (defer s.Detach()).
//
// Seize waits for the thread to stop. A thread in uninterruptible sleep (D
// state, a vfork parent, a cgroup-v1 frozen task) stops only when that sleep
// ends.
func Seize(pid int) (*Session, error) { return seizeWith(pid, hooks{}, nil) }

// SeizeThen is Seize with work done between the attach and the stop: before
// runs once the process is seized (its pid is held: it cannot be reused
// until Detach, even if the process dies) and before its thread is
// stopped, so what it does adds nothing to the target's stop time. Of the
// session it may only call Pid and Tid. An error from before ends the
// session (the thread is stopped and released untouched) and is returned.
func SeizeThen(pid int, before func(s *Session) error) (*Session, error) {
	return seizeWith(pid, hooks{}, before)
}

func seizeWith(pid int, h hooks, before func(s *Session) error) (*Session, error) {
	s := &Session{pid: pid, hooks: h}
	if pid <= 0 {
		return nil, s.fail("seize", ErrNoProcess, nil, fmt.Sprintf("%d is not a process id: pass the pid of a running process", pid))
	}
	self := os.Getpid()
	if pid == self {
		return nil, s.fail("seize", ErrSelf, nil, "pid is the calling process: a process cannot ptrace itself")
	}
	st, err := s.proc.Status(pid)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ESRCH) {
			return nil, s.fail("seize", ErrNoProcess, unix.ESRCH, "no process with this pid: check that it still runs")
		}
		return nil, s.fail("seize", nil, err, "cannot read /proc status")
	}
	if st.Tgid == self {
		return nil, s.fail("seize", ErrSelf, nil, "pid is a thread of the calling process: a process cannot ptrace itself")
	}
	s.pid = st.Tgid
	// The threads' stat files give the leader's too: one read fewer per
	// target, which counts when a restore seizes a hundred of them. A
	// process of one live thread is its leader's stat alone, without
	// listing its task directory (attach lists it again if that thread
	// goes away).
	var threads []procfs.Thread
	var lst procfs.Stat
	kthread := false
	if pid == s.pid && st.Threads == 1 && !st.Dead() {
		// Where status says whether it is a kernel thread (a Kthread
		// line, which newer kernels write), it says all the stat file
		// would: a process of one thread has no I/O or user worker
		// threads to leave out.
		if st.KthreadKnown {
			lst = procfs.Stat{Comm: st.Name, State: st.State, PPID: st.PPID, NumThreads: 1}
			kthread = st.Kthread
		} else {
			lst, err = s.proc.Stat(s.pid)
		}
		threads = []procfs.Thread{{TID: s.pid, Stat: lst}}
	} else if threads, err = s.proc.Threads(s.pid); err == nil {
		if i := slices.IndexFunc(threads, func(t procfs.Thread) bool { return t.TID == s.pid }); i >= 0 {
			lst = threads[i].Stat
		} else {
			lst, err = s.proc.Stat(s.pid)
		}
	}
	if err != nil {
		return nil, s.fail("seize", ErrNoProcess, unix.ESRCH, "process vanished: check that it still runs")
	}
	if kthread || lst.KernelThread() {
		return nil, s.fail("seize", ErrKernelThread, nil, fmt.Sprintf("%q is a kernel thread: it has no user memory and no undo list", lst.Comm))
	}
	if is32, ok := exeIs32Bit(s.pid); ok && is32 && !s.hooks.skipELFCheck {
		return nil, s.fail("seize", ErrTargetABI, nil, fmt.Sprintf("%q "+runs32Bit, lst.Comm))
	}

	runtime.LockOSThread()
	s.tracer = unix.Gettid()
	var leader *procfs.Status
	if pid == s.pid {
		leader = &st
	}
	if err := s.attach(threads, leader); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	s.findSiteEarly()
	var beforeErr error
	if before != nil {
		// A seized thread that is not stopped cannot be detached: it
		// is stopped either way, and let go at once after an error.
		beforeErr = before(s)
	}
	if err := s.stopFirst(); err != nil {
		s.abandon()
		runtime.UnlockOSThread()
		return nil, err
	}
	activeSessions.Add(1)
	err = beforeErr
	if err == nil {
		err = s.checkABI()
	}
	if err != nil {
		// Detach, not abandon: signals caught on the way to the stop
		// are queued again, and a semop our stop ended is issued again.
		if derr := s.Detach(); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, err
	}
	return s, nil
}

// attach picks a live thread and seizes it, retrying when the chosen thread
// exits under our feet. The first attempt picks from threads; leader, when
// not nil, is the leader's status read just before.
func (s *Session) attach(threads []procfs.Thread, leader *procfs.Status) error {
	for attempt := 0; attempt < 8; attempt++ {
		var err error
		if attempt > 0 {
			threads, err = s.proc.Threads(s.pid)
			leader = nil
		}
		if err != nil {
			return s.fail("seize", ErrNoProcess, unix.ESRCH, "process vanished: check that it still runs")
		}
		tids := liveThreads(threads, s.pid)
		if len(tids) == 0 && attempt == 0 {
			continue // the first list may be the leader's stat alone: list them all
		}
		if len(tids) == 0 {
			return s.fail("seize", ErrZombie, nil, "process has exited and waits to be reaped by its parent: nothing to inject into")
		}
		s.tid = tids[0]
		var st procfs.Status
		if leader != nil && s.tid == s.pid {
			st = *leader
		} else if st, err = s.proc.TaskStatus(s.pid, s.tid); err != nil {
			continue // the thread went away; pick another
		}
		s.sigCgt, s.picked = st.SigCgt, st
		var opts uintptr
		if st.Seccomp != 0 && s.hooks.noSuspendSeccomp {
			s.stats.SeccompActive = true
		} else if st.Seccomp != 0 {
			// A seccomp filter could turn an injected mmap into SIGSYS or
			// a kill. Suspending it (needs CAP_SYS_ADMIN) makes it apply
			// to nothing while the thread is held; the kernel clears the
			// option at detach, also when the tracer dies.
			opts = unix.PTRACE_O_SUSPEND_SECCOMP
		}
		// PTRACE_O_EXITKILL is deliberately absent: if the caller is
		// killed, the kernel detaches and the target lives on.
		err = seize(s.tid, opts|unix.PTRACE_O_TRACESYSGOOD)
		if err != nil && opts != 0 && (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL)) {
			if err = seize(s.tid, unix.PTRACE_O_TRACESYSGOOD); err == nil {
				s.stats.SeccompActive = true
			}
		}
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.ESRCH):
			continue
		case errors.Is(err, unix.EPERM):
			return s.classifyEPERM(err)
		default:
			return s.fail("seize", nil, err, "PTRACE_SEIZE failed")
		}
	}
	return s.fail("seize", ErrNoProcess, unix.ESRCH, "every thread exited while being seized: check that the process still runs")
}

// classifyEPERM tells apart the reasons PTRACE_SEIZE answers EPERM.
func (s *Session) classifyEPERM(err error) error {
	st, serr := s.proc.TaskStatus(s.pid, s.tid)
	if serr != nil {
		return s.fail("seize", ErrNoProcess, unix.ESRCH, "process vanished: check that it still runs")
	}
	// TracerPid names the tracer thread; the process is its thread group.
	tracer := st.TracerPid
	if ts, err := s.proc.Status(tracer); err == nil {
		tracer = ts.Tgid
	}
	switch {
	case st.TracerPid != 0 && tracer == os.Getpid():
		return s.fail("seize", ErrAlreadyTraced, err, "already traced by this process: Detach the other Session first")
	case st.TracerPid != 0:
		comm := "?"
		if ts, err := s.proc.Stat(tracer); err == nil {
			comm = ts.Comm
		}
		return s.fail("seize", ErrAlreadyTraced, err, fmt.Sprintf("already traced by pid %d (%s): stop that debugger, strace or CRIU first", tracer, comm))
	case st.Dead():
		return s.fail("seize", ErrZombie, err, "thread has exited: nothing to inject into")
	}
	if ts, err := s.proc.TaskStat(s.pid, s.tid); err == nil && ts.KernelThread() {
		return s.fail("seize", ErrKernelThread, err, "kernel thread: it has no user memory")
	}
	if os.Geteuid() == 0 {
		// Root is refused when the target holds capabilities outside
		// the caller's permitted set (a root confined by a container
		// or a bounding set), or by yama or an LSM.
		return s.fail("seize", ErrPermission, err, "ptrace refused to root: the target may hold capabilities this process lacks (a confined root), or kernel.yama.ptrace_scope (3 forbids all) or a security module forbids it")
	}
	return s.fail("seize", ErrPermission, err, "run as root or with CAP_SYS_PTRACE, and check kernel.yama.ptrace_scope and the target's dumpable flag")
}

// stopFirst brings the freshly seized thread into a PTRACE_EVENT_STOP and
// saves its registers.
func (s *Session) stopFirst() error {
	s.start = time.Now()
	// A thread in a job-control stop is moved into a trap by PTRACE_SEIZE
	// itself (it reports PTRACE_EVENT_STOP with the stop signal). Sending
	// PTRACE_INTERRUPT on top would queue a second trap, which the next
	// resume reports (status 0x80137f again) before the injected
	// instruction runs; an injector that takes that stop for its result
	// never runs the call. The loops below also tolerate such extra event
	// stops, since a SIGSTOP can arrive at any time.
	ws, got, err := wait4(s.tid, unix.WNOHANG)
	if err != nil {
		return s.gone("stop", err)
	}
	if got == 0 {
		s.sample()
		if err := interrupt(s.tid); err != nil {
			return s.lost("interrupt", err)
		}
		if ws, err = s.wait("interrupt"); err != nil {
			return err
		}
	}
	for i := 0; ; i++ {
		kind, sig := classify(ws)
		switch kind {
		case stopExited:
			s.state = stateExited
			return s.exited("interrupt", ws)
		case stopEvent:
			s.stats.GroupStop = sig != unix.SIGTRAP
			if err := getRegs(s.tid, &s.saved); err != nil {
				return s.lost("get registers", err)
			}
			s.parked = s.saved
			s.state = stateParked
			if s.hooks.onStage != nil {
				s.hooks.onStage("stopped")
			}
			s.stopSig = s.stopSignal()
			return s.restartAtOnce()
		case stopSignal:
			// A signal was being delivered: keep it for Detach and
			// ask for the event stop we park in.
			if err := s.catch(sig); err != nil {
				return err
			}
		}
		if i >= maxStops {
			return s.fail("interrupt", ErrUnexpectedStop, nil, "thread keeps stopping without reaching an interrupt stop")
		}
		if err := interrupt(s.tid); err != nil {
			return s.lost("interrupt", err)
		}
		if err := resume(s.tid); err != nil {
			return s.lost("interrupt", err)
		}
		if ws, err = s.wait("interrupt"); err != nil {
			return err
		}
	}
}

// Pid returns the target's process id (thread-group id).
func (s *Session) Pid() int {
	if s == nil {
		return 0
	}
	return s.pid
}

// Tid returns the id of the thread the session traces and injects into.
func (s *Session) Tid() int {
	if s == nil {
		return 0
	}
	return s.tid
}

// ThreadStatus returns the /proc status of the traced thread as the
// session read it, just before the seize: what a caller would read again
// for the thread's credentials. A thread that runs until the session
// stops it may change them meanwhile (the kernel checks the credentials
// it has when an injected call runs).
func (s *Session) ThreadStatus() procfs.Status {
	if s == nil {
		return procfs.Status{}
	}
	return s.picked
}

// Stats returns the session's figures so far.
func (s *Session) Stats() Stats {
	if s == nil {
		return Stats{}
	}
	st := s.stats
	if s.state != stateDetached && !s.start.IsZero() {
		st.StopTime = time.Since(s.start)
	}
	return st
}

// Syscall runs system call nr with up to six arguments in the target thread
// and returns its raw result. A result in [-4095, -1] is returned as a
// *SyscallError wrapping the errno; the session stays usable.
//
// The call must not block: a blocked call would stall both the target and
// the caller. For semop and semtimedop every sembuf (read back from the
// target) must carry IPC_NOWAIT, or Syscall refuses with ErrWouldBlock. Calls
// that replace the thread's restart block (nanosleep, poll, futex with a
// timeout) would break the restart of an interrupted call of the same kind.
func (s *Session) Syscall(nr uintptr, args ...uintptr) (uintptr, error) {
	if err := s.usable("syscall"); err != nil {
		return 0, err
	}
	if len(args) > 6 {
		return 0, s.fail("syscall", nil, unix.EINVAL, fmt.Sprintf("%d arguments given: a system call takes at most 6", len(args)))
	}
	if nr == unix.SYS_SEMOP || nr == unix.SYS_SEMTIMEDOP {
		if err := s.checkNowait(args); err != nil {
			return 0, err
		}
	}
	return s.inject("syscall", nr, args...)
}

// checkNowait reads the sembuf array of an injected semop back from the
// target and refuses it unless every operation has IPC_NOWAIT.
func (s *Session) checkNowait(args []uintptr) error {
	if len(args) < 3 {
		return s.fail("syscall", nil, unix.EINVAL, "semop needs semid, sops and nsops")
	}
	nsops := args[2]
	if nsops == 0 {
		return nil // the kernel rejects it without blocking
	}
	if nsops > maxSembuf {
		return s.fail("syscall", nil, unix.E2BIG, fmt.Sprintf("semop with %d operations: the kernel's limit (semopm) is far lower", nsops))
	}
	buf := make([]byte, nsops*sembufLen)
	if err := s.readMemory(args[1], buf); err != nil {
		return nil // unreadable: the kernel answers EFAULT without blocking
	}
	for i := uintptr(0); i < nsops; i++ {
		flg := int16(uint16(buf[i*sembufLen+4]) | uint16(buf[i*sembufLen+5])<<8)
		if flg&unix.IPC_NOWAIT == 0 {
			return s.fail("syscall", ErrWouldBlock, nil, fmt.Sprintf("sembuf %d lacks IPC_NOWAIT: set it on every operation so the target can never block", i))
		}
	}
	return nil
}

// Mmap maps length bytes (rounded up to whole pages) of private anonymous
// read-write memory in the target and returns the address. Detach unmaps
// whatever Munmap did not.
func (s *Session) Mmap(length int) (uintptr, error) {
	if err := s.usable("mmap"); err != nil {
		return 0, err
	}
	if length <= 0 {
		return 0, s.fail("mmap", nil, unix.EINVAL, fmt.Sprintf("length %d: pass a positive size", length))
	}
	size := (uintptr(length) + pageSize - 1) &^ (pageSize - 1)
	addr, err := s.inject("mmap", unix.SYS_MMAP, 0, size,
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS, ^uintptr(0), 0)
	if err != nil {
		return 0, err
	}
	s.regions = append(s.regions, region{addr, size})
	return addr, nil
}

// Munmap unmaps length bytes at addr in the target (normally a page from
// Mmap).
func (s *Session) Munmap(addr uintptr, length int) error {
	if err := s.usable("munmap"); err != nil {
		return err
	}
	if length <= 0 {
		return s.fail("munmap", nil, unix.EINVAL, fmt.Sprintf("length %d: pass a positive size", length))
	}
	size := (uintptr(length) + pageSize - 1) &^ (pageSize - 1)
	if _, err := s.inject("munmap", unix.SYS_MUNMAP, addr, size); err != nil {
		return err
	}
	s.forget(addr, addr+size)
	return nil
}

// forget drops [lo, hi) from the scratch regions still to unmap.
func (s *Session) forget(lo, hi uintptr) {
	var keep []region
	for _, r := range s.regions {
		end := r.addr + r.size
		if end <= lo || r.addr >= hi {
			keep = append(keep, r)
			continue
		}
		if r.addr < lo {
			keep = append(keep, region{r.addr, lo - r.addr})
		}
		if end > hi {
			keep = append(keep, region{hi, end - hi})
		}
	}
	s.regions = keep
}

// WriteMemory copies data to addr in the target with process_vm_writev,
// falling back to PTRACE_POKEDATA when the kernel denies process_vm_writev.
func (s *Session) WriteMemory(addr uintptr, data []byte) error {
	if err := s.usable("write memory"); err != nil {
		return err
	}
	for len(data) > 0 && !s.hooks.pokeOnly {
		n, err := unix.ProcessVMWritev(s.tid, []unix.Iovec{iovec(data)},
			[]unix.RemoteIovec{{Base: addr, Len: len(data)}}, 0)
		if err != nil {
			if denied(err) {
				break
			}
			return s.memErr("write memory", err, fmt.Sprintf("process_vm_writev of %d bytes at %#x failed: write to a page from Mmap", len(data), addr))
		}
		if n == 0 {
			return s.memErr("write memory", unix.EFAULT, fmt.Sprintf("nothing written at %#x: write to a page from Mmap", addr))
		}
		data, addr = data[n:], addr+uintptr(n)
	}
	if len(data) == 0 {
		return nil
	}
	if _, err := unix.PtracePokeData(s.tid, addr, data); err != nil {
		return s.memErr("write memory", err, fmt.Sprintf("PTRACE_POKEDATA of %d bytes at %#x failed: write to a page from Mmap", len(data), addr))
	}
	return nil
}

// ReadMemory fills buf from addr in the target with process_vm_readv,
// falling back to PTRACE_PEEKDATA when the kernel denies process_vm_readv.
func (s *Session) ReadMemory(addr uintptr, buf []byte) error {
	if err := s.usable("read memory"); err != nil {
		return err
	}
	if err := s.readMemory(addr, buf); err != nil {
		return s.memErr("read memory", err, fmt.Sprintf("cannot read %d bytes at %#x", len(buf), addr))
	}
	return nil
}

func (s *Session) readMemory(addr uintptr, buf []byte) error {
	for len(buf) > 0 && !s.hooks.pokeOnly {
		n, err := unix.ProcessVMReadv(s.tid, []unix.Iovec{iovec(buf)},
			[]unix.RemoteIovec{{Base: addr, Len: len(buf)}}, 0)
		if err != nil {
			if denied(err) || errors.Is(err, unix.EFAULT) {
				break // PEEKDATA also reads execute-only pages
			}
			return err
		}
		if n == 0 {
			break
		}
		buf, addr = buf[n:], addr+uintptr(n)
	}
	if len(buf) == 0 {
		return nil
	}
	_, err := unix.PtracePeekData(s.tid, addr, buf)
	return err
}

func iovec(b []byte) unix.Iovec {
	v := unix.Iovec{Base: &b[0]}
	v.SetLen(len(b))
	return v
}

func denied(err error) bool {
	return errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) || errors.Is(err, unix.ENOSYS)
}

// usable checks that the session can run an operation now.
func (s *Session) usable(op string) error {
	if s == nil {
		return &OpError{Op: op, Kind: ErrDetached, Detail: "nil session: call Seize first"}
	}
	switch s.state {
	case stateNew:
		return s.fail(op, ErrUnexpectedStop, nil, "the thread is not stopped yet: only Pid and Tid may be called before SeizeThen's function returns")
	case stateDetached:
		return s.fail(op, ErrDetached, nil, "session is detached: Seize again")
	case stateExited:
		return s.fail(op, ErrTargetExited, unix.ESRCH, "target has exited: nothing left to do but Detach")
	case stateDirty:
		return s.fail(op, ErrUnexpectedStop, nil, "an earlier failure left the session unusable: Detach it")
	}
	if t := unix.Gettid(); t != s.tracer {
		return s.fail(op, ErrWrongThread, nil, fmt.Sprintf("called on OS thread %d, traced from thread %d: call Session methods from the goroutine that called Seize", t, s.tracer))
	}
	return nil
}

// inject runs one system call in the thread through the stub, placing the
// stub first if this is the session's first call. The thread is left at
// the call's self-stop or syscall-exit-stop, inside the stub: from the moment its
// registers point there, it can reach its own state without the caller.
func (s *Session) inject(op string, nr uintptr, args ...uintptr) (uintptr, error) {
	if err := s.ensureStub(); err != nil {
		return 0, err
	}
	var a [6]uintptr
	copy(a[:], args)
	regs := callRegs(s.resumed, s.stub, nr, a)
	if err := s.putRegs(&regs); err != nil {
		return 0, s.lost(op, err)
	}
	s.state = stateDirty
	if s.hooks.onStage != nil {
		s.hooks.onStage("in-stub")
	}
	var ret uint64
	var err error
	if s.stopSig != 0 {
		ret, err = s.runToSelfStop(op)
	} else {
		ret, err = s.run(op, s.stub, nr)
	}
	if err != nil {
		return 0, err
	}
	s.state = stateInStub
	if s.hooks.onStage != nil {
		s.hooks.onStage("exited")
	}
	s.stats.Injections++
	if nr == unix.SYS_MMAP || nr == unix.SYS_MUNMAP {
		s.stats.MemoryCalls++
	}
	if r := int64(ret); r < 0 && r >= -errnoMax {
		return 0, &SyscallError{Pid: s.pid, Nr: nr, Errno: unix.Errno(-r)}
	}
	return uintptr(ret), nil
}

// run executes the system call instruction at addr with PTRACE_SYSCALL (to
// the syscall-enter-stop, then to the syscall-exit-stop) and returns the
// call's result.
//
// PTRACE_SINGLESTEP would need one stop fewer, but its SIGTRAP is forced on
// the thread: when the thread blocks or ignores SIGTRAP, the kernel
// (force_sig_info_to_task) resets the process's SIGTRAP action to SIG_DFL
// and unblocks it, destroying the target's own setting (measured here). And
// if the caller died while the thread sat in the step's signal-delivery-stop,
// the kernel would deliver that SIGTRAP and kill the target; a syscall stop's
// exit code (SIGTRAP|0x80 with PTRACE_O_TRACESYSGOOD) is not a valid signal
// and is dropped instead.
func (s *Session) run(op string, addr, nr uintptr) (uint64, error) {
	entered := false
	if err := toSyscall(s.tid); err != nil {
		return 0, s.lost(op, err)
	}
	for i := 0; i < maxStops; i++ {
		ws, err := s.wait(op)
		if err != nil {
			return 0, err
		}
		switch kind, sig := classify(ws); kind {
		case stopSyscall:
			var r unix.PtraceRegs
			if err := getRegs(s.tid, &r); err != nil {
				return 0, s.lost(op, err)
			}
			if entered {
				return retval(&r), nil
			}
			if detail, err := s.checkEntry(&r, addr, nr); err != nil {
				return 0, s.lost(op, err)
			} else if detail != "" {
				return 0, s.fail(op, ErrUnexpectedStop, nil, detail)
			}
			entered = true
		case stopSignal:
			// Signals are dequeued on the way to user mode, before
			// the instruction runs: keep them for Detach.
			if err := s.catch(sig); err != nil {
				return 0, err
			}
		}
		// Event stops (a group stop, a leftover interrupt) also come
		// before the instruction runs; resuming runs nothing else.
		if err := toSyscall(s.tid); err != nil {
			return 0, s.lost(op, err)
		}
	}
	return 0, s.fail(op, ErrUnexpectedStop, nil, fmt.Sprintf("the injected syscall did not complete within %d stops", maxStops))
}

// rest brings a thread that is in the stub back to a PTRACE_EVENT_STOP
// with its own saved registers, the state of a fresh session. Its
// registers first become the ones the stub would restore (no system
// call in progress, restart already applied), so a caller dying anywhere on the way leaves
// it right, whatever stop it is in. The event stop lies in the kernel's
// get_signal, before its restart logic (arch_do_signal_or_restart): there
// the saved registers, -ERESTART* value and all, can go back, and the
// kernel restarts the interrupted call as if the thread had never been
// touched, now with the true signal state (a handler without SA_RESTART
// gets its EINTR).
func (s *Session) rest(op string) error {
	if s.state != stateInStub && s.state != stateDirty {
		return nil
	}
	if s.atSelfStop && s.state == stateInStub {
		// The self-stop is a signal-delivery stop, inside get_signal
		// before the restart logic, as the event stop below is: the
		// parked registers can go back at once, one stop fewer.
		if err := s.putRegs(&s.parked); err != nil {
			return s.lost(op, err)
		}
		if s.hooks.onStage != nil {
			s.hooks.onStage("restored")
		}
		s.atSelfStop = false
		s.state = stateParked
		s.moved = true
		return nil
	}
	back := &s.resumed
	if s.stub == 0 {
		back = &s.parked // nothing was injected: the registers are the parked ones
	}
	if err := s.putRegs(back); err != nil {
		return s.lost(op, err)
	}
	if s.hooks.onStage != nil {
		s.hooks.onStage("restored")
	}
	if err := s.toEventStop(op); err != nil {
		return err
	}
	// The parked registers, not the saved ones: a semop our stop ended
	// stays set up to be issued again until restartSemop decides, so a
	// caller dying in between leaves no EINTR.
	if err := s.putRegs(&s.parked); err != nil {
		return s.lost(op, err)
	}
	s.state = stateParked
	s.moved = true
	return nil
}

// toEventStop moves the thread from whatever stop it is in to a
// PTRACE_EVENT_STOP, keeping signals that arrive on the way for Detach.
func (s *Session) toEventStop(op string) error {
	for i := 0; i < maxStops; i++ {
		if err := interrupt(s.tid); err != nil {
			return s.lost(op, err)
		}
		if err := resume(s.tid); err != nil {
			return s.lost(op, err)
		}
		ws, err := s.wait(op)
		if err != nil {
			return err
		}
		kind, sig := classify(ws)
		switch kind {
		case stopEvent:
			return nil
		case stopSignal:
			if err := s.catch(sig); err != nil {
				return err
			}
		}
	}
	return s.fail(op, ErrUnexpectedStop, nil, "thread never reached an interrupt stop")
}

// catch records the signal of the current signal-delivery-stop.
func (s *Session) catch(sig unix.Signal) error {
	var si unix.Siginfo
	if err := getSiginfo(s.tid, &si); err != nil {
		return s.lost("signal", err)
	}
	s.signals = append(s.signals, caughtSignal{sig, si})
	s.stats.Signals++
	return nil
}

// Detach unmaps the scratch pages still mapped, queues again the signals
// that arrived during the session, restores the thread's registers and lets
// it go: an interrupted syscall restarts as the kernel would have restarted
// it, and a thread that was in a job-control stop stops again. Detach is
// idempotent, returns nil when the target has exited, and must be called
// from the goroutine that called Seize.
func (s *Session) Detach() error {
	if s == nil || s.state == stateDetached {
		return nil
	}
	if t := unix.Gettid(); t != s.tracer {
		return s.fail("detach", ErrWrongThread, nil, fmt.Sprintf("called on OS thread %d, traced from thread %d: call Detach from the goroutine that called Seize", t, s.tracer))
	}
	defer s.release()
	if s.state == stateExited {
		return nil
	}
	var errs []error
	// failed keeps err for the result; it reports whether the target has
	// exited, after which Detach has nothing left to do.
	failed := func(err error) bool {
		if err == nil {
			return false
		}
		if s.state == stateExited {
			return true
		}
		errs = append(errs, err)
		return false
	}
	for (s.state == stateParked || s.state == stateInStub) && len(s.regions) > 0 {
		r := s.regions[0]
		s.regions = s.regions[1:]
		if _, err := s.inject("munmap", unix.SYS_MUNMAP, r.addr, r.size); failed(err) {
			return nil
		}
	}
	if failed(s.rest("detach")) {
		return nil
	}
	// Only once parked is the thread out of the stub for good.
	if s.state == stateParked && failed(s.removeStub()) {
		return nil
	}
	if failed(s.restartSemop()) || failed(s.beforeRequeue()) {
		return nil
	}
	for _, c := range s.signals {
		if failed(s.requeue(c)) {
			return nil
		}
	}
	s.signals = nil
	if err := detach(s.tid); err != nil {
		if err := s.lost("detach", err); s.state != stateExited {
			errs = append(errs, err)
		}
	}
	s.stats.StopTime = time.Since(s.start)
	return errors.Join(errs...)
}

// release ends the session's hold on the OS thread.
func (s *Session) release() {
	if s.memOpen {
		unix.Close(s.mem)
		s.memOpen = false
	}
	s.state = stateDetached
	if s.stats.StopTime == 0 {
		s.stats.StopTime = time.Since(s.start)
	}
	activeSessions.Add(-1)
	runtime.UnlockOSThread()
}

// abandon detaches after a failed Seize, leaving the thread untouched.
func (s *Session) abandon() {
	if s.state == stateExited {
		return
	}
	if s.state == stateParked {
		_ = s.putRegs(&s.parked)
	}
	if err := detach(s.tid); err != nil {
		_ = s.lost("detach", err)
	}
	s.state = stateDetached
}

// restartSemop undoes a side effect of stopping a thread blocked in semop or
// semtimedop: unlike most calls, these end with -EINTR instead of a restart
// code when the thread is stopped (see signal(7), "interruption by stop
// signals"), so the target would see its semop fail. When the EINTR came
// from our interrupt alone (no signal that would have interrupted it arrived,
// the thread was not already job-control stopped) the thread is set up to
// issue the same call again, which is what it would have done untouched.
// A semtimedop restarts with its full timeout.
func (s *Session) restartSemop() error {
	if s.state != stateParked {
		return nil
	}
	r := s.saved
	switch {
	case s.semopRestartable():
		s.reissueSemop(&r)
		s.stats.RestartedSemop = true
	case s.restartEarly:
		// A signal came that would have interrupted the call: its
		// EINTR stands, as the kernel made it.
		s.stats.RestartedSemop = false
	default:
		return nil
	}
	if err := s.putRegs(&r); err != nil {
		return s.lost("detach", err)
	}
	return nil
}

// restartAtOnce sets a thread whose semop our stop ended with EINTR up to
// issue it again, right at the first stop: if the caller died before
// Detach, the kernel would hand the EINTR to the target. The registers
// change as soon as they show such a semop, before the slower look at the
// pending signals (a /proc read), because a caller dying in between would
// leave the EINTR; when the look finds a signal that would have
// interrupted the call, the saved registers go back and its EINTR stands.
// Detach decides again with the signals known by then (restartSemop).
func (s *Session) restartAtOnce() error {
	if s.stats.GroupStop || !s.semopEINTR() {
		return nil
	}
	r := s.saved
	s.reissueSemop(&r)
	if err := s.putRegs(&r); err != nil {
		return s.lost("interrupt", err)
	}
	if !s.semopRestartable() {
		if err := s.putRegs(&s.saved); err != nil {
			return s.lost("interrupt", err)
		}
		return nil
	}
	s.parked = r
	s.restartEarly = true
	return nil
}

// semopRestartable reports whether the thread sits in a semop or
// semtimedop that our stop alone ended with EINTR: no signal that would
// have interrupted it arrived, and it was not job-control stopped.
func (s *Session) semopRestartable() bool {
	if s.stats.GroupStop || !s.semopEINTR() {
		return false
	}
	st, err := s.proc.TaskStatus(s.pid, s.tid)
	if err != nil {
		return false // gone; the caller finds out
	}
	var caught uint64
	for _, c := range s.signals {
		caught |= 1 << (uint(c.sig) - 1)
	}
	interrupting := (caught | st.SigPnd | st.ShdPnd) &^ st.SigBlk &^ st.SigIgn &^ (defaultIgnored &^ st.SigCgt)
	return interrupting == 0
}

// requeue queues an intercepted signal to the thread again, with its
// original siginfo where the kernel allows a tracer to forge it (codes < 0
// other than SI_TKILL, such as sigqueue's SI_QUEUE); otherwise with tgkill,
// whose siginfo names this process as sender.
func (s *Session) requeue(c caughtSignal) error {
	if c.info.Code < 0 && c.info.Code != siTkill {
		if err := rtTgsigqueueinfo(s.pid, s.tid, c.sig, &c.info); err == nil {
			return nil
		}
	}
	if err := unix.Tgkill(s.pid, s.tid, c.sig); err != nil {
		if errors.Is(err, unix.ESRCH) {
			return s.lost("detach", err)
		}
		return s.fail("detach", nil, err, fmt.Sprintf("cannot queue signal %v again", c.sig))
	}
	return nil
}

// wait waits for the next stop of the traced thread; an exit becomes
// ErrTargetExited.
func (s *Session) wait(op string) (unix.WaitStatus, error) {
	// Poll before sleeping: a traced thread usually stops within
	// microseconds, and a tracer that sleeps waits for the scheduler to
	// wake it, which on a busy machine takes far longer. That time is the
	// target's stop time. Each miss yields the CPU: the kernel often wakes
	// the target on the tracer's own CPU (the waker's), where a tracer
	// that only spins would keep it from running until the spin ends
	// (measured: with two sessions on 2 CPUs, p99 stop time 1.6-2.0 ms
	// spinning, 1.1-1.3 ms yielding).
	var ws unix.WaitStatus
	var err error
	got := 0
	for t0 := time.Now(); got == 0 && err == nil && time.Since(t0) < spinWait; {
		if ws, got, err = wait4(s.tid, unix.WNOHANG); got == 0 && err == nil {
			unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
		}
	}
	if got == 0 && err == nil {
		ws, _, err = wait4(s.tid, 0)
	}
	if err != nil {
		return ws, s.gone(op, err)
	}
	if kind, _ := classify(ws); kind == stopExited {
		s.state = stateExited
		return ws, s.exited(op, ws)
	}
	return ws, nil
}

// gone handles a failed wait: ECHILD means the thread no longer exists for us.
func (s *Session) gone(op string, err error) error {
	if errors.Is(err, unix.ECHILD) {
		s.state = stateExited
		return s.fail(op, ErrTargetExited, unix.ESRCH, "target exited: nothing was changed after that point")
	}
	return s.fail(op, nil, err, "wait4 failed")
}

// lost handles a failed ptrace request. ESRCH means the thread is no longer
// in a stop we hold, which (since only SIGKILL can resume a traced thread)
// means it is dying: wait for its exit so it is reaped and no wait blocks
// later.
func (s *Session) lost(op string, err error) error {
	if !errors.Is(err, unix.ESRCH) {
		if s.state == stateParked || s.state == stateInStub {
			s.state = stateDirty
		}
		return s.fail(op, nil, err, "ptrace request failed")
	}
	ws, werr := s.wait(op)
	if werr != nil {
		return werr
	}
	s.state = stateDirty
	return s.fail(op, ErrUnexpectedStop, err, fmt.Sprintf("ptrace answered ESRCH but the thread then reported wait status %#x", uint32(ws)))
}

// memErr reports a failed access to the target's memory or /proc files.
// Such a failure is often the first sign that the target was killed (its mm
// is gone); a ptrace request tells: it fails with ESRCH unless the thread
// still sits in our stop. With err nil it only checks, returning nil when
// the thread is still held.
func (s *Session) memErr(op string, err error, detail string) error {
	var r unix.PtraceRegs
	if perr := getRegs(s.tid, &r); perr != nil {
		return s.lost(op, perr)
	}
	if err == nil {
		return nil
	}
	return s.fail(op, nil, err, detail)
}

func (s *Session) exited(op string, ws unix.WaitStatus) error {
	how := fmt.Sprintf("exit status %d", ws.ExitStatus())
	if ws.Signaled() {
		how = "killed by " + unix.SignalName(ws.Signal())
	}
	return s.fail(op, ErrTargetExited, unix.ESRCH, "target exited ("+how+"): nothing was changed after that point")
}

func (s *Session) fail(op string, kind, err error, detail string) error {
	return &OpError{Pid: s.pid, Tid: s.tid, Op: op, Kind: kind, Err: err, Detail: detail}
}

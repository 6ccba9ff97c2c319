package helper

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A process's right over another is the kernel's to judge, and the kernel
// judges the credentials of the process that asks: its ids, its capability
// sets, and the user namespace those capabilities belong to. A daemon
// cannot hold a requester's credentials itself (they are per thread, and a Go
// process cannot enter another user namespace: setns(CLONE_NEWUSER) needs a
// single-threaded caller), so it forks a child that takes them on (Creds),
// in this order, before anything else runs in it:
//
//   - supplementary groups, real/effective/saved gids, filesystem gid, then
//     the uids (keeping capabilities across the change), all as the
//     daemon's user namespace numbers them, which is how the kernel and
//     /proc/<pid>/status show them: the ids need no mapping, even where the
//     opener's user namespace does not map them;
//   - the opener's user namespace (setns), where the child starts with every
//     capability;
//   - the opener's permitted and effective capabilities in it, a bounding
//     set and ambient set cut to the permitted one, and no_new_privs;
//   - then the kernel's own check of the access (accessAttach or
//     accessRead) against a pidfd of the target;
//   - then, for a write, a session of its own (setsid, so that a signal to
//     the daemon's process group cannot stop an injection halfway) and
//     execve of the helper, which does the ptrace work with those
//     credentials: a root-owned process stays out of reach of a user
//     namespace's root.
//
// Without Creds (Run for a process's own writes) the child keeps the
// parent's credentials as they are and makes no check: it only gets its
// session and descriptors, then executes the helper.
//
// The child is made by a raw clone(2) and runs only raw system calls until
// execve: no allocation, no stack growth (nosplit), no race-detector hooks
// (norace), and every signal blocked until just before execve. It is a
// plain fork, with its own copy of the daemon's memory: sharing it
// (CLONE_VM|CLONE_VFORK, as Go's own fork and exec does) would have the
// child call childMain over the stack frames the waiting parent returns
// through, which only Go's runtime-internal vfork code avoids. The copy
// costs most of an open's time (BenchmarkOpenReadClose).

// Access is the check a child makes, with the credentials it took on,
// before it executes anything.
type Access uintptr

const (
	// AccessNone: no check.
	AccessNone Access = iota
	// AccessAttach: PTRACE_MODE_ATTACH_REALCREDS, as PTRACE_ATTACH and
	// /proc/<pid>/mem check it. pidfd_getfd(2) makes that very check
	// before it looks up the descriptor (kernel/pid.c, __pidfd_fget): with
	// a descriptor number no process can have, it fails EBADF when access
	// is allowed and EPERM when it is not, and takes nothing.
	AccessAttach
	// AccessRead: PTRACE_MODE_READ_REALCREDS, as kcmp(2) checks it on both
	// of its processes before comparing anything.
	AccessRead
)

// impossibleFD is above the largest fs.nr_open the kernel accepts
// (sysctl_nr_open_max is below INT_MAX), so no process has it open.
const impossibleFD = 0x7fffffff

// kcmpVM is KCMP_VM: the cheapest comparison, never made when access is
// refused.
const kcmpVM = 1

// Exit statuses of a child that only checks. They mean what the helper's
// statuses of the same numbers mean.
const (
	childAllowed = ExitOK
	childDenied  = ExitPermission
	childGone    = ExitGone
	childSetup   = 127 // a credential step failed; the report pipe says which
)

// Steps of the child, reported with their errno when one fails.
var childSteps = [...]string{
	1: "setgroups", 2: "setresgid", 3: "setfsgid", 4: "keep capabilities", 5: "setresuid",
	6: "regain capabilities", 7: "setfsuid", 8: "setns into the user namespace",
	9: "drop from the bounding set", 10: "capset", 11: "raise ambient capabilities",
	12: "set no_new_privs", 13: "check access", 14: "arrange descriptors",
	15: "close other descriptors", 16: "restore the signal mask", 17: "execve",
	18: "setsid",
}

// childProg is everything the child needs, prepared before the fork as
// plain numbers and pointers into memory that stays alive until the child
// has executed or exited.
type childProg struct {
	ngroups, groups          uintptr
	rgid, egid, sgid, fsgid  uintptr
	ruid, euid, suid, fsuid  uintptr
	userns                   uintptr // -1: stay in the daemon's
	capHdr, capAll, capFinal uintptr // *CapUserHeader, *[2]CapUserData
	keepBnd, ambient         uint64
	lastCap                  uintptr
	mode                     Access
	pidfd, targetPID         uintptr
	report                   uintptr // write end of the report pipe
	setCreds                 bool    // take on the credentials above
	exec                     bool
	path, argv, envp         uintptr
	fds                      [4]uintptr // become 0..3; the rest close
	closeTo                  uintptr    // without close_range, close up to this
	sigmask                  uintptr    // the mask to restore before execve
	errbuf                   [2]uint32  // step, errno
	pidfdOut                 int32      // CLONE_PIDFD stores the child's pidfd here
	_                        [4]byte
	poll                     unix.PollFd   // groupExited's
	wait                     unix.Timespec // groupExited's timeout, which ppoll overwrites
}

// childFail reports the failed step on the report pipe and exits.
//
//go:nosplit
//go:norace
//go:nocheckptr
func childFail(p *childProg, step uint32, errno syscall.Errno) {
	p.errbuf[0], p.errbuf[1] = step, uint32(errno)
	syscall.RawSyscall(unix.SYS_WRITE, p.report, uintptr(unsafe.Pointer(&p.errbuf[0])), 8)
	for {
		syscall.RawSyscall(unix.SYS_EXIT_GROUP, childSetup, 0, 0)
	}
}

//go:nosplit
//go:norace
//go:nocheckptr
func childExit(code uintptr) {
	for {
		syscall.RawSyscall(unix.SYS_EXIT_GROUP, code, 0, 0)
	}
}

// childMain runs in the forked child and never returns.
//
//go:nosplit
//go:norace
//go:nocheckptr
func childMain(p *childProg) {
	if p.setCreds {
		childCreds(p)
	}
	childCheck(p)
	if !p.exec {
		childExit(childAllowed)
	}
	childExec(p)
}

// childCreds takes on the credentials of p.
//
//go:nosplit
//go:norace
//go:nocheckptr
func childCreds(p *childProg) {
	var e syscall.Errno
	if _, _, e = syscall.RawSyscall(unix.SYS_SETGROUPS, p.ngroups, p.groups, 0); e != 0 {
		childFail(p, 1, e)
	}
	if _, _, e = syscall.RawSyscall(unix.SYS_SETRESGID, p.rgid, p.egid, p.sgid); e != 0 {
		childFail(p, 2, e)
	}
	// setfsgid returns the previous value, never an error: ask again.
	syscall.RawSyscall(unix.SYS_SETFSGID, p.fsgid, 0, 0)
	if r, _, _ := syscall.RawSyscall(unix.SYS_SETFSGID, ^uintptr(0), 0, 0); uint32(r) != uint32(p.fsgid) {
		childFail(p, 3, syscall.EPERM)
	}
	if _, _, e = syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_KEEPCAPS, 1, 0, 0, 0, 0); e != 0 {
		childFail(p, 4, e)
	}
	if _, _, e = syscall.RawSyscall(unix.SYS_SETRESUID, p.ruid, p.euid, p.suid); e != 0 {
		childFail(p, 5, e)
	}
	// The change of uid emptied the effective set; the permitted one was
	// kept. setfsuid and setns need CAP_SETUID and CAP_SYS_ADMIN.
	if _, _, e = syscall.RawSyscall(unix.SYS_CAPSET, p.capHdr, p.capAll, 0); e != 0 {
		childFail(p, 6, e)
	}
	syscall.RawSyscall(unix.SYS_SETFSUID, p.fsuid, 0, 0)
	if r, _, _ := syscall.RawSyscall(unix.SYS_SETFSUID, ^uintptr(0), 0, 0); uint32(r) != uint32(p.fsuid) {
		childFail(p, 7, syscall.EPERM)
	}
	if p.userns != ^uintptr(0) {
		if _, _, e = syscall.RawSyscall(unix.SYS_SETNS, p.userns, unix.CLONE_NEWUSER, 0); e != 0 {
			childFail(p, 8, e)
		}
	}
	for c := uintptr(0); c <= p.lastCap; c++ {
		if p.keepBnd&(1<<c) != 0 {
			continue
		}
		if _, _, e = syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, c, 0, 0, 0, 0); e != 0 && e != syscall.EINVAL {
			childFail(p, 9, e)
		}
	}
	if _, _, e = syscall.RawSyscall(unix.SYS_CAPSET, p.capHdr, p.capFinal, 0); e != 0 {
		childFail(p, 10, e)
	}
	for c := uintptr(0); c <= p.lastCap; c++ {
		if p.ambient&(1<<c) == 0 {
			continue
		}
		if _, _, e = syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_RAISE, c, 0, 0, 0); e != 0 {
			childFail(p, 11, e)
		}
	}
	if _, _, e = syscall.RawSyscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); e != 0 {
		childFail(p, 12, e)
	}
}

// childCheck asks the kernel for the access p.mode names, and exits with
// the answer unless it is yes.
//
//go:nosplit
//go:norace
//go:nocheckptr
func childCheck(p *childProg) {
	var e syscall.Errno
	switch p.mode {
	case AccessNone:
		return
	case AccessAttach:
		// A process whose execve runs on a thread other than its
		// leader (a Go program's may) has for a moment its exiting
		// leader in its pid's place, and pidfd_getfd answers ESRCH
		// (seen: writes through the mount refused with ENOENT, under
		// load). Gone is when the pidfd says the thread group
		// exited; until then, ask again: at once after a yield
		// first, then after waiting on the pidfd, for a loaded
		// machine may take milliseconds to let the old leader exit.
		for try := 0; ; try++ {
			_, _, e = syscall.RawSyscall(unix.SYS_PIDFD_GETFD, p.pidfd, impossibleFD, 0)
			if e != syscall.ESRCH || try == attachYields+attachNaps {
				break
			}
			if try < attachYields {
				if groupExited(p, 0) {
					break
				}
				syscall.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0)
			} else if groupExited(p, attachNap) {
				break
			}
		}
		switch e {
		case syscall.EBADF:
		case syscall.EPERM:
			childExit(childDenied)
		case syscall.ESRCH:
			childExit(childGone)
		default:
			childFail(p, 13, e)
		}
	case AccessRead:
		_, _, e = syscall.RawSyscall6(unix.SYS_KCMP, p.targetPID, p.targetPID, kcmpVM, 0, 0, 0)
		switch e {
		case 0:
		case syscall.EPERM:
			childExit(childDenied)
		case syscall.ESRCH:
			childExit(childGone)
		default:
			childFail(p, 13, e)
		}
	}
	// kcmp named the target by number: make sure it is still the process
	// the pidfd holds, not a new one with its pid.
	if _, _, e = syscall.RawSyscall6(unix.SYS_PIDFD_SEND_SIGNAL, p.pidfd, 0, 0, 0, 0, 0); e == syscall.ESRCH {
		childExit(childGone)
	}
}

// While a target's leader is being replaced by an execve, childCheck asks
// again after a yield attachYields times (an idle machine is done within
// them: microseconds), then after up to attachNap of waiting on the pidfd
// attachNaps times: a second more. 1,000 yields alone were too few for a
// process under the race detector next to busy CPUs, where a check took
// up to 39 ms (TestCheckAttachThroughExec failed 11 of 20 runs with the
// yields alone); 100 naps (0.1 s) were, by elimination of the other
// ESRCH answers a check can meet, too few once in CI's test step, two
// packages' tests at a time on 2 CPUs (1 check of 131 called the process
// gone; not reproduced in 200 runs beside each other). The budget costs nothing for a process that exited: the
// pidfd says so at once. A process whose leader exited while its other
// threads run answers ESRCH for good, and is called gone only after all of
// them, about 1 s.
const (
	attachYields = 1000
	attachNaps   = 1000
	attachNap    = int64(time.Millisecond)
)

// groupExited reports whether the process p.pidfd holds has exited, all
// its threads, waiting up to nap nanoseconds for it: its pidfd polls
// readable then, and not while one thread replaces another as leader.
//
//go:nosplit
//go:norace
//go:nocheckptr
func groupExited(p *childProg, nap int64) bool {
	p.poll = unix.PollFd{Fd: int32(p.pidfd), Events: unix.POLLIN}
	// Set each time: ppoll writes back the time it did not wait.
	p.wait = unix.Timespec{Nsec: nap}
	n, _, e := syscall.RawSyscall6(unix.SYS_PPOLL, uintptr(unsafe.Pointer(&p.poll)), 1, uintptr(unsafe.Pointer(&p.wait)), 0, 0, 0)
	return e == 0 && n == 1 && p.poll.Revents&unix.POLLIN != 0
}

// childExec executes the helper in a session of its own, with p.fds as
// its descriptors 0 to 3 and no other.
//
//go:nosplit
//go:norace
//go:nocheckptr
func childExec(p *childProg) {
	var e syscall.Errno
	if _, _, e = syscall.RawSyscall(unix.SYS_SETSID, 0, 0, 0); e != 0 {
		childFail(p, 18, e)
	}
	// Move the helper's descriptors out of the way, then into 0..3; every
	// other descriptor goes, the FUSE device above all (go-fuse opens it
	// without O_CLOEXEC).
	var high [4]uintptr
	for i, fd := range p.fds {
		r, _, e := syscall.RawSyscall(unix.SYS_FCNTL, fd, unix.F_DUPFD_CLOEXEC, 64)
		if e != 0 {
			childFail(p, 14, e)
		}
		high[i] = r
	}
	for i, fd := range high {
		if _, _, e = syscall.RawSyscall(unix.SYS_DUP3, fd, uintptr(i), 0); e != 0 {
			childFail(p, 14, e)
		}
	}
	// The report pipe must stay open until execve (it is close-on-exec):
	// keep it, and close the rest.
	if _, _, e = syscall.RawSyscall(unix.SYS_CLOSE_RANGE, 4, ^uintptr(0), unix.CLOSE_RANGE_CLOEXEC); e == syscall.ENOSYS || e == syscall.EINVAL {
		for fd := uintptr(4); fd < p.closeTo; fd++ {
			syscall.RawSyscall(unix.SYS_FCNTL, fd, unix.F_SETFD, unix.FD_CLOEXEC)
		}
	} else if e != 0 {
		childFail(p, 15, e)
	}
	if _, _, e = syscall.RawSyscall6(unix.SYS_RT_SIGPROCMASK, unix.SIG_SETMASK, p.sigmask, 0, 8, 0, 0); e != 0 {
		childFail(p, 16, e)
	}
	_, _, e = syscall.RawSyscall(unix.SYS_EXECVE, p.path, p.argv, p.envp)
	childFail(p, 17, e)
}

// forkChild clones the calling thread into a child that runs childMain.
//
//go:nosplit
//go:norace
//go:nocheckptr
func forkChild(p *childProg) (pid uintptr, errno syscall.Errno) {
	pid, _, errno = syscall.RawSyscall6(unix.SYS_CLONE, unix.CLONE_PIDFD|uintptr(unix.SIGCHLD), 0,
		uintptr(unsafe.Pointer(&p.pidfdOut)), 0, 0, 0)
	if errno == 0 && pid == 0 {
		childMain(p)
	}
	return pid, errno
}

// execSpec is what a child executes after its check.
type execSpec struct {
	path string
	argv []string
	env  []string
	// files become the child's descriptors 0, 1, 2 and 3.
	files [4]*os.File
}

// child is a started child.
type child struct {
	pid    int
	pidfd  int
	report *os.File // read end: empty at EOF when the child executed or checked
}

// Creds are the credentials a child takes on: a requesting process's, as
// they were when it asked.
type Creds struct {
	// UID and GID hold the real, effective, saved and filesystem ids (in
	// that order) as the parent's user namespace numbers them.
	UID, GID [4]uint32
	// Groups are the supplementary groups.
	Groups []uint32
	// CapEff and CapPrm are the effective and permitted capabilities,
	// which count in UserNS only.
	CapEff, CapPrm uint64
	// UserNS is the requester's user namespace when it is not the
	// parent's (nil when it is). The caller keeps it open until the child
	// has ended.
	UserNS *os.File
}

// startChild forks a child that takes on c's credentials (nil: keeps this
// process's), checks its access to the target (pidfd, whose pid is
// targetPID) and then exits with its answer, or, with x, executes x.
func startChild(c *Creds, mode Access, pidfd, targetPID int, x *execSpec) (*child, error) {
	p := &childProg{mode: mode, pidfd: uintptr(pidfd), targetPID: uintptr(targetPID)}
	var keep []any
	if c != nil {
		k, err := prepareCreds(p, c, x != nil)
		if err != nil {
			return nil, err
		}
		keep = append(keep, k...)
	}

	rep, wrep, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	defer wrep.Close()
	p.report = wrep.Fd()

	if x != nil {
		p.exec = true
		path, err := syscall.BytePtrFromString(x.path)
		if err != nil {
			rep.Close()
			return nil, err
		}
		argv, err := syscall.SlicePtrFromStrings(x.argv)
		if err != nil {
			rep.Close()
			return nil, err
		}
		envp, err := syscall.SlicePtrFromStrings(x.env)
		if err != nil {
			rep.Close()
			return nil, err
		}
		p.path, p.argv, p.envp = uintptr(unsafe.Pointer(path)), uintptr(unsafe.Pointer(&argv[0])), uintptr(unsafe.Pointer(&envp[0]))
		for i, f := range x.files {
			p.fds[i] = f.Fd()
		}
		var lim unix.Rlimit
		p.closeTo = 4096
		if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil && lim.Cur < 1<<20 {
			p.closeTo = uintptr(lim.Cur)
		}
		keep = append(keep, path, argv, envp, x.files)
	}

	// Block every signal on this thread across the fork: the child must
	// never run a Go signal handler.
	runtime.LockOSThread()
	var none, old unix.Sigset_t
	for i := range none.Val {
		none.Val[i] = ^uint64(0)
	}
	if err := unix.PthreadSigmask(unix.SIG_SETMASK, &none, &old); err != nil {
		runtime.UnlockOSThread()
		rep.Close()
		return nil, fmt.Errorf("block signals: %w", err)
	}
	p.sigmask = uintptr(unsafe.Pointer(&old))
	spawned.Lock()
	pid, errno := forkChild(p)
	if errno == 0 {
		spawned.pids[int(pid)] = true
	}
	spawned.Unlock()
	unix.PthreadSigmask(unix.SIG_SETMASK, &old, nil)
	runtime.UnlockOSThread()
	runtime.KeepAlive(p)
	runtime.KeepAlive(keep)
	if errno != 0 {
		rep.Close()
		return nil, fmt.Errorf("fork: %w", errno)
	}
	return &child{pid: int(pid), pidfd: int(p.pidfdOut), report: rep}, nil
}

// prepareCreds fills in the credential steps of p for c, and returns the
// memory p points into, to be kept alive until the fork.
func prepareCreds(p *childProg, c *Creds, exec bool) ([]any, error) {
	p.setCreds = true
	p.rgid, p.egid, p.sgid, p.fsgid = uintptr(c.GID[0]), uintptr(c.GID[1]), uintptr(c.GID[2]), uintptr(c.GID[3])
	p.ruid, p.euid, p.suid, p.fsuid = uintptr(c.UID[0]), uintptr(c.UID[1]), uintptr(c.UID[2]), uintptr(c.UID[3])
	p.userns, p.lastCap = ^uintptr(0), uintptr(capLastCap())
	// One more than needed, so that &groups[0] exists for no groups.
	groups := make([]uint32, len(c.Groups)+1)
	copy(groups, c.Groups)
	p.ngroups, p.groups = uintptr(len(c.Groups)), uintptr(unsafe.Pointer(&groups[0]))

	// What the child can hold in the end: in the opener's own user
	// namespace every capability is the child's to give up; in the
	// daemon's, only what the daemon holds.
	hdr := &unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var own [2]unix.CapUserData
	if err := unix.Capget(hdr, &own[0]); err != nil {
		return nil, fmt.Errorf("capget: %w", err)
	}
	ownPrm := uint64(own[0].Permitted) | uint64(own[1].Permitted)<<32
	eff, prm := c.CapEff, c.CapPrm
	if c.UserNS != nil {
		p.userns = c.UserNS.Fd()
	} else {
		eff, prm = eff&ownPrm, prm&ownPrm
	}
	eff &= prm
	all := &[2]unix.CapUserData{{Effective: own[0].Permitted, Permitted: own[0].Permitted},
		{Effective: own[1].Permitted, Permitted: own[1].Permitted}}
	// The inheritable set is the permitted one, so that the ambient
	// set can hold it: a helper executed as a uid that is not root in
	// its namespace keeps the permitted set as ambient capabilities,
	// one executed as the namespace's root gets the bounding set. Either
	// way it starts with the opener's permitted set, all effective:
	// what the opener could raise itself. The check before execve is
	// made with the opener's exact effective set.
	final := &[2]unix.CapUserData{
		{Effective: uint32(eff), Permitted: uint32(prm), Inheritable: uint32(prm)},
		{Effective: uint32(eff >> 32), Permitted: uint32(prm >> 32), Inheritable: uint32(prm >> 32)},
	}
	p.capHdr, p.capAll, p.capFinal = uintptr(unsafe.Pointer(hdr)), uintptr(unsafe.Pointer(all)), uintptr(unsafe.Pointer(final))
	p.keepBnd = prm
	if exec {
		p.ambient = prm
	}
	return []any{groups, hdr, all, final, c}, nil
}

// spawned holds the pids of the children alive. A child starts with a copy
// of the daemon's descriptor table and closes it when it executes or exits;
// if the daemon's process has files of its own mount open (a program that
// mounts and uses the file system, as the tests do), each close is a FUSE
// flush from the child, which the daemon must answer without waiting on the
// write that waits on the child. The lock is held across the fork, so that
// a flush from a child can never be seen before its pid is recorded.
var spawned = struct {
	sync.Mutex
	pids map[int]bool
}{pids: make(map[int]bool)}

// IsChild reports whether pid is a child this process started (Check, Run)
// and has not yet reaped.
func IsChild(pid int) bool {
	spawned.Lock()
	defer spawned.Unlock()
	return spawned.pids[pid]
}

// errChildSetup: the child could not take on the credentials.
var errChildSetup = errors.New("taking on the opener's credentials failed")

// wait waits for the child to end (killing it when ctx ends first) and
// returns its exit status, or an error naming the step that failed before
// it could check or execute.
func (ch *child) wait(ctx context.Context) (status int, err error) {
	defer ch.report.Close()
	defer unix.Close(ch.pidfd)
	// The report pipe's write end closes when the child executes or
	// exits: read it first, the child's last word before either.
	var buf [8]byte
	repc := make(chan int, 1)
	go func() {
		n, _ := ch.report.Read(buf[:])
		repc <- n
	}()
	done := make(chan struct{})
	var ws unix.WaitStatus
	var werr error
	go func() {
		for {
			_, werr = unix.Wait4(ch.pid, &ws, 0, nil)
			if werr != unix.EINTR {
				break
			}
		}
		spawned.Lock()
		delete(spawned.pids, ch.pid)
		spawned.Unlock()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		// Through the pidfd: the pid may already be reaped and reused.
		unix.PidfdSendSignal(ch.pidfd, unix.SIGKILL, nil, 0)
		<-done
	}
	n := <-repc
	if werr != nil {
		return -1, fmt.Errorf("wait for child %d: %w", ch.pid, werr)
	}
	if n == 8 {
		step := binary.NativeEndian.Uint32(buf[:4])
		errno := syscall.Errno(binary.NativeEndian.Uint32(buf[4:]))
		name := "step " + fmt.Sprint(step)
		if int(step) < len(childSteps) && childSteps[step] != "" {
			name = childSteps[step]
		}
		return -1, fmt.Errorf("%w: %s: %w", errChildSetup, name, errno)
	}
	if ctx.Err() != nil {
		return -1, ctx.Err()
	}
	if ws.Signaled() {
		return -1, fmt.Errorf("child %d killed by %v", ch.pid, ws.Signal())
	}
	return ws.ExitStatus(), nil
}

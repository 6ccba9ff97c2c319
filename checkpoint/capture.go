package checkpoint

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"time"

	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/internal/errs"
	"github.com/semundo/semundo/internal/par"
	"github.com/semundo/semundo/internal/procfs"
	"github.com/semundo/semundo/reader"
	"github.com/semundo/semundo/sysvsem"
	"golang.org/x/sys/unix"
)

// Errors of a capture or restore, to be tested with errors.Is.
var (
	// ErrNamespaces: the processes are not all in one IPC namespace.
	ErrNamespaces = errors.New("processes in different IPC namespaces")
	// ErrShared: a list is shared with a process outside the checkpoint.
	ErrShared = errors.New("undo list shared with a process outside the checkpoint")
	// ErrTaken: a set's id or key is taken in the namespace restored into.
	ErrTaken = errors.New("set id or key already taken")
	// ErrNotSupported: the kernel lacks /proc/sys/kernel/sem_next_id.
	ErrNotSupported = errs.ErrNotSupported
	// ErrNoProcess: a process named does not exist.
	ErrNoProcess = errs.ErrNoProcess
	// ErrSelf: the processes to freeze include semundo itself or one of
	// its ancestors (or their cgroup): the freeze would never end, or
	// would stop the program waiting for semundo.
	ErrSelf = errors.New("checkpoint would freeze semundo or its parent")
)

// CaptureOptions say what to capture.
type CaptureOptions struct {
	// PIDs are the processes to capture.
	PIDs []int
	// Tree adds every descendant of PIDs.
	Tree bool
	// Cgroup, when set, is the cgroup v2 directory of the processes: it is
	// frozen with cgroup.freeze instead of SIGSTOP.
	Cgroup string
	// Force captures a list shared with a process outside the checkpoint,
	// with a warning in the image, instead of refusing.
	Force bool
	// Version is recorded in the image (semundo_version).
	Version string
	// Sempids records each semaphore's last pid (GETPID): informational,
	// not restorable, and one system call per semaphore, so off by
	// default (the image's sempids are empty then).
	Sempids bool
	// Proc is where PIDs are resolved to processes and the tree is
	// walked; the zero value reads /proc. Freezing and reading the lists
	// always act on the live processes.
	Proc procfs.FS
	// SharedNamespace (CaptureFrozen only) says the processes are known
	// to share one IPC namespace, as CRIU's dumped tree does (CRIU
	// refuses a nested one): it is read from one process only, and each
	// list is checked against it by the namespace the scan found the list
	// in, instead of reading every process's namespace link while the
	// processes are held.
	SharedNamespace bool
}

// Capture takes one consistent snapshot: the processes are frozen while
// their lists and their IPC namespace's sets are read, and let go
// afterwards, also when the capture fails; processes that were stopped
// before stay stopped. A thread asleep in semop or semtimedop is not
// stopped (a stop would wake it with EINTR); the package doc says how the
// snapshot stays consistent. Capture refuses (ErrSelf), before it freezes
// anything, processes or a cgroup that hold semundo or one of its
// ancestors. The image is checked (Validate) when it is encoded.
func Capture(r *reader.Reader, opts CaptureOptions) (_ *image.Image, err error) {
	if len(opts.PIDs) == 0 {
		return nil, errors.New("no process to checkpoint")
	}
	pids := make([]int, 0, len(opts.PIDs))
	for _, pid := range opts.PIDs {
		p, err := processOf(opts.Proc, pid)
		if err != nil {
			return nil, err
		}
		pids = append(pids, p)
	}
	if opts.Tree {
		more, err := opts.Proc.Descendants(pids...)
		if err != nil {
			return nil, err
		}
		pids = append(pids, more...)
	}
	slices.Sort(pids)
	pids = slices.Compact(pids)
	if err := refuseSelf(pids, opts); err != nil {
		return nil, err
	}
	ns, err := oneNamespace(pids)
	if err != nil {
		return nil, err
	}

	// Every ptrace request on a thread must come from the thread that
	// seized it.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for attempt := 1; ; attempt++ {
		img, err := captureOnce(r, pids, ns, opts)
		if !errors.Is(err, errWoken) {
			return img, err
		}
		if attempt == wokenAttempts {
			return nil, fmt.Errorf("%w (%d attempts in a row): checkpoint again when it waits longer", err, attempt)
		}
	}
}

// errWoken: a thread left asleep in semop ran during the capture, which
// may then be inconsistent: Capture tries again.
var errWoken = errors.New("woken during the capture")

// wokenAttempts bounds how often Capture tries again after errWoken.
const wokenAttempts = 5

// captureOnce freezes the processes, takes the snapshot and lets them go.
func captureOnce(r *reader.Reader, pids []int, ns uint64, opts CaptureOptions) (_ *image.Image, err error) {
	// Which processes were stopped before semundo came: the restore
	// leaves those stopped.
	stoppedBefore := map[int]bool{}
	for _, pid := range pids {
		if st, err := procState(pid); err == nil && st == 'T' {
			stoppedBefore[pid] = true
		}
	}
	var warnings []string
	useCgroup := opts.Cgroup != ""
	if useCgroup {
		s, err := cgroupSleeper(opts.Cgroup)
		if err != nil {
			return nil, err
		}
		if s != nil {
			// The freezer wakes every sleeper with EINTR and cannot leave
			// one out: hold the processes one by one instead.
			useCgroup = false
			warnings = append(warnings, fmt.Sprintf("cgroup %s was not frozen: thread %d of pid %d in it sleeps in semop, which the freezer would wake with EINTR; the processes were held one by one", opts.Cgroup, s.tid, s.pid))
		}
	}
	var fz freezer
	var sf *signalFreezer
	if useCgroup {
		fz = &cgroupFreezer{dir: opts.Cgroup}
	} else {
		sf = &signalFreezer{pids: pids, stopped: stoppedBefore}
		fz = sf
	}
	if err := fz.freeze(); err != nil {
		// A partial freeze is undone too.
		return nil, errors.Join(err, fz.thaw())
	}
	defer func() {
		if terr := fz.thaw(); terr != nil {
			err = errors.Join(err, terr)
		}
	}()
	if opts.Tree && !useCgroup {
		// Children forked before the freeze took effect.
		more, err := opts.Proc.Descendants(pids...)
		if err != nil {
			return nil, err
		}
		if extra := missing(more, pids); len(extra) > 0 {
			return nil, fmt.Errorf("processes %v were forked while the tree was being stopped: retry", extra)
		}
	}

	snap, err := r.Scan()
	if err != nil {
		return nil, err
	}
	img, err := build(snap, pids, ns, stoppedBefore, opts)
	if err != nil {
		return nil, err
	}
	if sf != nil {
		if err := checkSleepers(r, sf, snap); err != nil {
			return nil, err
		}
		warnings = append(warnings, sf.warnings...)
	}
	img.Warnings = append(img.Warnings, warnings...)
	return img, nil
}

// checkSleepers checks that no thread left asleep in semop ran during
// the capture, nor had its list changed by a process outside the
// checkpoint that completed its operation (the waker applies the
// sleeper's operation, adjustment included, before it wakes it).
func checkSleepers(r *reader.Reader, sf *signalFreezer, snap *reader.Snapshot) error {
	if len(sf.sleepers) == 0 {
		return nil
	}
	if err := sf.ran(); err != nil {
		return err
	}
	again, err := r.Scan()
	if err != nil {
		return err
	}
	for _, s := range sf.sleepers {
		if !snap.ByPID(s.pid).Undo().Equal(again.ByPID(s.pid).Undo()) {
			return fmt.Errorf("the undo list of pid %d, whose thread %d sleeps in semop, was changed: %w", s.pid, s.tid, errWoken)
		}
	}
	return nil
}

func missing(have, known []int) []int {
	var out []int
	for _, p := range have {
		if !slices.Contains(known, p) {
			out = append(out, p)
		}
	}
	return out
}

// processOf returns the process (thread group) that pid names: pid itself,
// or the process of a thread id, whose threads share one undo list. It
// refuses what has no list to capture: a kernel thread, or a process whose
// every thread has exited (a zombie).
func processOf(p procfs.FS, pid int) (int, error) {
	st, err := p.Status(pid)
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	stat, err := p.Stat(st.Tgid)
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", st.Tgid, ErrNoProcess)
	}
	if stat.KernelThread() {
		return 0, fmt.Errorf("pid %d (%s) is a kernel thread: it has no undo list", st.Tgid, stat.Comm)
	}
	if _, err := liveThread(p, st.Tgid); err != nil {
		return 0, err
	}
	return st.Tgid, nil
}

// liveThread returns a thread of process pid that has not exited: the
// leader when it lives, else another (a leader that called pthread_exit
// stays a zombie while its threads run on, and its /proc/PID/ns links are
// gone).
func liveThread(p procfs.FS, pid int) (int, error) {
	if st, err := p.Stat(pid); err == nil && !st.Dead() {
		return pid, nil
	}
	threads, err := p.Threads(pid)
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	for _, th := range threads {
		if !th.Stat.Dead() {
			return th.TID, nil
		}
	}
	return 0, fmt.Errorf("pid %d is a zombie: it has exited, and so has its undo list (its parent has not reaped it yet): %w", pid, ErrNoProcess)
}

// nsInode returns the inode of process pid's IPC namespace, read through
// a live thread.
func nsInode(pid int) (uint64, error) {
	// The leader's link first: it fails (ENOENT) only when the leader has
	// exited, and looking for a live thread first cost a stat read, most
	// of the time restoring a tree's lists spent on these checks.
	var st unix.Stat_t
	if unix.Stat(fmt.Sprintf("/proc/%d/task/%d/ns/ipc", pid, pid), &st) == nil {
		return st.Ino, nil
	}
	tid, err := liveThread(procfs.NewDefaultFS(), pid)
	if err != nil {
		return 0, err
	}
	if err := unix.Stat(fmt.Sprintf("/proc/%d/task/%d/ns/ipc", pid, tid), &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return 0, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
		}
		return 0, fmt.Errorf("IPC namespace of pid %d: %w", pid, err)
	}
	return st.Ino, nil
}

// oneNamespace checks that every process is in one IPC namespace.
func oneNamespace(pids []int) (uint64, error) {
	inos, err := nsInodes(pids)
	if err != nil {
		return 0, err
	}
	for i, ns := range inos[1:] {
		if ns != inos[0] {
			return 0, fmt.Errorf("pid %d is in IPC namespace %d, pid %d in %d: checkpoint one namespace at a time: %w", pids[0], inos[0], pids[i+1], ns, ErrNamespaces)
		}
	}
	return inos[0], nil
}

// nsInodes returns nsInode of each of pids, read on every CPU (CRIU's
// post-dump waits for them with the tree frozen), or the first error in
// the order of pids.
func nsInodes(pids []int) ([]uint64, error) {
	return par.Map(len(pids), runtime.GOMAXPROCS(0), func(i int) (uint64, error) { return nsInode(pids[i]) })
}

// inNamespace runs fn in the IPC namespace ns (that of pid). When it is not
// the caller's, fn runs on a thread that enters it and never returns to the
// Go scheduler: setns(CLONE_NEWIPC) detaches the thread from the process's
// own undo list (exit_sem), so the thread must die with its goroutine.
func inNamespace(pid int, ns uint64, fn func() error) error {
	own, err := nsInode(os.Getpid())
	if err != nil {
		return err
	}
	if own == ns {
		return fn()
	}
	var enter func(done chan<- error)
	enter = func(done chan<- error) {
		runtime.LockOSThread()
		if unix.Gettid() == unix.Getpid() {
			// The runtime parks the main thread for good, instead of
			// ending it, when its locked goroutine returns: hold it so
			// another goroutine's thread does the work.
			defer runtime.UnlockOSThread()
			inner := make(chan error, 1)
			go enter(inner)
			done <- <-inner
			return
		}
		// No UnlockOSThread: the thread exits with this goroutine.
		tid, err := liveThread(procfs.NewDefaultFS(), pid)
		if err != nil {
			done <- err
			return
		}
		f, err := os.Open(fmt.Sprintf("/proc/%d/task/%d/ns/ipc", pid, tid))
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWIPC); err != nil {
			done <- fmt.Errorf("enter IPC namespace of pid %d: %w", pid, err)
			return
		}
		done <- fn()
	}
	done := make(chan error, 1)
	go enter(done)
	return <-done
}

// captureSets reads every set of the current IPC namespace.
func captureSets(img *image.Image, sempids bool) error {
	info, _, err := sysvsem.Info()
	if err != nil {
		return err
	}
	img.Limits = image.Limits{Semmsl: info.Semmsl, Semmns: info.Semmns, Semopm: info.Semopm, Semmni: info.Semmni}
	// Each set's values are read right after its stat (Walk), while the
	// kernel's set is still in the CPU caches.
	return sysvsem.Walk(func(e sysvsem.Entry) error {
		// The processes are frozen, but others may remove or replace a
		// set: GETALL then fails cleanly (EFAULT if the set grew).
		vals, err := sysvsem.GetAllN(e.ID, e.Stat.Nsems)
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIDRM) || errors.Is(err, unix.EFAULT) {
			return nil // removed meanwhile by a process outside the checkpoint
		}
		if err != nil {
			return fmt.Errorf("read set %d: %w", e.ID, err)
		}
		s := image.Set{
			ID: int32(e.ID), Key: e.Stat.Perm.Key,
			UID: e.Stat.Perm.UID, GID: e.Stat.Perm.GID, CUID: e.Stat.Perm.CUID, CGID: e.Stat.Perm.CGID,
			Mode: e.Stat.Perm.Mode, Nsems: len(vals), Values: vals,
			Otime: unixSec(e.Stat.Otime), Ctime: unixSec(e.Stat.Ctime),
		}
		if sempids {
			s.Sempids = make([]int32, len(vals))
		}
		for i := range s.Sempids {
			pid, err := sysvsem.GetPid(e.ID, i)
			if err != nil {
				break // removed meanwhile: leave the rest 0
			}
			s.Sempids[i] = int32(pid)
		}
		img.Sets = append(img.Sets, s)
		return nil
	}, func(n int) { img.Sets = make([]image.Set, 0, n) })
}

func unixSec(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.Unix()
}

// captureLists adds the lists of the processes, grouped as the kernel
// shares them.
func captureLists(img *image.Image, snap *reader.Snapshot, pids []int, stopped map[int]bool, force bool) error {
	inCheckpoint := map[int]bool{}
	for _, p := range pids {
		inCheckpoint[p] = true
	}
	done := map[*reader.List]bool{}
	for _, pid := range pids {
		l := snap.ByPID(pid)
		if l == nil || done[l] {
			continue
		}
		done[l] = true
		var il image.List
		for _, p := range l.Processes {
			if !inCheckpoint[p.PID] {
				msg := fmt.Sprintf("undo list of pid %d is shared with pid %d, which is not checkpointed: restoring it would apply its adjustments twice", pid, p.PID)
				if !force {
					return fmt.Errorf("%s; checkpoint both, or pass --force: %w", msg, ErrShared)
				}
				img.Warnings = append(img.Warnings, "--force: "+msg)
				continue
			}
			ip := image.Process{PID: int32(p.PID), Comm: p.Comm, Stopped: stopped[p.PID]}
			for _, t := range p.TIDs {
				ip.TIDs = append(ip.TIDs, int32(t))
			}
			il.Processes = append(il.Processes, ip)
		}
		for _, e := range l.Entries {
			s := img.Set(e.Semid)
			if s == nil {
				img.Warnings = append(img.Warnings, fmt.Sprintf("set %d was removed during the checkpoint: its entry in the list of pid %d is left out", e.Semid, pid))
				continue
			}
			if s.Nsems != len(e.Adj) {
				return fmt.Errorf("set %d has %d semaphores but the list of pid %d holds %d adjustments for it: retry", e.Semid, s.Nsems, pid, len(e.Adj))
			}
			il.Entries = append(il.Entries, image.Entry{Semid: e.Semid, Adj: slices.Clone(e.Adj)})
		}
		img.Lists = append(img.Lists, il)
	}
	return nil
}

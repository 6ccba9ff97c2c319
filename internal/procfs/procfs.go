// Package procfs reads the few /proc files semundo needs about processes:
// stat, status and the task and process lists. Every reader in the project
// (the injector, the writer's permission check, the checkpoint freezer, the
// CRIU companion, the file system's credential lookup) goes through it, so
// that one parser handles the command names with spaces and parentheses and
// the races with exiting processes.
//
// An FS is rooted at a procfs mount point, so the parsers are tested
// against fixture trees as well as the live /proc.
package procfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultMountPoint is where procfs is mounted on a live system.
const DefaultMountPoint = "/proc"

// FS reads process information under a procfs mount point. The zero FS
// reads DefaultMountPoint, so that an options struct holding one needs no
// default of its own.
type FS struct{ root string }

// dir is the mount point.
func (p FS) dir() string {
	if p.root == "" {
		return DefaultMountPoint
	}
	return p.root
}

// NewFS returns an FS rooted at mountPoint.
func NewFS(mountPoint string) FS { return FS{root: mountPoint} }

// NewDefaultFS returns an FS rooted at DefaultMountPoint.
func NewDefaultFS() FS { return NewFS(DefaultMountPoint) }

// ErrMalformed: a file does not have the form the kernel writes. Errors
// that wrap it name the file.
var ErrMalformed = errors.New("malformed")

// read reads root/elem..., mapping a task that does not exist, or that was
// reaped between open and read (the read then fails with ESRCH), to an
// error that Is syscall.ESRCH.
func (p FS) read(pid int, elem ...string) ([]byte, string, error) {
	path := filepath.Join(append([]string{p.dir(), strconv.Itoa(pid)}, elem...)...)
	if pid <= 0 {
		return nil, path, fmt.Errorf("pid %d: %w", pid, syscall.ESRCH)
	}
	b, err := ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			return nil, path, fmt.Errorf("%s: %w", path, syscall.ESRCH)
		}
		return nil, path, err
	}
	return b, path, nil
}

// ReadFile reads a whole file with plain system calls. For the small files
// of /proc this costs about half of os.ReadFile, whose fstat and poller
// registration and deregistration take longer than the kernel takes to
// write a status file; the injector reads several of these while its
// target is stopped. Errors are *fs.PathError, as os.ReadFile's are.
func ReadFile(path string) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	b := make([]byte, 0, 2048)
	for {
		if len(b) == cap(b) {
			b = slices.Grow(b, cap(b))
		}
		n, err := unix.Read(fd, b[len(b):cap(b)])
		switch {
		case err == unix.EINTR:
			continue
		case err != nil:
			return nil, &fs.PathError{Op: "read", Path: path, Err: err}
		case n == 0:
			return b, nil
		}
		b = b[:len(b)+n]
	}
}

// parse reads a file of pid's and parses it, naming the file in a parse
// error.
func parse[T any](p FS, parser func([]byte) (T, error), pid int, elem ...string) (T, error) {
	var zero T
	b, path, err := p.read(pid, elem...)
	if err != nil {
		return zero, err
	}
	v, err := parser(b)
	if err != nil {
		return zero, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// Stat is the part of /proc/<pid>/stat that semundo uses.
type Stat struct {
	Comm       string // field 2, without its parentheses
	State      byte   // field 3: R, S, D, T, t, Z, X, ...
	PPID       int    // field 4
	Flags      uint64 // field 9: PF_* task flags
	NumThreads int    // field 20
	StartTime  uint64 // field 22: clock ticks after boot
}

// pfKthread is PF_KTHREAD (include/linux/sched.h) in Stat.Flags.
const pfKthread = 0x00200000

// KernelThread reports whether the task is a kernel thread: it has no user
// memory and no undo list.
func (s Stat) KernelThread() bool { return s.Flags&pfKthread != 0 }

// Dead reports whether the task has exited (a zombie or being reaped).
func (s Stat) Dead() bool { return s.State == 'Z' || s.State == 'X' || s.State == 'x' }

// Stat reads /proc/<pid>/stat.
func (p FS) Stat(pid int) (Stat, error) { return parse(p, ParseStat, pid, "stat") }

// TaskStat reads /proc/<pid>/task/<tid>/stat.
func (p FS) TaskStat(pid, tid int) (Stat, error) {
	return parse(p, ParseStat, pid, "task", strconv.Itoa(tid), "stat")
}

// ParseStat parses the text of a stat file.
func ParseStat(b []byte) (Stat, error) {
	// The command name may hold spaces and parentheses: it runs from the
	// first '(' to the last ')'.
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return Stat{}, fmt.Errorf("%w: no (comm)", ErrMalformed)
	}
	f := strings.Fields(string(b[end+1:]))
	// f[0] is field 3; StartTime, field 22, is the last one used.
	if len(f) < 20 {
		return Stat{}, fmt.Errorf("%w: %d fields after the command name", ErrMalformed, len(f))
	}
	if !isState(f[0]) {
		return Stat{}, fmt.Errorf("%w: state %q", ErrMalformed, f[0])
	}
	st := Stat{Comm: string(b[open+1 : end]), State: f[0][0]}
	var err error
	field := func(n int, name string, parse func(string) error) {
		if err == nil {
			if e := parse(f[n-3]); e != nil {
				err = fmt.Errorf("%w: %s %q", ErrMalformed, name, f[n-3])
			}
		}
	}
	field(4, "ppid", func(s string) (e error) { st.PPID, e = strconv.Atoi(s); return })
	field(9, "flags", func(s string) (e error) { st.Flags, e = strconv.ParseUint(s, 10, 64); return })
	field(20, "num_threads", func(s string) (e error) { st.NumThreads, e = strconv.Atoi(s); return })
	field(22, "starttime", func(s string) (e error) { st.StartTime, e = strconv.ParseUint(s, 10, 64); return })
	return st, err
}

// isState reports whether s is a task state as the kernel writes it: one
// letter.
func isState(s string) bool {
	return len(s) == 1 && ('A' <= s[0] && s[0] <= 'Z' || 'a' <= s[0] && s[0] <= 'z')
}

// Status is the part of /proc/<pid>/status that semundo uses.
type Status struct {
	// Name is the task's command name, escaped as status writes it.
	Name      string
	State     byte
	Tgid      int
	PPID      int
	TracerPid int // a thread id: the tracer's thread, not its process
	Seccomp   int
	Threads   int // threads in the task's thread group
	// NSpid is the task's pid in each PID namespace from the reader's down
	// to its own.
	NSpid []int
	// UID and GID hold the real, effective, saved and filesystem ids
	// (index with Real, Effective, Saved, Filesystem).
	UID, GID [4]uint32
	Groups   []uint32 // supplementary groups
	// Signal masks: pending for the thread, pending for the process,
	// blocked, ignored, caught.
	SigPnd, ShdPnd, SigBlk, SigIgn, SigCgt uint64
	CapEff                                 uint64 // effective capabilities
	// Kthread: the task is a kernel thread. Known (KthreadKnown) only
	// where the kernel writes the line, which older kernels do not.
	Kthread, KthreadKnown bool
}

// Indexes into Status.UID and Status.GID.
const (
	Real = iota
	Effective
	Saved
	Filesystem
)

// Dead reports whether the task has exited (a zombie or being reaped).
func (s Status) Dead() bool { return s.State == 'Z' || s.State == 'X' || s.State == 'x' }

// Status reads /proc/<pid>/status. pid may be a thread id: /proc/<tid>
// exists, unlisted, for every thread, and credentials belong to threads.
func (p FS) Status(pid int) (Status, error) { return parse(p, ParseStatus, pid, "status") }

// SelfStatus reads /proc/self/status: the caller's own, as the mount
// point's PID namespace numbers it.
func (p FS) SelfStatus() (Status, error) {
	path := filepath.Join(p.dir(), "self", "status")
	b, err := ReadFile(path)
	if err != nil {
		return Status{}, err
	}
	st, err := ParseStatus(b)
	if err != nil {
		return Status{}, fmt.Errorf("%s: %w", path, err)
	}
	return st, nil
}

// NSpid returns pid's NSpid: its pid in each PID namespace from the mount
// point's down to its own. A status without the line (kernels before 4.1)
// is ErrMalformed: semundo needs 5.8.
func (p FS) NSpid(pid int) ([]int, error) {
	st, err := p.StatusNSpid(pid)
	if err != nil {
		return nil, err
	}
	return st.NSpid, nil
}

// StatusNSpid is Status for a caller that needs the NSpid line too: a
// status without it is ErrMalformed, as for NSpid.
func (p FS) StatusNSpid(pid int) (Status, error) {
	st, err := p.Status(pid)
	if err == nil && len(st.NSpid) == 0 {
		err = fmt.Errorf("pid %d: no NSpid line in its status (Linux >= 4.1 has one): %w", pid, ErrMalformed)
	}
	return st, err
}

// TaskStatus reads /proc/<pid>/task/<tid>/status.
func (p FS) TaskStatus(pid, tid int) (Status, error) {
	return parse(p, ParseStatus, pid, "task", strconv.Itoa(tid), "status")
}

// ParseStatus parses the text of a status file. The lines Status holds
// must be well formed where present; Tgid, Uid, Gid, Groups and CapEff,
// which every kernel semundo supports writes, must be present, since
// permissions are judged from them. The other lines are left zero when
// missing.
func ParseStatus(b []byte) (Status, error) {
	var st Status
	var seen int
	const (
		seenTgid = 1 << iota
		seenUID
		seenGID
		seenGroups
		seenCapEff
		seenAll = seenTgid | seenUID | seenGID | seenGroups | seenCapEff
	)
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		key, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		// Most of the file's fifty-odd lines are not used: splitting
		// them was most of the parse, and the injector parses a status
		// while its target is stopped.
		switch string(key) {
		case "Name", "State", "Tgid", "PPid", "TracerPid", "Seccomp", "NSpid", "Threads", "Uid", "Gid", "Groups",
			"SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt", "CapEff", "Kthread":
		default:
			continue
		}
		fields := strings.Fields(string(val))
		one := func() (string, error) {
			if len(fields) != 1 {
				return "", fmt.Errorf("%d values", len(fields))
			}
			return fields[0], nil
		}
		dec := func(dst *int) error {
			s, err := one()
			if err == nil {
				*dst, err = strconv.Atoi(s)
			}
			return err
		}
		hex := func(dst *uint64) error {
			s, err := one()
			if err == nil {
				*dst, err = strconv.ParseUint(s, 16, 64)
			}
			return err
		}
		var err error
		switch string(key) {
		case "Name":
			st.Name = strings.TrimPrefix(string(val), "\t")
		case "Kthread":
			var k int
			err = dec(&k)
			st.Kthread, st.KthreadKnown = k != 0, true
		case "State":
			// "S (sleeping)": the letter, then its name.
			if len(fields) == 0 || !isState(fields[0]) {
				err = errors.New("no state letter")
			} else {
				st.State = fields[0][0]
			}
		case "Tgid":
			err = dec(&st.Tgid)
			seen |= seenTgid
		case "PPid":
			err = dec(&st.PPID)
		case "TracerPid":
			err = dec(&st.TracerPid)
		case "Seccomp":
			err = dec(&st.Seccomp)
		case "Threads":
			err = dec(&st.Threads)
		case "NSpid":
			st.NSpid = make([]int, 0, len(fields))
			for _, f := range fields {
				var n int
				if n, err = strconv.Atoi(f); err != nil || n <= 0 {
					err = fmt.Errorf("pid %q", f)
					break
				}
				st.NSpid = append(st.NSpid, n)
			}
			if err == nil && len(st.NSpid) == 0 {
				err = errors.New("no pids")
			}
		case "Uid":
			err = parseIDs(&st.UID, fields)
			seen |= seenUID
		case "Gid":
			err = parseIDs(&st.GID, fields)
			seen |= seenGID
		case "Groups":
			st.Groups = make([]uint32, 0, len(fields))
			for _, f := range fields {
				var g uint64
				if g, err = strconv.ParseUint(f, 10, 32); err != nil {
					break
				}
				st.Groups = append(st.Groups, uint32(g))
			}
			seen |= seenGroups
		case "SigPnd":
			err = hex(&st.SigPnd)
		case "ShdPnd":
			err = hex(&st.ShdPnd)
		case "SigBlk":
			err = hex(&st.SigBlk)
		case "SigIgn":
			err = hex(&st.SigIgn)
		case "SigCgt":
			err = hex(&st.SigCgt)
		case "CapEff":
			err = hex(&st.CapEff)
			seen |= seenCapEff
		}
		if err != nil {
			return Status{}, fmt.Errorf("%w: %s line %q: %v", ErrMalformed, key, line, err)
		}
	}
	if seen != seenAll {
		return Status{}, fmt.Errorf("%w: one of Tgid, Uid, Gid, Groups, CapEff is missing", ErrMalformed)
	}
	return st, nil
}

func parseIDs(ids *[4]uint32, fields []string) error {
	if len(fields) != 4 {
		return fmt.Errorf("%d ids, want 4", len(fields))
	}
	for i, f := range fields {
		v, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return err
		}
		ids[i] = uint32(v)
	}
	return nil
}

// Tasks returns the thread ids of process pid, in ascending order. A
// process that does not exist is an error that Is syscall.ESRCH.
func (p FS) Tasks(pid int) ([]int, error) {
	ids, err := readDirIDs(filepath.Join(p.dir(), strconv.Itoa(pid), "task"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			return nil, fmt.Errorf("pid %d: %w", pid, syscall.ESRCH)
		}
		return nil, err
	}
	return ids, nil
}

// readDirIDs returns the numeric names in directory path, in ascending
// order, read with plain system calls: os.ReadDir's poller registration
// costs a third of a small /proc directory's listing (21 against 14 us
// for a task directory), and the CRIU companion lists one per process of
// a tree while CRIU holds it stopped.
func readDirIDs(path string) ([]int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	var buf [4096]byte
	var names []string
	for {
		n, err := unix.ReadDirent(fd, buf[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "readdirent", Path: path, Err: err}
		}
		if n <= 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	ids := make([]int, 0, len(names))
	for _, name := range names {
		if n, err := strconv.Atoi(name); err == nil && n > 0 {
			ids = append(ids, n)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// Thread is one thread of a process, with its stat.
type Thread struct {
	TID  int
	Stat Stat
}

// Threads returns the threads of process pid with their stat, in
// ascending order of thread id. A thread that exits while the list is read
// is left out; a process that does not exist is an error that Is
// syscall.ESRCH.
func (p FS) Threads(pid int) ([]Thread, error) {
	tids, err := p.Tasks(pid)
	if err != nil {
		return nil, err
	}
	out := make([]Thread, 0, len(tids))
	for _, tid := range tids {
		if st, err := p.TaskStat(pid, tid); err == nil {
			out = append(out, Thread{TID: tid, Stat: st})
		}
	}
	return out, nil
}

// PIDs returns the ids of every process the FS shows, in ascending order.
func (p FS) PIDs() ([]int, error) {
	ents, err := os.ReadDir(p.dir())
	if err != nil {
		return nil, err
	}
	return numbered(ents), nil
}

func numbered(ents []os.DirEntry) []int {
	ids := make([]int, 0, len(ents))
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil && n > 0 {
			ids = append(ids, n)
		}
	}
	slices.Sort(ids)
	return ids
}

// Children maps each process to its children (by the ppid of every
// process, each list in ascending order). Processes that exit during the
// walk are left out.
func (p FS) Children() (map[int][]int, error) {
	pids, err := p.PIDs()
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	for _, pid := range pids {
		st, err := p.Stat(pid)
		if errors.Is(err, syscall.ESRCH) {
			continue // exited since the listing
		}
		if err != nil {
			return nil, err
		}
		children[st.PPID] = append(children[st.PPID], pid)
	}
	return children, nil
}

// Descendants returns the descendants of roots (children, grandchildren,
// ...), breadth first, each once, roots left out; a process that exits
// during the walk is left out too.
//
// The walk reads the ppid of every process (Children) rather than
// /proc/PID/task/TID/children: that file needs CONFIG_PROC_CHILDREN, and
// the kernel documents it as reliable only while the children are frozen,
// but the checkpoint walks a tree before freezing it, to know what to
// freeze, and again after, to catch processes forked meanwhile.
func (p FS) Descendants(roots ...int) ([]int, error) {
	children, err := p.Children()
	if err != nil {
		return nil, err
	}
	seen := make(map[int]bool, len(roots))
	for _, r := range roots {
		seen[r] = true
	}
	var out []int
	queue := append([]int(nil), roots...)
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		for _, c := range children[pid] {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
				queue = append(queue, c)
			}
		}
	}
	return out, nil
}

// ErrNoChildrenFile: the kernel has no /proc/PID/task/TID/children
// (CONFIG_PROC_CHILDREN is not set).
var ErrNoChildrenFile = errors.New("no /proc/PID/task/TID/children file")

// TaskChildren returns the children of process pid, from the children
// file of each of its threads, in ascending order. Unlike Children it
// reads only pid's own files, but the kernel documents those as exact
// only while the process can neither fork nor reap (frozen or stopped,
// as CRIU holds a tree). A process that does not exist is an error that
// Is syscall.ESRCH; a kernel without the file, ErrNoChildrenFile.
func (p FS) TaskChildren(pid int) ([]int, error) {
	tids, err := p.Tasks(pid)
	if err != nil {
		return nil, err
	}
	return p.threadsChildren(pid, tids)
}

// ThreadChildren is TaskChildren for a process known to have the one
// thread, pid itself (Status.Threads of a process that cannot clone): it
// reads that thread's children file and not the task directory.
func (p FS) ThreadChildren(pid int) ([]int, error) {
	return p.threadsChildren(pid, []int{pid})
}

func (p FS) threadsChildren(pid int, tids []int) ([]int, error) {
	var out []int
	for _, tid := range tids {
		b, path, err := p.read(pid, "task", strconv.Itoa(tid), "children")
		if errors.Is(err, syscall.ESRCH) {
			if _, serr := p.TaskStat(pid, tid); serr == nil {
				return nil, fmt.Errorf("%s: %w", path, ErrNoChildrenFile)
			}
			if len(tids) == 1 {
				return nil, fmt.Errorf("pid %d: %w", pid, syscall.ESRCH)
			}
			continue // the thread exited
		}
		if err != nil {
			return nil, err
		}
		for _, f := range strings.Fields(string(b)) {
			n, err := strconv.Atoi(f)
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("%s: child %q: %w", path, f, ErrMalformed)
			}
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out, nil
}

package undofs

import (
	"context"
	"errors"
	"log"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/semundo/semundo/internal/helper"
	"github.com/semundo/semundo/internal/procfs"
	"github.com/semundo/semundo/undo"
	"golang.org/x/sys/unix"
)

// FileName is the name of the one file in each process's directory.
const FileName = "semundo"

// maxPending bounds what one handle buffers before a line ends.
const maxPending = 1 << 20

// Kernel caching. Entries (a pid's directory, its file) may be trusted for
// a second: a lookup only says the process exists, and every open checks
// again. Attributes are never cached, since a file's size changes with the
// list it shows; data is never cached either (FOPEN_DIRECT_IO).
const (
	entryTimeout = time.Second
	rootAttrTime = time.Second
)

// Node ids: the root is 1; a pid's directory and file have ids derived from
// the pid, so that nodes carry no state and FORGET has nothing to free.
const (
	kindRoot = 1
	kindDir  = 2
	kindFile = 3
)

func dirID(pid int) uint64  { return uint64(pid)<<2 | kindDir }
func fileID(pid int) uint64 { return uint64(pid)<<2 | kindFile }

// node splits a node id into its kind and pid.
func node(id uint64) (kind int, pid int) {
	if id == fuse.FUSE_ROOT_ID {
		return kindRoot, 0
	}
	if id>>2 == 0 || id>>2 > maxPID {
		return 0, 0
	}
	return int(id & 3), int(id >> 2)
}

// maxPID is the kernel's PID_MAX_LIMIT (4M) on 64-bit.
const maxPID = 1 << 22

// rawFS is the file system: a FUSE RawFileSystem over reader scans and an
// Injector.
type rawFS struct {
	fuse.RawFileSystem // ENOSYS for everything not below

	scan    *scanner
	inj     Injector
	proc    procfs.FS
	log     *log.Logger
	timeout time.Duration
	born    time.Time // the files' timestamps

	srv *fuse.Server // set by Init, for invalidations

	mu      sync.Mutex
	nextFh  uint64
	files   map[uint64]*handle
	dirs    map[uint64][]fuse.DirEntry
	writing map[int]int // tgid -> writes it has waiting on an injection
}

func newRawFS(s *scanner, inj Injector, proc procfs.FS, lg *log.Logger, timeout time.Duration) *rawFS {
	return &rawFS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		scan:          s,
		inj:           inj,
		proc:          proc,
		log:           lg,
		timeout:       timeout,
		born:          time.Now(),
		files:         make(map[uint64]*handle),
		dirs:          make(map[uint64][]fuse.DirEntry),
		writing:       make(map[int]int),
	}
}

// handle is an open file: the text snapshot taken at open for reading, and
// the bytes written and not yet applied.
type handle struct {
	pid      int
	data     []byte // the list's text at open (readers)
	writable bool
	// opener holds the credentials every write through this handle is
	// made with (writers only).
	opener *Caller
	// pidfd pins the target opened: a write never reaches a later
	// process that got its pid (writers only).
	pidfd int

	mu      sync.Mutex
	pend    []byte // written bytes not yet applied
	pendOff uint64 // file offset of pend[0]
}

func (fs *rawFS) String() string { return "semundo" }

func (fs *rawFS) Init(srv *fuse.Server) { fs.srv = srv }

// process checks that pid is a live (or zombie) process, not a thread, and
// returns its status.
func (fs *rawFS) process(pid int) (*procfs.Status, fuse.Status) {
	st, err := fs.proc.Status(pid)
	if err != nil {
		if !errors.Is(err, syscall.ESRCH) {
			fs.log.Print(err)
		}
		return nil, fuse.ENOENT
	}
	if st.Tgid != pid {
		return nil, fuse.ENOENT
	}
	return &st, fuse.OK
}

func (fs *rawFS) setTimes(a *fuse.Attr) {
	a.SetTimes(&fs.born, &fs.born, &fs.born)
	a.Blksize = 4096
}

func (fs *rawFS) rootAttr(a *fuse.Attr) {
	*a = fuse.Attr{Ino: fuse.FUSE_ROOT_ID, Mode: syscall.S_IFDIR | 0o555, Nlink: 2}
	fs.setTimes(a)
}

// dirAttr and fileAttr own a pid's nodes by the process's effective ids,
// as /proc/<pid> does. The mode is informative: without default_permissions
// the kernel leaves permission to the daemon, which opens a file for
// reading when the kernel lets the opener ptrace-read the process, and for
// writing when it lets the opener ptrace-attach it.
func (fs *rawFS) dirAttr(a *fuse.Attr, pid int, st *procfs.Status) {
	*a = fuse.Attr{Ino: dirID(pid), Mode: syscall.S_IFDIR | 0o555, Nlink: 2,
		Owner: fuse.Owner{Uid: st.UID[procfs.Effective], Gid: st.GID[procfs.Effective]}}
	fs.setTimes(a)
}

func (fs *rawFS) fileAttr(a *fuse.Attr, pid int, st *procfs.Status, size int) {
	*a = fuse.Attr{Ino: fileID(pid), Mode: syscall.S_IFREG | 0o644, Nlink: 1, Size: uint64(size),
		Owner: fuse.Owner{Uid: st.UID[procfs.Effective], Gid: st.GID[procfs.Effective]}}
	fs.setTimes(a)
}

// parsePID accepts a pid in canonical decimal only, so that "01" and "+1"
// do not alias "1".
func parsePID(name string) int {
	pid, err := strconv.Atoi(name)
	if err != nil || pid <= 0 || pid > maxPID || strconv.Itoa(pid) != name {
		return 0
	}
	return pid
}

// Lookup: every live process can be looked up, with or without a list (its
// file is then empty); only processes with entries are listed.
func (fs *rawFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	kind, pid := node(h.NodeId)
	switch kind {
	case kindRoot:
		pid = parsePID(name)
		if pid == 0 {
			return fuse.ENOENT
		}
		st, code := fs.process(pid)
		if !code.Ok() {
			return code
		}
		*out = fuse.EntryOut{NodeId: dirID(pid)}
		fs.dirAttr(&out.Attr, pid, st)
	case kindDir:
		if name != FileName {
			return fuse.ENOENT
		}
		st, code := fs.process(pid)
		if !code.Ok() {
			return code
		}
		*out = fuse.EntryOut{NodeId: fileID(pid)}
		fs.fileAttr(&out.Attr, pid, st, fs.recentSize(pid))
	default:
		return fuse.ENOENT
	}
	out.SetEntryTimeout(entryTimeout)
	return fuse.OK
}

// recentSize is the length of pid's list text in a recent snapshot, for
// stat; reads never depend on it (direct I/O reads until EOF).
func (fs *rawFS) recentSize(pid int) int {
	snap, err := fs.scan.recent()
	if err != nil {
		fs.log.Printf("scan for the size of pid %d's file: %v", pid, err)
		return 0
	}
	l := snap.ByPID(pid)
	if l == nil {
		return 0
	}
	b, err := l.Undo().AppendText(nil)
	if err != nil {
		return 0
	}
	return len(b)
}

func (fs *rawFS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	kind, pid := node(in.NodeId)
	switch kind {
	case kindRoot:
		fs.rootAttr(&out.Attr)
		out.SetTimeout(rootAttrTime)
		return fuse.OK
	case kindDir, kindFile:
	default:
		return fuse.ENOENT
	}
	st, code := fs.process(pid)
	if !code.Ok() {
		return code
	}
	if kind == kindDir {
		fs.dirAttr(&out.Attr, pid, st)
		return fuse.OK
	}
	size := -1
	if in.Flags()&fuse.FUSE_GETATTR_FH != 0 {
		// fstat on an open file: the size of what it reads.
		if h := fs.file(in.Fh()); h != nil && !h.writable {
			size = len(h.data)
		}
	}
	if size < 0 {
		size = fs.recentSize(pid)
	}
	fs.fileAttr(&out.Attr, pid, st, size)
	return fuse.OK
}

// SetAttr accepts a change of size (the truncation of open(O_TRUNC), which
// shell redirections do) and of times, and does nothing with them: the file
// is an interface, written only by writes. Mode and owner cannot change.
func (fs *rawFS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	kind, pid := node(in.NodeId)
	if kind != kindFile {
		return fuse.EPERM
	}
	if in.Valid&(fuse.FATTR_MODE|fuse.FATTR_UID|fuse.FATTR_GID) != 0 {
		return fuse.EPERM
	}
	st, code := fs.process(pid)
	if !code.Ok() {
		return code
	}
	fs.fileAttr(&out.Attr, pid, st, fs.recentSize(pid))
	return fuse.OK
}

func (fs *rawFS) file(fh uint64) *handle {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return fs.files[fh]
}

// Open judges the opener, as the kernel judges an open of
// /proc/<pid>/mem: reading needs the right to ptrace-read the process
// (PTRACE_MODE_READ_REALCREDS), writing the right to ptrace-attach it
// (PTRACE_MODE_ATTACH_REALCREDS), with the opener's credentials in its own
// user namespace; and the process must have a pid in the opener's PID
// namespace. Any refusal is EACCES. A writer's credentials are kept for the
// writes to come. A reader gets the snapshot it will read: the file's whole
// text, from a scan that began after the open arrived.
func (fs *rawFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	kind, pid := node(in.NodeId)
	if kind != kindFile {
		return fuse.EISDIR
	}
	if _, code := fs.process(pid); !code.Ok() {
		return code
	}
	acc := in.Flags & syscall.O_ACCMODE
	h := &handle{pid: pid, writable: acc != syscall.O_RDONLY, pidfd: -1}
	opener, code := fs.admit(in.Caller, pid, h.writable)
	if !code.Ok() {
		return code
	}
	if h.writable {
		h.opener = opener
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			opener.Close()
			return fuse.ENOENT
		}
		h.pidfd = fd
	} else {
		opener.Close()
	}
	if acc != syscall.O_WRONLY {
		snap, err := fs.scan.fresh()
		if err != nil {
			fs.log.Printf("open pid %d's file: %v", pid, err)
			h.close()
			return fuse.EIO
		}
		if l := snap.ByPID(pid); l != nil {
			if h.data, err = l.Undo().AppendText(nil); err != nil {
				fs.log.Printf("open pid %d's file: %v", pid, err)
				h.close()
				return fuse.EIO
			}
		}
		// A process that exited during the scan has no list any more;
		// an empty file would say it never had one.
		if _, code := fs.process(pid); !code.Ok() {
			h.close()
			return code
		}
	}
	fs.mu.Lock()
	fs.nextFh++
	out.Fh = fs.nextFh
	fs.files[out.Fh] = h
	fs.mu.Unlock()
	// Direct I/O: reads and writes reach the daemon as the caller made
	// them, never served from or merged in the page cache.
	out.OpenFlags = fuse.FOPEN_DIRECT_IO
	if !h.writable {
		out.OpenFlags |= fuse.FOPEN_NOFLUSH
	}
	return fuse.OK
}

// admit captures the opener's credentials and has the kernel judge them
// (see Open).
func (fs *rawFS) admit(c fuse.Caller, pid int, write bool) (*Caller, fuse.Status) {
	what := "read"
	mode := helper.AccessRead
	if write {
		what, mode = "write", helper.AccessAttach
	}
	refuse := func(err error) (*Caller, fuse.Status) {
		fs.log.Printf("pid %d's file: open for %s by pid %d refused: %v", pid, what, c.Pid, err)
		return nil, fuse.EACCES
	}
	opener, pidns, err := captureCaller(c)
	if err != nil {
		return refuse(err)
	}
	visible, err := visibleFrom(pidns, pid)
	pidns.Close()
	if errors.Is(err, ErrNoProcess) {
		opener.Close()
		return nil, fuse.ENOENT
	}
	if err != nil || !visible {
		opener.Close()
		if err == nil {
			err = errHidden
		}
		return refuse(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), fs.timeout)
	defer cancel()
	switch err := judge(ctx, opener, mode, pid); {
	case err == nil:
		return opener, fuse.OK
	case errors.Is(err, ErrNoProcess):
		opener.Close()
		return nil, fuse.ENOENT
	case errors.Is(err, ErrPermission):
		opener.Close()
		return refuse(err)
	default:
		opener.Close()
		fs.log.Printf("pid %d's file: open for %s by pid %d: %v", pid, what, c.Pid, err)
		return nil, fuse.EIO
	}
}

// close releases what an open handle holds.
func (h *handle) close() {
	h.opener.Close()
	if h.pidfd >= 0 {
		unix.Close(h.pidfd)
		h.pidfd = -1
	}
}

func (fs *rawFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	h := fs.file(in.Fh)
	if h == nil {
		return nil, fuse.EBADF
	}
	if in.Offset >= uint64(len(h.data)) {
		return fuse.ReadResultData(nil), fuse.OK
	}
	end := min(uint64(len(h.data)), in.Offset+uint64(in.Size))
	return fuse.ReadResultData(h.data[in.Offset:end]), fuse.OK
}

// Write buffers what it is given; a write that ends a line applies every
// line buffered so far, as one "add or update", and returns its error, so
// that `echo ... > file` reports it. Bytes after the last newline wait for
// more writes or for close(2) (Flush).
func (fs *rawFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	h := fs.file(in.Fh)
	if h == nil || !h.writable {
		return 0, fuse.EBADF
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case len(h.pend) == 0:
		// Any offset may start a list: after O_TRUNC it is 0, with
		// O_APPEND the size the kernel last saw.
		h.pendOff = in.Offset
	case in.Offset != h.pendOff+uint64(len(h.pend)):
		fs.log.Printf("pid %d's file: write at offset %d by pid %d does not continue the line at %d; discarded",
			h.pid, in.Offset, in.Pid, h.pendOff+uint64(len(h.pend)))
		h.pend = h.pend[:0]
		return 0, fuse.EINVAL
	}
	if len(h.pend)+len(data) > maxPending {
		h.pend = h.pend[:0]
		return 0, fuse.Status(syscall.EFBIG)
	}
	// data belongs to the request buffer, which go-fuse reuses.
	h.pend = append(h.pend, data...)
	if len(data) == 0 || data[len(data)-1] != '\n' {
		return uint32(len(data)), fuse.OK
	}
	code := fs.apply(h, in.Caller)
	h.pend = h.pend[:0]
	if !code.Ok() {
		return 0, code
	}
	return uint32(len(data)), fuse.OK
}

// Flush (each close(2) of the file) applies a last line that had no
// newline; close returns its error.
func (fs *rawFS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	h := fs.file(in.Fh)
	if h == nil || !h.writable || helper.IsChild(int(in.Caller.Pid)) {
		// A credential child closing its copy of this process's
		// descriptors is no writer's close.
		return fuse.OK
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.pend) == 0 {
		return fuse.OK
	}
	code := fs.apply(h, in.Caller)
	h.pend = h.pend[:0]
	return code
}

func (fs *rawFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	fs.mu.Lock()
	h := fs.files[in.Fh]
	delete(fs.files, in.Fh)
	fs.mu.Unlock()
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.close()
	if len(h.pend) > 0 {
		// Only reachable when the last reference goes without a close
		// (an mmap, which direct I/O refuses, or a lost flush).
		fs.log.Printf("pid %d's file: %d unapplied bytes discarded at release", h.pid, len(h.pend))
	}
	h.mu.Unlock()
}

// apply parses h.pend and has the Injector apply it to h.pid with the
// opener's credentials, whoever wrote the bytes. blocked is the process now
// waiting in write(2) or close(2): it cannot be the target, since an
// injection stops the target and the target would wait on this request.
func (fs *rawFS) apply(h *handle, blocked fuse.Caller) fuse.Status {
	want, err := undo.Parse(h.pend)
	if err != nil {
		fs.log.Printf("pid %d's file: write by pid %d: %v", h.pid, blocked.Pid, err)
		return fuse.EINVAL
	}
	if len(want) == 0 {
		return fuse.OK
	}
	var tgids []int
	if blocked.Pid != 0 {
		tgid := int(blocked.Pid)
		if st, err := fs.proc.Status(tgid); err == nil {
			tgid = st.Tgid
		}
		tgids = append(tgids, tgid)
	}
	if slices.Contains(tgids, h.pid) {
		fs.log.Printf("pid %d's file: a process cannot write its own list through the file system (it would wait on itself); use `semundo exec --undo FILE -- CMD`", h.pid)
		return fuse.Status(syscall.EDEADLK)
	}
	if !fs.enter(tgids, h.pid) {
		fs.log.Printf("pid %d's file: pid %d is itself waiting on a write through this file system; refused to avoid a deadlock", h.pid, h.pid)
		return fuse.Status(syscall.EDEADLK)
	}
	defer fs.leave(tgids)

	if err := unix.PidfdSendSignal(h.pidfd, 0, nil, 0); err == unix.ESRCH {
		return fuse.Status(syscall.ESRCH)
	}
	snap, err := fs.scan.fresh()
	if err != nil {
		fs.log.Printf("pid %d's file: read current list: %v", h.pid, err)
		return fuse.EIO
	}
	if _, code := fs.process(h.pid); !code.Ok() {
		return fuse.Status(syscall.ESRCH)
	}
	var current undo.List
	if l := snap.ByPID(h.pid); l != nil {
		current = l.Undo()
	}
	// Not the request's interrupt: killing a helper in the middle of an
	// injection is worse than letting it finish; the timeout bounds it.
	ctx, cancel := context.WithTimeout(context.Background(), fs.timeout)
	defer cancel()
	err = fs.inj.Inject(ctx, h.opener, h.pid, current, want)
	if err != nil {
		fs.log.Print(err)
		return fuse.Status(errnoOf(err))
	}
	if fs.srv != nil {
		// Nothing should be cached (direct I/O, no attribute caching),
		// but a kernel that did must not show the old list.
		fs.srv.InodeNotify(fileID(h.pid), 0, 0)
	}
	return fuse.OK
}

// enter records that the processes tgids wait on an injection into target,
// unless target is itself waiting on one (the injection would never stop
// it). Recording and checking under one lock means that of two processes
// writing each other's files, at least the second is refused.
func (fs *rawFS) enter(tgids []int, target int) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.writing[target] > 0 {
		return false
	}
	for _, t := range tgids {
		fs.writing[t]++
	}
	return true
}

func (fs *rawFS) leave(tgids []int) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for _, t := range tgids {
		if fs.writing[t]--; fs.writing[t] <= 0 {
			delete(fs.writing, t)
		}
	}
}

// errnoOf maps an Injector's error to the errno the writer gets.
func errnoOf(err error) syscall.Errno {
	switch {
	case errors.Is(err, ErrPermission):
		return syscall.EACCES
	case errors.Is(err, ErrInvalid):
		return syscall.EINVAL
	case errors.Is(err, ErrNoProcess):
		return syscall.ESRCH
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return syscall.ETIMEDOUT
	}
	return syscall.EIO
}

// OpenDir takes the listing: for the root, the processes with entries in a
// scan begun after the open; for a pid, its one file.
func (fs *rawFS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	kind, pid := node(in.NodeId)
	ents := []fuse.DirEntry{
		{Name: ".", Mode: syscall.S_IFDIR, Ino: in.NodeId},
		{Name: "..", Mode: syscall.S_IFDIR, Ino: fuse.FUSE_ROOT_ID},
	}
	switch kind {
	case kindRoot:
		// From a scan that began after the open, as procfs lists what
		// exists at readdir: an `ls` right after `ipcrm` must not show a
		// process whose entries went with the set. Concurrent listings
		// still share one scan.
		snap, err := fs.scan.fresh()
		if err != nil {
			fs.log.Printf("list processes: %v", err)
			return fuse.EIO
		}
		var pids []int
		for _, l := range snap.Lists {
			if len(l.Entries) == 0 {
				continue
			}
			for _, p := range l.Processes {
				pids = append(pids, p.PID)
			}
		}
		slices.Sort(pids)
		for _, p := range slices.Compact(pids) {
			ents = append(ents, fuse.DirEntry{Name: strconv.Itoa(p), Mode: syscall.S_IFDIR, Ino: dirID(p)})
		}
	case kindDir:
		if _, code := fs.process(pid); !code.Ok() {
			return code
		}
		ents = append(ents, fuse.DirEntry{Name: FileName, Mode: syscall.S_IFREG, Ino: fileID(pid)})
	default:
		return fuse.ENOTDIR
	}
	fs.mu.Lock()
	fs.nextFh++
	out.Fh = fs.nextFh
	fs.dirs[out.Fh] = ents
	fs.mu.Unlock()
	return fuse.OK
}

// ReadDir serves the listing taken at OpenDir; an entry's offset is its
// index plus one, so a reader that continues at an offset resumes there.
func (fs *rawFS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	fs.mu.Lock()
	ents, ok := fs.dirs[in.Fh]
	fs.mu.Unlock()
	if !ok {
		return fuse.EBADF
	}
	for i := in.Offset; i < uint64(len(ents)); i++ {
		e := ents[i]
		e.Off = i + 1
		if !out.AddDirEntry(e) {
			break
		}
	}
	return fuse.OK
}

func (fs *rawFS) ReleaseDir(in *fuse.ReleaseIn) {
	fs.mu.Lock()
	delete(fs.dirs, in.Fh)
	fs.mu.Unlock()
}

func (fs *rawFS) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	*out = fuse.StatfsOut{Bsize: 4096, NameLen: 255, Frsize: 4096}
	return fuse.OK
}

// The tree is fixed: nothing can be created, removed or renamed.

func (fs *rawFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	return fuse.EPERM
}

func (fs *rawFS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EPERM
}

func (fs *rawFS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EPERM
}

func (fs *rawFS) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fuse.EPERM
}

func (fs *rawFS) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fuse.EPERM
}

func (fs *rawFS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	return fuse.EPERM
}

func (fs *rawFS) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EPERM
}

func (fs *rawFS) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return fuse.EPERM
}

package writer

import (
	"fmt"
	"slices"
	"unsafe"

	"github.com/semundo/semundo/internal/procfs"
	"github.com/semundo/semundo/sysvsem"
	"golang.org/x/sys/unix"
)

// capIPCOwner is CAP_IPC_OWNER, which bypasses System V IPC permission
// checks.
const capIPCOwner = 15

// Creds are the credentials the kernel checks a process's System V IPC
// permissions with (ipcperms in ipc/util.c).
type Creds struct {
	EUID   uint32
	FSGID  uint32
	Groups []uint32
	// IPCOwner: the task has CAP_IPC_OWNER over its IPC namespace, as
	// ipcperms asks (ns_capable in the namespace's owning user namespace):
	// in its effective set and its user namespace owns the IPC namespace
	// or is an ancestor of the one that does.
	IPCOwner bool
}

// ReadCreds reads the credentials of pid (a process or a thread) from
// /proc/<pid>/status, and its user and IPC namespaces.
func ReadCreds(pid int) (*Creds, error) { return readCreds(pid, nil) }

// readCreds is ReadCreds, asking caps (when not nil) whether the task's
// CAP_IPC_OWNER holds in its IPC namespace.
func readCreds(pid int, caps *capCache) (*Creds, error) {
	st, err := procfs.NewDefaultFS().Status(pid)
	if err != nil {
		return nil, fmt.Errorf("read credentials of pid %d: %w", pid, err)
	}
	return credsIn(pid, st, caps, 0), nil
}

// credsIn returns the credentials in st, the status of task pid, asking
// caps (when not nil) whether its CAP_IPC_OWNER holds in its IPC
// namespace, whose inode is ipc when the caller read it (else 0).
func credsIn(pid int, st procfs.Status, caps *capCache, ipc uint64) *Creds {
	c := credsOf(st)
	if c.IPCOwner {
		// Where the namespaces cannot be read the effective set stands:
		// the kernel judges the injected semop in any case.
		held, err := caps.over(pid, c.EUID, ipc)
		if err == nil {
			c.IPCOwner = held
		}
	}
	return c
}

// capCache remembers capOverIPCNamespace's answers for the targets of one
// writer thread. The answer depends only on the task's user namespace,
// its IPC namespace and its effective uid, and a restored container's
// tasks share all three: the walk took about a tenth of the tracer's time
// per target (BenchmarkTree100). Each key's namespaces are held open, so
// that their inode numbers cannot pass to new namespaces while cached.
type capCache struct {
	answers map[capKey]bool
	held    []int // the namespaces' descriptors, closed by close
	max     int   // the most answers kept; 0 means capCacheMax
}

// capCacheMax bounds the descriptors a cache holds (two an answer): a write
// into the tasks of thousands of containers, each in an IPC namespace of
// its own, must not run out of descriptors for the /proc files it reads.
const capCacheMax = 64

type capKey struct {
	user, ipc uint64
	euid      uint32
}

// over is capOverIPCNamespace for task pid, from the cache when it has
// the answer (two stat calls, where the walk takes six calls or more; one
// when the caller has just read the task's IPC namespace, whose inode it
// passes as ipcIno, else 0). A nil cache asks every time.
func (c *capCache) over(pid int, euid uint32, ipcIno uint64) (bool, error) {
	own := namespaceOf(fmt.Sprintf("/proc/%d/ns/user", pid))
	if own == 0 {
		return false, fmt.Errorf("pid %d: cannot read its user namespace", pid)
	}
	if c == nil {
		ipc, err := openNamespace(pid, "ipc")
		if err != nil {
			return false, err
		}
		defer unix.Close(ipc)
		return capOverIPCNamespace(own, ipc, euid)
	}
	if ipcIno == 0 {
		ipcIno = namespaceOf(fmt.Sprintf("/proc/%d/ns/ipc", pid))
	}
	k := capKey{user: own, ipc: ipcIno, euid: euid}
	if held, ok := c.answers[k]; ok {
		return held, nil
	}
	user, err := openNamespace(pid, "user")
	if err != nil {
		return false, err
	}
	ipc, err := openNamespace(pid, "ipc")
	if err != nil {
		unix.Close(user)
		return false, err
	}
	// Kept under the inodes of the namespaces held open, which the task
	// may have entered since the stat calls.
	k.user, k.ipc = inodeOf(user), inodeOf(ipc)
	held, err := capOverIPCNamespace(k.user, ipc, euid)
	limit := c.max
	if limit == 0 {
		limit = capCacheMax
	}
	if err != nil || k.user == 0 || k.ipc == 0 || len(c.answers) >= limit {
		unix.Close(user)
		unix.Close(ipc)
		return held, err
	}
	if c.answers == nil {
		c.answers = map[capKey]bool{}
	}
	c.answers[k] = held
	c.held = append(c.held, user, ipc)
	return held, nil
}

// close closes the namespaces the cache holds.
func (c *capCache) close() {
	if c == nil {
		return
	}
	for _, fd := range c.held {
		unix.Close(fd)
	}
	c.held, c.answers = nil, nil
}

// openNamespace opens /proc/<pid>/ns/<kind>.
func openNamespace(pid int, kind string) (int, error) {
	return unix.Open(fmt.Sprintf("/proc/%d/ns/%s", pid, kind), unix.O_RDONLY|unix.O_CLOEXEC, 0)
}

// inodeOf returns the inode of the file open as fd, 0 when fstat fails.
func inodeOf(fd int) uint64 {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return 0
	}
	return st.Ino
}

// capOverIPCNamespace reports whether a capability in the effective set
// of a task in user namespace own (its inode), whose IPC namespace is
// open as ipc and whose effective uid is euid, holds in that IPC
// namespace: cap_capable's walk (security/commoncap.c) from the
// namespace's owning user namespace up to the task's. Root of a
// container's user namespace has no CAP_IPC_OWNER over the host's IPC
// namespace, which such a container may share: mode bits alone then
// decide, and a write the kernel would refuse is refused before it
// starts.
func capOverIPCNamespace(own uint64, ipc int, euid uint32) (bool, error) {
	ns, err := unix.IoctlRetInt(ipc, unix.NS_GET_USERNS)
	if err != nil {
		return false, err
	}
	defer func() { unix.Close(ns) }()
	for {
		var st unix.Stat_t
		if err := unix.Fstat(ns, &st); err != nil {
			return false, err
		}
		if st.Ino == own {
			return true, nil
		}
		parent, err := unix.IoctlRetInt(ns, unix.NS_GET_PARENT)
		if err == unix.EPERM {
			// The top of semundo's own user namespace, and the task's was
			// not met: it is below or beside, and holds no capability
			// here.
			return false, nil
		}
		if err != nil {
			return false, err
		}
		var ps unix.Stat_t
		perr := unix.Fstat(parent, &ps)
		var owner uint32
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(ns), unix.NS_GET_OWNER_UID, uintptr(unsafe.Pointer(&owner)))
		unix.Close(ns)
		ns = parent
		if perr != nil {
			return false, perr
		}
		if errno != 0 {
			return false, errno
		}
		// The creator of a user namespace, in its parent, holds every
		// capability in it.
		if ps.Ino == own && owner == euid {
			return true, nil
		}
	}
}

// credsOf takes from a status what ipcperms checks: the effective uid, the
// filesystem gid (in_group_p checks it), the supplementary groups and
// CAP_IPC_OWNER.
func credsOf(st procfs.Status) *Creds {
	return &Creds{
		EUID:     st.UID[procfs.Effective],
		FSGID:    st.GID[procfs.Filesystem],
		Groups:   st.Groups,
		IPCOwner: st.CapEff&(1<<capIPCOwner) != 0,
	}
}

func (c *Creds) inGroup(gid uint32) bool {
	return gid == c.FSGID || slices.Contains(c.Groups, gid)
}

// mayAlter reports whether the kernel lets these credentials alter a set
// with perm (write permission in ipcperms' terms).
func (c *Creds) mayAlter(perm sysvsem.Perm) bool {
	granted := perm.Mode
	switch {
	case c.EUID == perm.CUID || c.EUID == perm.UID:
		granted >>= 6
	case c.inGroup(perm.CGID) || c.inGroup(perm.GID):
		granted >>= 3
	}
	return granted&0o2 != 0 || c.IPCOwner
}

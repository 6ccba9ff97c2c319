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
func ReadCreds(pid int) (*Creds, error) {
	st, err := procfs.NewDefaultFS().Status(pid)
	if err != nil {
		return nil, fmt.Errorf("read credentials of pid %d: %w", pid, err)
	}
	c := credsOf(st)
	if c.IPCOwner {
		// Where the namespaces cannot be read the effective set stands:
		// the kernel judges the injected semop in any case.
		if held, err := capOverIPCNamespace(pid, c.EUID); err == nil {
			c.IPCOwner = held
		}
	}
	return c, nil
}

// capOverIPCNamespace reports whether a capability in the effective set
// of task pid, whose effective uid is euid, holds in its IPC namespace:
// cap_capable's walk (security/commoncap.c) from the namespace's owning
// user namespace up to the task's. Root of a container's user namespace
// has no CAP_IPC_OWNER over the host's IPC namespace, which such a
// container may share: mode bits alone then decide, and a write the
// kernel would refuse is refused before it starts.
func capOverIPCNamespace(pid int, euid uint32) (bool, error) {
	own := namespaceOf(fmt.Sprintf("/proc/%d/ns/user", pid))
	if own == 0 {
		return false, fmt.Errorf("pid %d: cannot read its user namespace", pid)
	}
	ipc, err := unix.Open(fmt.Sprintf("/proc/%d/ns/ipc", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, err
	}
	ns, err := unix.IoctlRetInt(ipc, unix.NS_GET_USERNS)
	unix.Close(ipc)
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

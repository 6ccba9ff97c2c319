package writer

import (
	"fmt"
	"slices"

	"github.com/semundo/semundo/internal/procfs"
	"github.com/semundo/semundo/sysvsem"
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
	// IPCOwner: the process has CAP_IPC_OWNER in its effective set.
	IPCOwner bool
}

// ReadCreds reads the credentials of pid (a process or a thread) from
// /proc/<pid>/status.
func ReadCreds(pid int) (*Creds, error) {
	st, err := procfs.NewDefaultFS().Status(pid)
	if err != nil {
		return nil, fmt.Errorf("read credentials of pid %d: %w", pid, err)
	}
	return credsOf(st), nil
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

package writer

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

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

// ProcFS reads process information under a procfs mount point, so that the
// parsers can be tested against fixture files.
type ProcFS struct{ root string }

// NewProcFS returns a ProcFS rooted at root ("/proc" on a live system).
func NewProcFS(root string) ProcFS { return ProcFS{root: root} }

// Creds reads pid's credentials from <root>/<pid>/status.
func (fs ProcFS) Creds(pid int) (*Creds, error) {
	b, err := os.ReadFile(filepath.Join(fs.root, strconv.Itoa(pid), "status"))
	if err != nil {
		return nil, fmt.Errorf("read credentials of pid %d: %w", pid, err)
	}
	return parseCreds(b)
}

// parseCreds parses the Uid, Gid, Groups and CapEff lines of a status file.
func parseCreds(b []byte) (*Creds, error) {
	c := &Creds{}
	seen := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(val)
		switch key {
		case "Uid", "Gid":
			// real, effective, saved, filesystem
			if len(f) != 4 {
				return nil, fmt.Errorf("status: %s line has %d fields, want 4", key, len(f))
			}
			idx := 1 // euid
			if key == "Gid" {
				idx = 3 // fsgid: in_group_p checks it
			}
			v, err := strconv.ParseUint(f[idx], 10, 32)
			if err != nil {
				return nil, fmt.Errorf("status: %s: %w", key, err)
			}
			if key == "Uid" {
				c.EUID = uint32(v)
			} else {
				c.FSGID = uint32(v)
			}
			seen++
		case "Groups":
			for _, g := range f {
				v, err := strconv.ParseUint(g, 10, 32)
				if err != nil {
					return nil, fmt.Errorf("status: Groups: %w", err)
				}
				c.Groups = append(c.Groups, uint32(v))
			}
		case "CapEff":
			if len(f) != 1 {
				return nil, fmt.Errorf("status: CapEff line has %d fields", len(f))
			}
			v, err := strconv.ParseUint(f[0], 16, 64)
			if err != nil {
				return nil, fmt.Errorf("status: CapEff: %w", err)
			}
			c.IPCOwner = v&(1<<capIPCOwner) != 0
			seen++
		}
	}
	if seen != 3 {
		return nil, fmt.Errorf("status: Uid, Gid or CapEff line missing")
	}
	return c, nil
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

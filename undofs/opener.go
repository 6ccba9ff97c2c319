package undofs

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/semundo/semundo/internal/helper"
	"github.com/semundo/semundo/internal/procfs"
	"golang.org/x/sys/unix"
)

// Caller is a process that opened a file, with the credentials it held
// then: the open is judged with them, and every write through that open
// file is done with them, whoever makes the write (a descriptor passed
// over a socket, inherited, or written to by a set-user-ID program), as
// the kernel does for /proc/<pid>/mem.
type Caller struct {
	// PID is the calling thread (FUSE reports thread ids) and TGID its
	// process, both in the daemon's PID namespace.
	PID, TGID int
	// UID and GID hold the real, effective, saved and filesystem ids
	// (index with procfs.Real, Effective, Saved, Filesystem) as the
	// daemon's user namespace numbers them.
	UID, GID [4]uint32
	// Groups are the supplementary groups.
	Groups []uint32
	// CapEff and CapPrm are the effective and permitted capabilities, which
	// count in UserNS only.
	CapEff, CapPrm uint64
	// UserNS is the caller's user namespace when it is not the daemon's
	// (nil when it is). It belongs to the open file and is closed with it.
	UserNS *os.File
}

// creds are the credentials a child takes on to act as c.
func (c *Caller) creds() *helper.Creds {
	return &helper.Creds{UID: c.UID, GID: c.GID, Groups: c.Groups, CapEff: c.CapEff, CapPrm: c.CapPrm, UserNS: c.UserNS}
}

// Close releases the user namespace handle.
func (c *Caller) Close() error {
	if c == nil || c.UserNS == nil {
		return nil
	}
	return c.UserNS.Close()
}

// Reasons to refuse an opener, each an EACCES.
var (
	// errOutside: the opener is in no PID namespace the daemon sees (FUSE
	// reports pid 0), so its credentials cannot be read.
	errOutside = errors.New("the opening process is outside the daemon's PID namespace")
	// errHidden: the target has no pid in the opener's PID namespace: the
	// opener could not name it, let alone ptrace it.
	errHidden = errors.New("the process is not in the opener's PID namespace")
	// errChanged: the thread's credentials are not those of the request:
	// it changed them meanwhile, or it exited and its id was reused.
	errChanged = errors.New("the opening thread's credentials changed during the open")
)

// captureCaller reads the credentials of the thread that made a FUSE
// request and opens handles on its user and PID namespaces (pidns: the
// caller closes it). Everything is read through one descriptor of the
// thread's /proc directory, which stays bound to that thread: if it exits
// meanwhile, the reads fail rather than read a newcomer with its id.
func captureCaller(c fuse.Caller) (caller *Caller, pidns *os.File, err error) {
	if c.Pid == 0 {
		return nil, nil, errOutside
	}
	dir, err := os.Open("/proc/" + strconv.Itoa(int(c.Pid)))
	if err != nil {
		return nil, nil, fmt.Errorf("opener %d: %w", c.Pid, err)
	}
	defer dir.Close()
	b, err := readAt(dir, "status")
	if err != nil {
		return nil, nil, fmt.Errorf("opener %d: %w", c.Pid, err)
	}
	st, err := procfs.ParseStatus(b)
	if err != nil {
		return nil, nil, fmt.Errorf("opener %d: %w", c.Pid, err)
	}
	prm, ok := statusHex(b, "CapPrm")
	if !ok {
		return nil, nil, fmt.Errorf("opener %d: no CapPrm in its status: %w", c.Pid, procfs.ErrMalformed)
	}
	if st.UID[procfs.Filesystem] != c.Uid || st.GID[procfs.Filesystem] != c.Gid {
		return nil, nil, fmt.Errorf("opener %d: %w", c.Pid, errChanged)
	}
	caller = &Caller{PID: int(c.Pid), TGID: st.Tgid, UID: st.UID, GID: st.GID, Groups: st.Groups,
		CapEff: st.CapEff, CapPrm: prm}
	userns, err := openAt(dir, "ns/user")
	if err != nil {
		return nil, nil, fmt.Errorf("opener %d: user namespace: %w", c.Pid, err)
	}
	if same, err := sameFile(userns, "/proc/self/ns/user"); err != nil || same {
		userns.Close()
		if err != nil {
			return nil, nil, err
		}
	} else {
		caller.UserNS = userns
	}
	pidns, err = openAt(dir, "ns/pid")
	if err != nil {
		caller.Close()
		return nil, nil, fmt.Errorf("opener %d: PID namespace: %w", c.Pid, err)
	}
	return caller, pidns, nil
}

func openAt(dir *os.File, name string) (*os.File, error) {
	fd, err := unix.Openat(int(dir.Fd()), name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: dir.Name() + "/" + name, Err: err}
	}
	return os.NewFile(uintptr(fd), dir.Name()+"/"+name), nil
}

func readAt(dir *os.File, name string) ([]byte, error) {
	f, err := openAt(dir, name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// statusHex returns the hexadecimal value of a status line.
func statusHex(status []byte, key string) (uint64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		k, v, ok := bytes.Cut(sc.Bytes(), []byte(":"))
		if ok && string(k) == key {
			n, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 16, 64)
			return n, err == nil
		}
	}
	return 0, false
}

// sameFile reports whether f and the file at path are one (namespace
// files are equal when their device and inode are).
func sameFile(f *os.File, path string) (bool, error) {
	var a, b unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &a); err != nil {
		return false, err
	}
	if err := unix.Stat(path, &b); err != nil {
		return false, err
	}
	return a.Dev == b.Dev && a.Ino == b.Ino, nil
}

// visibleFrom reports whether process pid (in the daemon's PID namespace)
// has a pid in the PID namespace ns: whether ns is pid's own namespace or
// one of its ancestors.
func visibleFrom(ns *os.File, pid int) (bool, error) {
	var want unix.Stat_t
	if err := unix.Fstat(int(ns.Fd()), &want); err != nil {
		return false, err
	}
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/ns/pid", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == unix.ENOENT || err == unix.ESRCH {
		// Gone, or a zombie: its namespaces went with its exit, so it
		// is as absent to a reader as to procfs.
		return false, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	if err != nil {
		return false, fmt.Errorf("PID namespace of pid %d: %w", pid, err)
	}
	for {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			unix.Close(fd)
			return false, err
		}
		if st.Dev == want.Dev && st.Ino == want.Ino {
			unix.Close(fd)
			return true, nil
		}
		parent, err := unix.IoctlRetInt(fd, unix.NS_GET_PARENT)
		unix.Close(fd)
		if err == unix.EPERM {
			// No parent, or one outside the daemon's namespace.
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("parent of a PID namespace of pid %d: %w", pid, err)
		}
		fd = parent
	}
}

// judge asks the kernel whether c may access process pid as mode says,
// from a child that holds c's credentials. It returns nil, or an error
// wrapping ErrPermission or ErrNoProcess, or another failure.
func judge(ctx context.Context, c *Caller, mode helper.Access, pid int) error {
	// Check's answers come bare; anything wrapped is another failure (a
	// credential step's EPERM is no answer about the target).
	err := helper.Check(ctx, c.creds(), mode, pid)
	switch err {
	case helper.ErrPermission:
		return fmt.Errorf("pid %d may not ptrace pid %d: %w", c.TGID, pid, ErrPermission)
	case helper.ErrNoProcess:
		return fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	return err
}

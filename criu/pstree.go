package criu

import (
	"fmt"
	"path/filepath"

	"github.com/semundo/semundo/internal/procfs"
	"golang.org/x/sys/unix"
)

// CRIU's pstree.img (images/pstree.proto): one PstreeEntry per process
// of the dumped tree, the root first, each with the process's pid and its
// parent's in the root's PID namespace (fields 1 and 2, pid and ppid).
const (
	pstreeMagic     = 0x50273030
	pstreeFieldPID  = 1
	pstreeFieldPPID = 2
	pstreeFile      = "pstree.img"
)

// pstreeEntry is one process of CRIU's pstree.img.
type pstreeEntry struct {
	pid, ppid int // ppid is 0 for the root
}

// readPstree returns the processes CRIU's pstree.img in dir lists, root
// first.
func readPstree(dir string) ([]pstreeEntry, error) {
	b, err := procfs.ReadFile(filepath.Join(dir, pstreeFile))
	if err != nil {
		return nil, err
	}
	return parsePstree(b)
}

// parsePstree decodes a pstree image: the two magics, then entries of a
// native-endian u32 size and a PstreeEntry each.
func parsePstree(b []byte) ([]pstreeEntry, error) {
	rest, err := imageBody(b, pstreeMagic, "pstree")
	if err != nil {
		return nil, err
	}
	var es []pstreeEntry
	seen := map[int]bool{}
	for len(rest) > 0 {
		var msg []byte
		if msg, rest, err = nextEntry(rest); err != nil {
			return nil, err
		}
		var e [2]uint64
		for i, num := range []uint64{pstreeFieldPID, pstreeFieldPPID} {
			f, ok, err := protoField(msg, num, 0)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, fmt.Errorf("entry without field %d: %w", num, errProto)
			}
			if e[i], err = protoVarint(f); err != nil {
				return nil, err
			}
			if e[i] > maxPID {
				return nil, fmt.Errorf("pid %d out of range: %w", e[i], errProto)
			}
		}
		pid, ppid := int(e[0]), int(e[1])
		if pid == 0 || seen[pid] {
			return nil, fmt.Errorf("pid %d twice or zero: %w", pid, errProto)
		}
		// The root has no parent in the image, every other process one
		// listed before it.
		if (len(es) == 0) != (ppid == 0) || (ppid != 0 && !seen[ppid]) {
			return nil, fmt.Errorf("pid %d has parent %d: %w", pid, ppid, errProto)
		}
		seen[pid] = true
		es = append(es, pstreeEntry{pid, ppid})
	}
	if len(es) == 0 {
		return nil, fmt.Errorf("no process: %w", errProto)
	}
	return es, nil
}

// maxPID is PID_MAX_LIMIT, the largest pid Linux hands out.
const maxPID = 1 << 22

// dumpedTree returns the tree CRIU dumped from root, as walkHeld does,
// from CRIU's own record of it, without /proc reads per process: the
// pids pstree.img lists are pids of the root's PID namespace, the same
// here when the root shares semundo's namespace, and translated by the
// kernel (pidTranslator) when it has one of its own. ok is false when
// neither applies (a PID namespace of the tree's own on a kernel before
// 6.11, an images directory without pstree.img, as with CRIU's image
// streamer, or one that does not parse): the caller then walks the tree.
// At post-dump the tree is frozen and the walk had cost 3 of post-dump's
// 11 ms for 100 processes (BenchmarkTree100). raw is pstree.img as read,
// for a later look to tell whether it changed.
func dumpedTree(p procfs.FS, root int, dir string) (procs []proc, raw []byte, ok bool) {
	raw, err := procfs.ReadFile(filepath.Join(dir, pstreeFile))
	if err != nil {
		return nil, nil, false
	}
	es, err := parsePstree(raw)
	if err != nil {
		return nil, nil, false
	}
	tr, ok := pidTranslator(p, root, es[0].pid)
	if !ok {
		return nil, nil, false
	}
	defer tr.close()
	procs = make([]proc, len(es))
	for i, e := range es {
		pid, err := tr.pid(e.pid)
		if err != nil {
			return nil, nil, false
		}
		procs[i] = proc{pid: pid, vpid: e.pid}
	}
	return procs, raw, true
}

// translator turns pids of a tree root's PID namespace into pids of
// semundo's.
type translator struct {
	fd int // the root's PID namespace, or -1: the namespace is semundo's
}

// pidTranslator returns the translator for the PID namespace of root,
// whose pid there is rootVPID, and whether there is one: always when the
// root shares semundo's namespace; otherwise where the kernel translates
// (nsfs's NS_GET_TGID_FROM_PIDNS, Linux 6.11), and only when it confirms
// that rootVPID there is root here (so semundo's /proc and its own PID
// namespace agree).
func pidTranslator(p procfs.FS, root, rootVPID int) (*translator, bool) {
	ns, err := p.NSpid(root)
	if err != nil || ns[len(ns)-1] != rootVPID {
		return nil, false
	}
	if len(ns) == 1 {
		return &translator{fd: -1}, true
	}
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/ns/pid", root), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, false
	}
	tr := &translator{fd: fd}
	if got, err := tr.pid(rootVPID); err != nil || got != root {
		tr.close()
		return nil, false
	}
	return tr, true
}

// pid returns the pid here of the process whose pid in the root's
// namespace is vpid (ESRCH when there is none).
func (tr *translator) pid(vpid int) (int, error) {
	if tr.fd < 0 {
		return vpid, nil
	}
	// The pid goes in the argument itself, not behind a pointer.
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(tr.fd), unix.NS_GET_TGID_FROM_PIDNS, uintptr(vpid))
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

func (tr *translator) close() {
	if tr.fd >= 0 {
		unix.Close(tr.fd)
	}
}

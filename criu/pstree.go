package criu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/semundo/semundo/internal/procfs"
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

// pstreePIDs returns the pids CRIU's pstree.img in dir lists, root first:
// each process of the dumped tree, as a pid of the root's PID namespace.
func pstreePIDs(dir string) ([]int, error) {
	es, err := readPstree(dir)
	if err != nil {
		return nil, err
	}
	pids := make([]int, len(es))
	for i, e := range es {
		pids[i] = e.pid
	}
	return pids, nil
}

// parsePstree decodes a pstree image: the two magics, then entries of a
// native-endian u32 size and a PstreeEntry each.
func parsePstree(b []byte) ([]pstreeEntry, error) {
	ne := binary.NativeEndian
	if len(b) < 8 || ne.Uint32(b) != imgCommonMagic || ne.Uint32(b[4:]) != pstreeMagic {
		return nil, errors.New("not a CRIU pstree image (wrong magic)")
	}
	var es []pstreeEntry
	seen := map[int]bool{}
	for rest := b[8:]; len(rest) > 0; {
		if len(rest) < 4 {
			return nil, fmt.Errorf("%d bytes after the last entry: %w", len(rest), errProto)
		}
		n := uint64(ne.Uint32(rest))
		if n > uint64(len(rest)-4) {
			return nil, fmt.Errorf("entry of %d bytes with %d left: %w", n, len(rest)-4, errProto)
		}
		msg := rest[4 : 4+n]
		rest = rest[4+n:]
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
// from CRIU's own record of it when that needs no /proc reads per
// process: when the root is in semundo's PID namespace, the pids
// pstree.img lists are the processes' pids here too. ok is false when
// that does not apply (a tree in a PID namespace of its own, an images
// directory without pstree.img, as with CRIU's image streamer, or one
// that does not parse): the caller then walks the tree. At post-dump the
// tree is frozen and the walk had cost 3 of post-dump's 11 ms for 100
// processes (BenchmarkTree100).
func dumpedTree(p procfs.FS, root int, dir string) (procs []proc, ok bool) {
	ns, err := p.NSpid(root)
	if err != nil || len(ns) != 1 {
		return nil, false
	}
	pids, err := pstreePIDs(dir)
	if err != nil || pids[0] != root {
		return nil, false
	}
	procs = make([]proc, len(pids))
	for i, pid := range pids {
		procs[i] = proc{pid: pid, vpid: pid}
	}
	return procs, true
}

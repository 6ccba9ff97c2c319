package criu

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/semundo/semundo/internal/procfs"
)

// CRIU's pstree.img (images/pstree.proto): one PstreeEntry per process
// of the dumped tree, the root first, each with the process's pid in the
// root's PID namespace (field 1, pid).
const (
	pstreeMagic    = 0x50273030
	pstreeFieldPID = 1
	pstreeFile     = "pstree.img"
)

// pstreePIDs returns the pids CRIU's pstree.img in dir lists, root first:
// each process of the dumped tree, as a pid of the root's PID namespace.
func pstreePIDs(dir string) ([]int, error) {
	b, err := procfs.ReadFile(filepath.Join(dir, pstreeFile))
	if err != nil {
		return nil, err
	}
	return parsePstree(b)
}

// parsePstree decodes a pstree image: the two magics, then entries of a
// native-endian u32 size and a PstreeEntry each.
func parsePstree(b []byte) ([]int, error) {
	ne := binary.NativeEndian
	if len(b) < 8 || ne.Uint32(b) != imgCommonMagic || ne.Uint32(b[4:]) != pstreeMagic {
		return nil, errors.New("not a CRIU pstree image (wrong magic)")
	}
	var pids []int
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
		f, ok, err := protoField(msg, pstreeFieldPID, 0)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, fmt.Errorf("entry without a pid: %w", errProto)
		}
		pid, err := protoVarint(f)
		if err != nil {
			return nil, err
		}
		if pid == 0 || pid > 1<<22 || seen[int(pid)] {
			return nil, fmt.Errorf("pid %d twice or out of range: %w", pid, errProto)
		}
		seen[int(pid)] = true
		pids = append(pids, int(pid))
	}
	if len(pids) == 0 {
		return nil, fmt.Errorf("no process: %w", errProto)
	}
	return pids, nil
}

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

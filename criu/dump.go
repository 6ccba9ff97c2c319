package criu

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"

	"github.com/semundo/semundo/checkpoint"
	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/internal/procfs"
	"github.com/semundo/semundo/reader"
)

// DumpResult says what Dump saved.
type DumpResult struct {
	// Tasks is the number of processes in the tree.
	Tasks int
	// Lists and Entries count the undo lists saved and their entries.
	Lists, Entries int
	// Image is the image written to ImageFile.
	Image *image.Image
	// FromPstree: the tree's processes came from CRIU's pstree.img, not
	// from a walk of /proc (see dumpedTree).
	FromPstree bool
	// Early: the helper read the lists when CRIU closed pstree.img, with
	// the tree frozen, and post-dump found them unchanged (Serve).
	Early bool
}

// Dump is the post-dump step: it reads the undo lists of root's tree
// (root and every descendant), which CRIU holds frozen, and writes
// TreeFile and ImageFile into dir, CRIU's images directory. It neither
// stops nor traces any process. It refuses, writing nothing, when a list
// of the tree is shared with a process outside it (ErrShared) or by two
// of its processes (ErrSharedInTree): CRIU restores neither sharing.
func Dump(r *reader.Reader, root int, dir string, opts *Options) (*DumpResult, error) {
	if c := opts.earlyDump(root, dir); c != nil {
		// Taken by the helper when CRIU closed pstree.img: it stands when
		// the tree is the same and a scan now finds the same lists, which
		// the frozen tree cannot have changed but a process outside it
		// (semctl SETVAL, IPC_RMID) can.
		if same, err := c.stillHolds(r, dir); err == nil && same {
			if err := c.write(dir); err != nil {
				return nil, err
			}
			res := c.result()
			res.Early = true
			return res, nil
		}
	}
	c, err := captureDump(r, root, dir, opts)
	if err != nil {
		return nil, err
	}
	if err := c.write(dir); err != nil {
		return nil, err
	}
	return c.result(), nil
}

// dumpCapture is what post-dump saves, read but not yet written.
type dumpCapture struct {
	root int
	dir  string
	// pstree is CRIU's pstree.img as read; nil when the tree was walked.
	pstree []byte
	pids   []int
	snap   *reader.Snapshot
	tree   []byte // TreeFile's contents
	img    *image.Image
}

// captureDump reads what Dump writes: the tree (from CRIU's pstree.img
// when it can, see dumpedTree), its lists and their sets, and which tasks
// CRIU found stopped (its core images).
func captureDump(r *reader.Reader, root int, dir string, opts *Options) (*dumpCapture, error) {
	procs, raw, ok := dumpedTree(opts.proc(), root, dir)
	if !ok {
		var err error
		if procs, err = walkHeld(opts.proc(), root); err != nil {
			return nil, err
		}
	}
	t := &tree{Format: treeFormat, Root: root}
	inTree := map[int]bool{}
	pids := make([]int, len(procs))
	for i, p := range procs {
		inTree[p.pid] = true
		pids[i] = p.pid
	}
	// CRIU's core images (one per task: was it stopped?) are read while
	// the lists and sets are: every step waits with the tree frozen, and
	// the reads need no result of the others.
	type coreStates struct {
		stopped []bool
		err     error
	}
	cores := make(chan coreStates, 1)
	go func() {
		st, err := mapParallel(len(procs), func(i int) (bool, error) { return stoppedAtDump(dir, procs[i].vpid) })
		cores <- coreStates{st, err}
	}()
	// Lists first, then the sets (in CaptureFrozen), as checkpoint.Capture
	// does.
	snap, img, err := captureHeld(r, pids, inTree, root, opts)
	c := <-cores
	if err != nil {
		return nil, err
	}
	if c.err != nil {
		return nil, c.err
	}
	stopped := map[int]bool{}
	for i, p := range procs {
		stopped[p.pid] = c.stopped[i]
		t.Tasks = append(t.Tasks, task{PID: p.pid, VPID: p.vpid, Stopped: c.stopped[i]})
	}
	for i := range img.Lists {
		for j := range img.Lists[i].Processes {
			ip := &img.Lists[i].Processes[j]
			ip.Stopped = stopped[int(ip.PID)]
		}
	}
	b, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	return &dumpCapture{root: root, dir: dir, pstree: raw, pids: pids, snap: snap, tree: append(b, '\n'), img: img}, nil
}

// write writes the two files into dir.
func (c *dumpCapture) write(dir string) error {
	// The tree file first: pre-restore takes the image as the sign that
	// both are there.
	if err := writeFileAtomic(filepath.Join(dir, TreeFile), c.tree); err != nil {
		return fmt.Errorf("write %s into CRIU's images directory: %w", TreeFile, err)
	}
	return image.WriteFileNoSync(filepath.Join(dir, ImageFile), c.img)
}

func (c *dumpCapture) result() *DumpResult {
	res := &DumpResult{Tasks: len(c.pids), Lists: len(c.img.Lists), Image: c.img, FromPstree: c.pstree != nil}
	for _, l := range c.img.Lists {
		res.Entries += len(l.Entries)
	}
	return res
}

// stillHolds reports whether c is what a capture now would save: CRIU's
// pstree.img in dir is the one c read, and a new scan finds every list
// of the tree as c did. Only a capture that took its tree from
// pstree.img can be checked so.
func (c *dumpCapture) stillHolds(r *reader.Reader, dir string) (bool, error) {
	if c.pstree == nil {
		return false, nil
	}
	raw, err := procfs.ReadFile(filepath.Join(dir, pstreeFile))
	if err != nil || !bytes.Equal(raw, c.pstree) {
		return false, err
	}
	snap, err := r.Scan()
	if err != nil {
		return false, err
	}
	for _, pid := range c.pids {
		if !sameList(c.snap.ByPID(pid), snap.ByPID(pid)) {
			return false, nil
		}
	}
	return true, nil
}

// sameList reports whether two scans found the same list: the same
// processes, namespace, and entries with the same adjustments.
func sameList(a, b *reader.List) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.IPCNS == b.IPCNS &&
		slices.EqualFunc(a.Processes, b.Processes, func(x, y reader.Process) bool {
			return x.PID == y.PID && x.Comm == y.Comm && slices.Equal(x.TIDs, y.TIDs)
		}) &&
		slices.EqualFunc(a.Entries, b.Entries, func(x, y reader.Entry) bool {
			return x.Semid == y.Semid && x.Key == y.Key && slices.Equal(x.Adj, y.Adj)
		})
}

// captureHeld scans the lists of pids (the held tree of root, inTree),
// checks that CRIU can restore them, and builds their image; the image's
// processes are all marked running (Dump marks the stopped ones).
func captureHeld(r *reader.Reader, pids []int, inTree map[int]bool, root int, opts *Options) (*reader.Snapshot, *image.Image, error) {
	snap, err := r.Scan()
	if err != nil {
		return nil, nil, err
	}
	if err := checkSharing(snap, pids, inTree, root); err != nil {
		return nil, nil, err
	}
	img, err := checkpoint.CaptureFrozen(snap, pids, nil, checkpoint.CaptureOptions{Version: opts.version(), SharedNamespace: true})
	return snap, img, err
}

// checkSharing refuses lists that a restore by CRIU cannot give back: one
// shared with a process outside the tree, or by two of its processes.
func checkSharing(snap *reader.Snapshot, pids []int, inTree map[int]bool, root int) error {
	for _, pid := range pids {
		l := snap.ByPID(pid)
		if l == nil {
			continue
		}
		for _, p := range l.Processes {
			if !inTree[p.PID] {
				return fmt.Errorf("undo list of pid %d is shared with pid %d (%s), which is outside the dumped tree of pid %d: "+
					"a restore would apply its adjustments twice; dump a tree that holds both: %w", pid, p.PID, p.Comm, root, ErrShared)
			}
		}
		if len(l.Processes) > 1 {
			return fmt.Errorf("pids %d and %d share one undo list (clone with CLONE_SYSVSEM); CRIU restores them as separate processes, so semundo cannot restore that list: %w",
				l.Processes[0].PID, l.Processes[1].PID, ErrSharedInTree)
		}
	}
	return nil
}

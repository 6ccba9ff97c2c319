package criu

import (
	"encoding/json"
	"fmt"
	"path/filepath"

	"github.com/semundo/semundo/checkpoint"
	"github.com/semundo/semundo/image"
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
}

// Dump is the post-dump step: it reads the undo lists of root's tree
// (root and every descendant), which CRIU holds frozen, and writes
// TreeFile and ImageFile into dir, CRIU's images directory. It neither
// stops nor traces any process. It refuses, writing nothing, when a list
// of the tree is shared with a process outside it (ErrShared) or by two
// of its processes (ErrSharedInTree): CRIU restores neither sharing.
func Dump(r *reader.Reader, root int, dir string, opts *Options) (*DumpResult, error) {
	procs, ok := dumpedTree(opts.proc(), root, dir)
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
	img, err := captureHeld(r, pids, inTree, root, opts)
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
	// The tree file first: pre-restore takes the image as the sign that
	// both are there.
	if err := writeFileAtomic(filepath.Join(dir, TreeFile), append(b, '\n')); err != nil {
		return nil, fmt.Errorf("write %s into CRIU's images directory: %w", TreeFile, err)
	}
	if err := image.WriteFileNoSync(filepath.Join(dir, ImageFile), img); err != nil {
		return nil, err
	}
	res := &DumpResult{Tasks: len(procs), Lists: len(img.Lists), Image: img, FromPstree: ok}
	for _, l := range img.Lists {
		res.Entries += len(l.Entries)
	}
	return res, nil
}

// captureHeld scans the lists of pids (the held tree of root, inTree),
// checks that CRIU can restore them, and builds their image; the image's
// processes are all marked running (Dump marks the stopped ones).
func captureHeld(r *reader.Reader, pids []int, inTree map[int]bool, root int, opts *Options) (*image.Image, error) {
	snap, err := r.Scan()
	if err != nil {
		return nil, err
	}
	if err := checkSharing(snap, pids, inTree, root); err != nil {
		return nil, err
	}
	return checkpoint.CaptureFrozen(snap, pids, nil, checkpoint.CaptureOptions{Version: opts.version(), SharedNamespace: true})
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

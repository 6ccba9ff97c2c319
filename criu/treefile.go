package criu

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/internal/atomicfile"
)

// treeFormat is the format string of TreeFile.
const treeFormat = "semundo-criu-tree/1"

// tree is TreeFile's content: every process of the dumped tree.
type tree struct {
	Format string `json:"format"`
	// Root is the root's pid at dump, in semundo's PID namespace.
	Root  int    `json:"root"`
	Tasks []task `json:"tasks"`
}

// task is one process of the dumped tree.
type task struct {
	// PID is its pid at dump in semundo's PID namespace, as the image's
	// processes give it.
	PID int `json:"pid"`
	// VPID is its pid in the root's PID namespace: the pid CRIU gives it
	// back at restore. Equal to PID when the tree has no PID namespace.
	VPID int `json:"vpid"`
	// Stopped: CRIU found it in group-stop, and restores it stopped.
	Stopped bool `json:"stopped"`
}

// decodeTree parses and checks a TreeFile.
func decodeTree(b []byte) (*tree, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var t tree
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("%s: %v: %w", TreeFile, err, ErrCorrupt)
	}
	if dec.More() {
		return nil, fmt.Errorf("%s: data after the object: %w", TreeFile, ErrCorrupt)
	}
	if t.Format != treeFormat {
		return nil, fmt.Errorf("%s: format %q, this semundo reads %q: %w", TreeFile, t.Format, treeFormat, ErrCorrupt)
	}
	if len(t.Tasks) == 0 || t.Tasks[0].PID != t.Root {
		return nil, fmt.Errorf("%s: the first task must be the root, pid %d: %w", TreeFile, t.Root, ErrCorrupt)
	}
	pids, vpids := map[int]bool{}, map[int]bool{}
	for _, tk := range t.Tasks {
		if tk.PID <= 0 || tk.VPID <= 0 || pids[tk.PID] || vpids[tk.VPID] {
			return nil, fmt.Errorf("%s: task %+v: pids must be positive and unique: %w", TreeFile, tk, ErrCorrupt)
		}
		pids[tk.PID], vpids[tk.VPID] = true, true
	}
	return &t, nil
}

// checkAgainst checks that every process of img is a task of t.
func (t *tree) checkAgainst(img *image.Image) error {
	known := map[int]bool{}
	for _, tk := range t.Tasks {
		known[tk.PID] = true
	}
	for _, l := range img.Lists {
		for _, p := range l.Processes {
			if !known[int(p.PID)] {
				return fmt.Errorf("%s names pid %d, which %s does not: %w", ImageFile, p.PID, TreeFile, ErrCorrupt)
			}
		}
	}
	return nil
}

// writeFileAtomic writes b to path so that a reader sees the whole file
// or none, unsynced: the files live beside CRIU's images, which CRIU does
// not sync, or in the state directory (/run) for the length of one
// restore, and a crash loses the dump or the restore either way; a sync
// would only add to the time CRIU holds the tree frozen.
func writeFileAtomic(path string, b []byte) error { return atomicfile.Write(path, b, 0o600) }

package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/semundo/semundo/checkpoint"
	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/internal/pidarg"
	"github.com/semundo/semundo/writer"
)

// runCheckpoint writes an image of the processes' IPC namespace's sets and
// of their undo lists.
var checkpointCmd = &spec{
	name:   "checkpoint",
	args:   "PID...",
	about:  "save the sets of the processes' IPC namespace and their undo lists, as one\nsnapshot taken with the processes frozen, as a JSON image",
	pids:   true,
	define: defineCheckpoint,
}

func defineCheckpoint(fs *flag.FlagSet, c *cli) func([]string) error {
	tree := fs.Bool("tree", false, "also every descendant of the PIDs")
	cgroup := fs.String("cgroup", "", "the processes' cgroup v2 `DIR` (under /sys/fs/cgroup): freeze it instead of holding each thread")
	force := fs.Bool("force", false, "capture lists shared with processes outside the checkpoint, with a warning")
	sempids := fs.Bool("sempids", false, "record each semaphore's last pid (informational; a system call per semaphore)")
	out := fs.String("o", "", "write the image to `FILE` (atomically, mode 0600) instead of stdout")
	return func(pos []string) error {
		if len(pos) == 0 {
			return usagef("checkpoint needs at least one PID")
		}
		var pids []int
		for _, a := range pos {
			pid, err := parsePID(a)
			if err != nil {
				return err
			}
			pids = append(pids, pid)
		}
		r, err := openHolderReader()
		if err != nil {
			return err
		}
		defer r.Close()
		img, err := checkpoint.Capture(r, checkpoint.CaptureOptions{PIDs: pids, Tree: *tree, Cgroup: *cgroup, Force: *force, Version: version, Sempids: *sempids})
		if errors.Is(err, checkpoint.ErrSelf) {
			// Refused before anything was frozen: a bad choice of processes.
			return codeError{exitUsage, err}
		}
		if err != nil {
			return err
		}
		for _, w := range img.Warnings {
			fmt.Fprintf(c.stderr, "semundo checkpoint: warning: %s\n", w)
		}
		if *out == "" {
			return image.Encode(c.stdout, img)
		}
		return image.WriteFile(*out, img)
	}
}

// pidMap is the repeatable --pid OLD=NEW flag.
type pidMap map[int]int

func (m pidMap) String() string { return fmt.Sprint(map[int]int(m)) }

func (m pidMap) Set(s string) error {
	a, b, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("--pid wants OLD=NEW, two pids, got %q", s)
	}
	oldPID, err := pidarg.Parse(a)
	if err != nil {
		return fmt.Errorf("--pid OLD=NEW: OLD %w", err)
	}
	newPID, err := pidarg.Parse(b)
	if err != nil {
		return fmt.Errorf("--pid OLD=NEW: NEW %w", err)
	}
	if _, dup := m[oldPID]; dup {
		return fmt.Errorf("--pid maps %d twice", oldPID)
	}
	m[oldPID] = newPID
	return nil
}

// runRestore recreates the sets of an image in semundo's IPC namespace
// and/or writes its lists into live processes.
var restoreCmd = &spec{
	name:   "restore",
	args:   "FILE|-",
	about:  "recreate the image's sets with their ids in this IPC namespace (--sets), then\nwrite the lists into the live processes (--undo); with neither flag, both",
	define: defineRestore,
}

func defineRestore(fs *flag.FlagSet, c *cli) func([]string) error {
	sets := fs.Bool("sets", false, "recreate the sets (same ids, keys, owners, modes, values)")
	lists := fs.Bool("undo", false, "write the undo lists into the live processes")
	pm := pidMap{}
	fs.Var(pm, "pid", "`OLD=NEW`: the image's process OLD is the live process NEW now (repeatable)")
	return func(pos []string) error {
		if len(pos) != 1 {
			return usagef("restore takes one image FILE")
		}
		if !*sets && !*lists {
			*sets, *lists = true, true
		}
		var img *image.Image
		var err error
		if pos[0] == "-" {
			// A restorer may pipe the image (checkpoint writes to stdout).
			if img, err = image.Decode(os.Stdin); err != nil {
				return fmt.Errorf("image on stdin: %w", err)
			}
		} else if img, err = image.ReadFile(pos[0]); err != nil {
			return err
		}
		if *lists {
			if err := checkpoint.CheckUndoTargets(img, pm); err != nil {
				return err
			}
		}
		if *sets {
			if err := checkpoint.RestoreSets(img); err != nil {
				return err
			}
		}
		if *lists {
			r, err := openHolderReader()
			if err != nil {
				return err
			}
			defer r.Close()
			if err := checkpoint.RestoreUndo(r, img, checkpoint.UndoOptions{PIDMap: pm, Writer: &writer.Options{Injector: childInjector}}); err != nil {
				if *sets {
					return fmt.Errorf("%w (the sets were restored; rerun with --undo only)", err)
				}
				return err
			}
		}
		return nil
	}
}

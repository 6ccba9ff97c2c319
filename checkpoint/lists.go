package checkpoint

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/reader"
	"golang.org/x/sys/unix"
)

// CaptureFrozen builds the image of processes that something else already
// holds still, such as CRIU at its post-dump action script (its tasks are
// frozen and ptrace-seized, so semundo must neither stop nor trace them):
// Capture without the freeze. snap is a scan taken while they were held;
// the sets of their IPC namespace are read now, after it, as Capture does
// (an entry whose set went in between is left out with a warning). stopped
// names the processes that were in group-stop before they were frozen; it
// is recorded in the image. Only opts.Force, Version, Sempids and
// SharedNamespace are used: pids is taken as the whole list of processes,
// with no tree walk.
func CaptureFrozen(snap *reader.Snapshot, pids []int, stopped map[int]bool, opts CaptureOptions) (*image.Image, error) {
	if len(pids) == 0 {
		return nil, errors.New("no process to checkpoint")
	}
	if snap == nil {
		return nil, errors.New("no scan of the undo lists given")
	}
	pids = slices.Clone(pids)
	slices.Sort(pids)
	pids = slices.Compact(pids)
	var ns uint64
	var err error
	if opts.SharedNamespace {
		ns, err = listsNamespace(snap, pids)
	} else {
		ns, err = oneNamespace(pids)
	}
	if err != nil {
		return nil, err
	}
	return build(snap, pids, ns, stopped, opts)
}

// listsNamespace returns the IPC namespace of pids[0], after checking
// that every list of pids is in it: the processes share it, as the caller
// knows, and only the lists' namespaces matter to the image.
func listsNamespace(snap *reader.Snapshot, pids []int) (uint64, error) {
	ns, err := nsInode(pids[0])
	if err != nil {
		return 0, err
	}
	for _, pid := range pids {
		if l := snap.ByPID(pid); l != nil && uint64(l.IPCNS) != ns {
			return 0, fmt.Errorf("the undo list of pid %d is in IPC namespace %d, pid %d in %d: checkpoint one namespace at a time: %w",
				pid, l.IPCNS, pids[0], ns, ErrNamespaces)
		}
	}
	return ns, nil
}

// build makes the image from a scan of the lists taken while the processes
// were held: header, then the sets of namespace ns (read now, after the
// scan), then the lists.
func build(snap *reader.Snapshot, pids []int, ns uint64, stopped map[int]bool, opts CaptureOptions) (*image.Image, error) {
	img := &image.Image{
		Created:        time.Now().UTC(),
		SemundoVersion: opts.Version,
		IPCNamespace:   ns,
	}
	if img.SemundoVersion == "" {
		img.SemundoVersion = "unknown"
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err == nil {
		img.KernelRelease = unix.ByteSliceToString(uts.Release[:])
		img.Hostname = unix.ByteSliceToString(uts.Nodename[:])
	}
	// Lists first, then sets: a set removed in between (by a process
	// outside the checkpoint) took its entries with it, and they are
	// dropped with a warning; the other order could capture an entry whose
	// set is gone.
	if err := inNamespace(pids[0], ns, func() error { return captureSets(img, opts.Sempids) }); err != nil {
		return nil, err
	}
	if err := captureLists(img, snap, pids, stopped, opts.Force); err != nil {
		return nil, err
	}
	// Encode and WriteFile validate the image before writing a byte.
	img.Sort()
	return img, nil
}

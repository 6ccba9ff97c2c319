package checkpoint

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"

	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/reader"
	"github.com/semundo/semundo/sysvsem"
	"github.com/semundo/semundo/writer"
	"golang.org/x/sys/unix"
)

// nextIDFile makes the next semget of the caller's IPC namespace take a
// chosen id (CONFIG_CHECKPOINT_RESTORE).
const nextIDFile = "/proc/sys/kernel/sem_next_id"

// RestoreSets recreates every set of img in the caller's IPC namespace with
// its id, key, owner, group, permission bits and values. Before creating
// anything it checks that no id and no key is taken; if a step fails it
// removes the sets it created. The creator (cuid, cgid) becomes the
// caller, and otime, ctime and sempids start afresh: the kernel offers no
// way to set them.
func RestoreSets(img *image.Image) (err error) {
	if _, err := os.Stat(nextIDFile); err != nil {
		return fmt.Errorf("%s is missing: this kernel was built without CONFIG_CHECKPOINT_RESTORE, so sets cannot get their old ids: %w", nextIDFile, ErrNotSupported)
	}
	existing, err := sysvsem.Enumerate()
	if err != nil {
		return err
	}
	// sem_next_id asks for the id's index (slot), which this kernel takes
	// from the id's low bits whatever the checkpointed kernel did.
	shift := sysvsem.DefaultIndexShift
	if fs, err := sysvsem.NewDefaultFS(); err == nil {
		if s, err := fs.IndexShift(); err == nil {
			shift = s
		}
	}
	for _, e := range existing {
		for _, s := range img.Sets {
			if int(s.ID)&(1<<shift-1) == e.Index || int(s.ID) == e.ID {
				return fmt.Errorf("set %d of the image needs index %d, which set %d holds in this namespace (restore into a new one: unshare --ipc): %w", s.ID, e.Index, e.ID, ErrTaken)
			}
			if s.Key != 0 && s.Key == e.Stat.Perm.Key {
				return fmt.Errorf("set %d of the image has key %#x, which set %d holds in this namespace: %w", s.ID, uint32(s.Key), e.ID, ErrTaken)
			}
		}
	}
	var created []int
	defer func() {
		if err != nil {
			for _, id := range created {
				sysvsem.Remove(id)
			}
		}
	}()
	sets := slices.Clone(img.Sets)
	slices.SortFunc(sets, func(a, b image.Set) int { return int(a.ID) - int(b.ID) })
	for _, s := range sets {
		if err := os.WriteFile(nextIDFile, []byte(strconv.Itoa(int(s.ID))), 0); err != nil {
			if errors.Is(err, os.ErrPermission) {
				return fmt.Errorf("write %s: restoring set ids needs root (CAP_CHECKPOINT_RESTORE or CAP_SYS_ADMIN in the namespace's user namespace): %w", nextIDFile, err)
			}
			return fmt.Errorf("write %s: %w", nextIDFile, err)
		}
		key := int(uint32(s.Key))
		id, err := sysvsem.Get(key, s.Nsems, unix.IPC_CREAT|unix.IPC_EXCL|int(s.Mode&0o777))
		if err != nil {
			// Leave sem_next_id as it was: unset.
			os.WriteFile(nextIDFile, []byte("-1"), 0)
			return fmt.Errorf("create set %d (%d semaphores): %w", s.ID, s.Nsems, err)
		}
		created = append(created, id)
		// The kernel hands out the next free index, silently, when the
		// wanted one is taken (pitfalls.md): check.
		if id != int(s.ID) {
			return fmt.Errorf("asked the kernel for set id %d and got %d (another process created a set meanwhile?): %w", s.ID, id, ErrTaken)
		}
		if err := sysvsem.Set(id, s.UID, s.GID, s.Mode&0o777); err != nil {
			return fmt.Errorf("set owner of set %d: %w", id, err)
		}
		if err := sysvsem.SetAll(id, s.Values); err != nil {
			return fmt.Errorf("set values of set %d: %w", id, err)
		}
	}
	return nil
}

// RestoreUndo writes each list of img into the live process that replaces
// the checkpointed one: pidMap maps an old pid to its new one (a pid not in
// the map is taken as unchanged). A list shared by several processes is
// written once, and only when their new processes share a list again. The
// sets must exist with their values already (RestoreSets): SETALL would
// zero the adjustments written here.
// opts pass through to writer.SetMany (nil: inject from this process).
func RestoreUndo(r *reader.Reader, img *image.Image, pidMap map[int]int, opts *writer.Options) error {
	known := map[int]bool{}
	for _, l := range img.Lists {
		for _, p := range l.Processes {
			known[int(p.PID)] = true
		}
	}
	for old := range pidMap {
		if !known[old] {
			return fmt.Errorf("--pid %d=%d: pid %d holds no list in the image", old, pidMap[old], old)
		}
	}
	newPID := func(old int32) int {
		if n, ok := pidMap[int(old)]; ok {
			return n
		}
		return int(old)
	}
	snap, err := r.Scan()
	if err != nil {
		return err
	}
	var writes []writer.Write
	for _, l := range img.Lists {
		if len(l.Entries) == 0 {
			continue
		}
		first := newPID(l.Processes[0].PID)
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", first)); err != nil {
			return fmt.Errorf("pid %d (pid %d at checkpoint) does not exist: start it first, or map it with --pid OLD=NEW: %w", first, l.Processes[0].PID, ErrNoProcess)
		}
		for _, p := range l.Processes[1:] {
			n := newPID(p.PID)
			a, b := snap.ByPID(first), snap.ByPID(n)
			if a == nil || a != b {
				return fmt.Errorf("pids %d and %d shared an undo list at checkpoint (as %d and %d) but do not share one now: writing both would apply the adjustments twice", first, n, l.Processes[0].PID, p.PID)
			}
		}
		writes = append(writes, writer.Write{PID: first, List: (&l).Undo()})
	}
	return writer.SetMany(r, writes, opts)
}

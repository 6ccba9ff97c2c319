package checkpoint

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"

	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/inject"
	"github.com/semundo/semundo/internal/procfs"
	"github.com/semundo/semundo/reader"
	"github.com/semundo/semundo/sysvsem"
	"github.com/semundo/semundo/writer"
	"golang.org/x/sys/unix"
)

// ErrOtherSet: a set the image's lists name exists where they are
// restored, but with another key or size than the image's: it is another
// set that took the id.
var ErrOtherSet = errors.New("the set with this id is another set")

// semaphores counts semaphores in words: "1 semaphore", "2 semaphores".
func semaphores(n int) string {
	if n == 1 {
		return "1 semaphore"
	}
	return strconv.Itoa(n) + " semaphores"
}

// nextIDFile makes the next semget of the caller's IPC namespace take a
// chosen id (CONFIG_CHECKPOINT_RESTORE).
const nextIDFile = "/proc/sys/kernel/sem_next_id"

// RestoreSets recreates every set of img in the caller's IPC namespace with
// its id, key, owner, group, permission bits and values. Before creating
// anything it checks that no id and no key is taken and that the limits
// let the sets be created (see fitLimits); if a step fails it removes the
// sets it created and puts the limits back. The creator (cuid, cgid) becomes the
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
	final, err := fitLimits(img, existing)
	if err != nil {
		return err
	}
	var created []int
	defer func() {
		if err != nil {
			for _, id := range created {
				sysvsem.Remove(id)
			}
			if final != nil {
				final.undo()
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
			return fmt.Errorf("create set %d (%s): %w", s.ID, semaphores(s.Nsems), err)
		}
		created = append(created, id)
		// The kernel hands out the next free index, silently, when the
		// wanted one is taken (pitfalls.md): check.
		if id != int(s.ID) {
			return fmt.Errorf("asked the kernel for set id %d and got %d (another process created a set meanwhile?): %w", s.ID, id, ErrTaken)
		}
		if err := sysvsem.SetPerm(id, s.UID, s.GID, s.Mode&0o777); err != nil {
			return fmt.Errorf("set owner of set %d: %w", id, err)
		}
		if err := sysvsem.SetAll(id, s.Values); err != nil {
			return fmt.Errorf("set values of set %d: %w", id, err)
		}
	}
	if final != nil {
		return final.apply()
	}
	return nil
}

// limitsChange restores a namespace's limits (/proc/sys/kernel/sem) around
// the creation of the sets.
type limitsChange struct {
	fs                    sysvsem.FS
	before, during, after sysvsem.Limits
}

func (c *limitsChange) apply() error {
	if c.after == c.during {
		return nil
	}
	return c.write(c.after)
}

func (c *limitsChange) undo() {
	if c.during != c.before {
		c.fs.SetLimits(c.before)
	}
}

func (c *limitsChange) write(l sysvsem.Limits) error {
	if err := c.fs.SetLimits(l); err != nil {
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("restoring the namespace's limits (kernel.sem) needs root (CAP_SYS_ADMIN in the namespace's user namespace): %w", err)
		}
		return err
	}
	return nil
}

// fitLimits makes the namespace's limits let the image's sets be created.
// A namespace without sets (a fresh one, the documented way to restore)
// gets the image's limits, raised while the sets are created when the
// image's own are below what its sets use (an administrator may lower
// them after creating sets); the returned change puts the image's limits
// in place at the end, or the old ones back on failure. A namespace that
// has sets keeps its limits: they are its administrator's, so sets that
// do not fit are refused, naming the limit.
func fitLimits(img *image.Image, existing []sysvsem.Entry) (*limitsChange, error) {
	fs, err := sysvsem.NewDefaultFS()
	if err != nil {
		return nil, err
	}
	cur, err := fs.Limits()
	if err != nil {
		return nil, err
	}
	maxNsems, total := 0, 0
	for _, s := range img.Sets {
		maxNsems = max(maxNsems, s.Nsems)
		total += s.Nsems
	}
	if len(existing) > 0 {
		used := 0
		for _, e := range existing {
			used += e.Stat.Nsems
		}
		switch {
		case maxNsems > cur.Semmsl:
			return nil, fmt.Errorf("this namespace allows %d semaphores per set (SEMMSL), the image has a set of %d: raise kernel.sem or restore into a fresh namespace (unshare --ipc)", cur.Semmsl, maxNsems)
		case used+total > cur.Semmns:
			return nil, fmt.Errorf("this namespace allows %d semaphores in all (SEMMNS), %d are in use and the image adds %d: raise kernel.sem or restore into a fresh namespace (unshare --ipc)", cur.Semmns, used, total)
		case len(existing)+len(img.Sets) > cur.Semmni:
			return nil, fmt.Errorf("this namespace allows %d sets (SEMMNI), %d exist and the image adds %d: raise kernel.sem or restore into a fresh namespace (unshare --ipc)", cur.Semmni, len(existing), len(img.Sets))
		}
		return nil, nil
	}
	l := img.Limits
	after := sysvsem.Limits{Semmsl: int(l.Semmsl), Semmns: int(l.Semmns), Semopm: int(l.Semopm), Semmni: int(l.Semmni)}
	during := after
	during.Semmsl = max(during.Semmsl, maxNsems)
	during.Semmns = max(during.Semmns, total)
	during.Semmni = max(during.Semmni, len(img.Sets))
	c := &limitsChange{fs: fs, before: cur, during: during, after: after}
	if during != cur {
		if err := c.write(during); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// UndoOptions say where RestoreUndo writes.
type UndoOptions struct {
	// PIDMap maps a checkpointed pid to the pid of the live process that
	// replaces it; a pid not in the map is taken as unchanged.
	PIDMap map[int]int
	// AnyNamespace lets the processes be in an IPC namespace other than
	// the caller's (CRIU restores a container's tasks into their own).
	// By default they must be in the caller's, where RestoreSets puts the
	// sets: a list written into a process elsewhere would act on another
	// namespace's sets.
	AnyNamespace bool
	// Writer passes through to writer.WriteProcesses (nil: inject from
	// this process).
	Writer *writer.Options
}

// RestoreUndo writes each list of img into the live process that replaces
// the checkpointed one (opts.PIDMap). A list shared by several processes is
// written once, and only when their new processes share a list again. The
// sets must exist with their values already (RestoreSets): SETALL would
// zero the adjustments written here.
//
// Before anything is written it checks that the processes are all in one
// IPC namespace (the caller's, unless opts.AnyNamespace), that every set
// the lists name exists there with the image's key and size (an id alone
// may name another set), and that a process not mapped by opts.PIDMap
// still runs the command it ran at checkpoint (its pid may have been
// reused).
func RestoreUndo(r *reader.Reader, img *image.Image, opts UndoOptions) error {
	return restoreUndo(r, img, opts.PIDMap, opts.Writer, !opts.AnyNamespace)
}

func restoreUndo(r *reader.Reader, img *image.Image, pidMap map[int]int, opts *writer.Options, here bool) error {
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
		for _, p := range l.Processes {
			if _, mapped := pidMap[int(p.PID)]; mapped {
				continue
			}
			if comm, ok := runs(int(p.PID), p.Comm); !ok {
				return fmt.Errorf("pid %d runs %q, but it ran %q at checkpoint: its pid was reused; map the restored process with --pid %d=NEW", p.PID, comm, p.Comm, p.PID)
			}
		}
		writes = append(writes, writer.Write{PID: first, List: (&l).Undo()})
	}
	if len(writes) == 0 {
		return nil
	}
	if err := checkTargets(img, writes, here); err != nil {
		return err
	}
	return writer.WriteProcesses(r, writes, opts)
}

// CheckUndoTargets checks, before anything changes, that no process the
// lists of img would be written into (through pidMap, as RestoreUndo maps
// them) is one writer.CheckTarget refuses: the caller itself, a process
// sharing its list, a traced one. A restore that also recreates sets calls
// it first, so that such a refusal leaves the namespace as it was. A pid
// that does not exist passes: RestoreUndo names it better.
func CheckUndoTargets(img *image.Image, pidMap map[int]int) error {
	for _, l := range img.Lists {
		if len(l.Entries) == 0 {
			continue
		}
		for _, p := range l.Processes {
			pid := int(p.PID)
			if n, ok := pidMap[pid]; ok {
				pid = n
			}
			if err := writer.CheckTarget(pid); err != nil && !errors.Is(err, inject.ErrNoProcess) {
				return err
			}
		}
	}
	return nil
}

// runs reports whether process pid, if it exists, still runs the command
// comm: its main thread's name, or (as the reader records it when the main
// thread has exited, or when threads name themselves) one of its threads'.
// It returns the main thread's name.
func runs(pid int, comm string) (string, bool) {
	p := procfs.NewDefaultFS()
	st, err := p.Stat(pid)
	if err != nil || st.Comm == comm {
		return st.Comm, true // gone: the write reports it
	}
	threads, _ := p.Threads(pid)
	for _, th := range threads {
		if th.Stat.Comm == comm {
			return st.Comm, true
		}
	}
	return st.Comm, false
}

// checkTargets checks that the processes to write are in one IPC
// namespace (the caller's, with here) and that the sets their lists name
// are the image's there: same key, same size.
func checkTargets(img *image.Image, writes []writer.Write, here bool) error {
	pids := make([]int, len(writes))
	for i, w := range writes {
		pids[i] = w.PID
	}
	inos, err := nsInodes(pids)
	if err != nil {
		return err
	}
	ns := inos[0]
	for i, w := range writes[1:] {
		if other := inos[i+1]; other != ns {
			return fmt.Errorf("pids %d and %d are in different IPC namespaces (%d, %d): an image holds one namespace's lists: %w", writes[0].PID, w.PID, ns, other, ErrNamespaces)
		}
	}
	if here {
		own, err := nsInode(os.Getpid())
		if err != nil {
			return err
		}
		if own != ns {
			return fmt.Errorf("pid %d is in IPC namespace %d, not in this one (%d), where the sets are restored: start the restored processes here and map them with --pid OLD=NEW: %w", writes[0].PID, ns, own, ErrNamespaces)
		}
	}
	byID := map[int32]*image.Set{}
	for i := range img.Sets {
		byID[img.Sets[i].ID] = &img.Sets[i]
	}
	return inNamespace(writes[0].PID, ns, func() error {
		checked := map[int32]bool{}
		for _, w := range writes {
			for _, e := range w.List {
				if checked[e.Semid] {
					continue
				}
				checked[e.Semid] = true
				want := byID[e.Semid]
				ds, err := sysvsem.Stat(int(e.Semid))
				if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIDRM) {
					return fmt.Errorf("set %d does not exist in the IPC namespace of pid %d: restore the sets first (restore --sets): %w", e.Semid, w.PID, writer.ErrNoSet)
				}
				if err != nil {
					return fmt.Errorf("set %d in the IPC namespace of pid %d: %w", e.Semid, w.PID, err)
				}
				if want != nil && (ds.Perm.Key != want.Key || ds.Nsems != want.Nsems) {
					return fmt.Errorf("set %d in the IPC namespace of pid %d has key %#x and %s, the image's had key %#x and %s; restore the sets (restore --sets) into a fresh namespace: %w",
						e.Semid, w.PID, uint32(ds.Perm.Key), semaphores(ds.Nsems), uint32(want.Key), semaphores(want.Nsems), ErrOtherSet)
				}
			}
		}
		return nil
	})
}

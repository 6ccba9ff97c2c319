package criu

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/semundo/semundo/checkpoint"
	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/internal/criuaction"
	"github.com/semundo/semundo/internal/procfs"
	"github.com/semundo/semundo/undo"
	"github.com/semundo/semundo/writer"
	"golang.org/x/sys/unix"
)

// handoffDir names the directory through which pre-restore hands the files
// to post-resume of the same restore (criuaction.HandoffDir).
func handoffDir(env Env) (string, error) { return criuaction.HandoffDir(env) }

// removeStale removes the handoff directories of CRIU processes that no
// longer run (a restore that failed before post-resume).
func removeStale(state string) {
	ents, err := os.ReadDir(state)
	if err != nil {
		return
	}
	for _, e := range ents {
		var pid int
		var start uint64
		if _, err := fmt.Sscanf(e.Name(), "criu-%d-%d", &pid, &start); err != nil {
			continue
		}
		if st, err := procfs.NewDefaultFS().Stat(pid); err != nil || st.StartTime != start {
			os.RemoveAll(filepath.Join(state, e.Name()))
		}
	}
}

// PrepareRestore is the pre-restore step: when CRIU's images directory dir
// holds ImageFile, it checks it and TreeFile and copies both into the
// directory handoff (created, mode 0700), where Resume finds them; CRIU
// closes dir before post-resume. It reports whether there was an image: a
// dump taken without the companion has none, and is no error.
func PrepareRestore(dir, handoff string) (bool, error) {
	removeStale(filepath.Dir(handoff))
	if err := os.RemoveAll(handoff); err != nil {
		return false, err
	}
	imgData, err := os.ReadFile(filepath.Join(dir, ImageFile))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read %s in CRIU's images directory: %w", ImageFile, err)
	}
	img, err := image.Decode(bytes.NewReader(imgData))
	if err != nil {
		return false, fmt.Errorf("%s in CRIU's images directory: %w", ImageFile, err)
	}
	treeData, err := os.ReadFile(filepath.Join(dir, TreeFile))
	if err != nil {
		return false, fmt.Errorf("%s is there but %s is not (%v): %w", ImageFile, TreeFile, err, ErrCorrupt)
	}
	t, err := decodeTree(treeData)
	if err != nil {
		return false, err
	}
	if err := t.checkAgainst(img); err != nil {
		return false, err
	}
	if err := os.MkdirAll(filepath.Dir(handoff), 0o700); err != nil {
		return false, fmt.Errorf("create semundo's state directory: %w", err)
	}
	if err := os.Mkdir(handoff, 0o700); err != nil {
		return false, fmt.Errorf("create semundo's state directory: %w", err)
	}
	for name, data := range map[string][]byte{ImageFile: imgData, TreeFile: treeData} {
		if err := writeFileAtomic(filepath.Join(handoff, name), data); err != nil {
			os.RemoveAll(handoff)
			return false, fmt.Errorf("hand %s over to post-resume: %w", name, err)
		}
	}
	// Optional: without it (an images directory without pstree.img, one
	// whose tree is not the tree file's), post-resume walks the tree.
	if es, err := readPstree(dir); err == nil && sameTree(es, t) {
		var b bytes.Buffer
		for _, e := range es {
			fmt.Fprintf(&b, "%d %d\n", e.pid, e.ppid)
		}
		if err := writeFileAtomic(filepath.Join(handoff, parentsFile), b.Bytes()); err != nil {
			os.Remove(filepath.Join(handoff, parentsFile))
		}
	}
	return true, nil
}

// parentsFile, in the handoff directory, names each dumped process's
// parent, a line "PID PPID" each, pids of the root's PID namespace, from
// CRIU's pstree.img: post-resume cannot read that, because CRIU closes
// the images directory before it.
const parentsFile = "parents"

// sameTree reports whether CRIU's pstree lists the processes of t, the
// root first.
func sameTree(es []pstreeEntry, t *tree) bool {
	if len(es) == 0 || len(es) != len(t.Tasks) || es[0].pid != t.Tasks[0].VPID {
		return false
	}
	in := map[int]bool{}
	for _, tk := range t.Tasks {
		in[tk.VPID] = true
	}
	for _, e := range es {
		if !in[e.pid] {
			return false
		}
	}
	return true
}

// restoredInPlace returns each dumped process's pid now and the parent
// each must have now, from the parents file pre-restore wrote (b, nil
// when there is none): CRIU restores pids in the root's PID namespace,
// which are pids here too when the root shares semundo's namespace, or
// translated by the kernel (pidTranslator). ok is false when that does
// not apply (no parents file, one that does not match the tree, a PID
// namespace of the tree's own on a kernel before 6.11): the caller walks
// the restored tree then. The parents are checked against each task's
// stat in waitStops, so a pid that is not the restored process is never
// written into; reading them from the tree's children files and status
// files had been 4 of post-resume's 30 ms for 100 processes
// (BenchmarkTree100).
func restoredInPlace(p procfs.FS, root int, b []byte, t *tree) (newPID, parentOf map[int]int, ok bool) {
	if b == nil {
		return nil, nil, false
	}
	var es []pstreeEntry
	for line := range strings.SplitSeq(strings.TrimSuffix(string(b), "\n"), "\n") {
		var e pstreeEntry
		if _, err := fmt.Sscanf(line, "%d %d", &e.pid, &e.ppid); err != nil {
			return nil, nil, false
		}
		es = append(es, e)
	}
	if !sameTree(es, t) {
		return nil, nil, false
	}
	tr, ok := pidTranslator(p, root, t.Tasks[0].VPID)
	if !ok {
		return nil, nil, false
	}
	defer tr.close()
	now := map[int]int{} // vpid -> pid now
	for _, e := range es {
		pid, err := tr.pid(e.pid)
		if err != nil {
			return nil, nil, false
		}
		now[e.pid] = pid
	}
	newPID, parentOf = map[int]int{}, map[int]int{}
	for _, tk := range t.Tasks {
		newPID[tk.PID] = now[tk.VPID]
	}
	for _, e := range es[1:] {
		parentOf[now[e.pid]] = now[e.ppid]
	}
	return newPID, parentOf, true
}

// handedOver is what pre-restore left in the handoff directory, read.
type handedOver struct {
	dir     string
	img     *image.Image
	tree    *tree
	parents []byte // the parents file; nil when there is none
}

// readHandoff reads the files pre-restore left in dir.
func readHandoff(dir string) (*handedOver, error) {
	img, err := image.ReadFile(filepath.Join(dir, ImageFile))
	if err != nil {
		return nil, err
	}
	treeData, err := os.ReadFile(filepath.Join(dir, TreeFile))
	if err != nil {
		return nil, fmt.Errorf("%s: %v: %w", TreeFile, err, ErrCorrupt)
	}
	t, err := decodeTree(treeData)
	if err != nil {
		return nil, err
	}
	h := &handedOver{dir: dir, img: img, tree: t}
	if b, err := os.ReadFile(filepath.Join(dir, parentsFile)); err == nil {
		h.parents = b
	}
	return h, nil
}

// ResumeResult says what Resume did.
type ResumeResult struct {
	// Tasks is the number of processes of the restored tree.
	Tasks int
	// Lists is the number of lists written (those with entries).
	Lists int
	// Continued is the number of tasks sent SIGCONT.
	Continued int
	// Added: the tasks already ran and the saved adjustments were added to
	// theirs (Options.AllowRunning).
	Added bool
	// FromPstree: the restored tasks were found by their pids and parents
	// from CRIU's pstree.img, not by a walk of /proc (see
	// restoredInPlace).
	FromPstree bool
}

// stopWait bounds the wait for restored tasks to finish stopping: CRIU
// sends SIGSTOP just before it detaches, and it takes effect when each
// thread next runs.
const stopWait = 5 * time.Second

// Resume is the post-resume step: it reads the files PrepareRestore left
// in handoff (and removes them), finds each dumped task in the restored
// tree of root by its pid in the root's PID namespace, writes each saved
// list into its task (ptrace injection into a task in group-stop, which
// stays stopped), then sends SIGCONT to the tasks that were running at
// dump.
//
// When the tasks already run (a restore without --leave-stopped) it
// refuses with ErrNotStopped, unless opts.AllowRunning: then it adds the
// saved adjustments to whatever the tasks have built since. When a write
// fails, the tasks are left stopped and the error says how to continue
// them.
func Resume(root int, handoff string, opts *Options) (*ResumeResult, error) {
	defer os.RemoveAll(handoff)
	h := opts.handedOver(handoff)
	var err error
	if h == nil {
		if h, err = readHandoff(handoff); err != nil {
			return nil, err
		}
	}
	img, t := h.img, h.tree
	// pid at dump -> pid now; and, when taken from CRIU's pstree, the
	// parent each must have now.
	newPID, parentOf, inPlace := restoredInPlace(opts.proc(), root, h.parents, t)
	if !inPlace {
		if newPID, err = restoredTree(opts.proc(), root, t); err != nil {
			return nil, err
		}
	}

	// After a failure the tasks CRIU left stopped stay so: say how to
	// run them (without their lists) instead. states is what they were
	// before any write: a task that was written into may still be on its
	// way back to group-stop, which /proc shows as running.
	var states map[int]runState
	fail := func(err error) error {
		if pids := leftStopped(opts.proc(), t, newPID, states); pids != "" {
			return fmt.Errorf("%w; the restored tasks are left stopped: kill -CONT %s to run them without their undo lists", err, pids)
		}
		return err
	}
	states, err = waitStops(opts.proc(), t, newPID, parentOf)
	if err != nil {
		states = nil
		return nil, fail(err)
	}
	res := &ResumeResult{Tasks: len(t.Tasks), FromPstree: inPlace}
	var lists []image.List
	for _, l := range img.Lists {
		if len(l.Entries) > 0 {
			lists = append(lists, l)
		}
	}
	var running []int
	for _, tk := range t.Tasks {
		if states[tk.PID] == stateRunning {
			running = append(running, newPID[tk.PID])
		}
	}
	for _, l := range lists {
		p := newPID[int(l.Processes[0].PID)]
		if states[int(l.Processes[0].PID)] == stateGone {
			return nil, fail(fmt.Errorf("pid %d (pid %d at dump) exited before semundo could write its undo list", p, l.Processes[0].PID))
		}
	}

	if len(lists) > 0 {
		if len(running) > 0 {
			if !opts.allowRunning() {
				return nil, fmt.Errorf("pid %d of the restored tree already runs, so its undo lists were not restored: "+
					"restore with --leave-stopped (the command line, or leave-stopped in CRIU's configuration file), "+
					"or set %s=1 to add the saved adjustments to the running tasks: %w", running[0], EnvAllowRunning, ErrNotStopped)
			}
			res.Added = true
			if err := addLists(opts, lists, newPID); err != nil {
				return nil, err
			}
		} else {
			pidMap := map[int]int{}
			for _, l := range lists {
				for _, p := range l.Processes {
					pidMap[int(p.PID)] = newPID[int(p.PID)]
				}
			}
			r, err := opts.open()
			if err != nil {
				return nil, fail(err)
			}
			// Every target stays stopped until the last write: the
			// wall time counts, not each target's stop, so one session
			// per CPU (BenchmarkTree100: helper's job 51-57 ms against
			// 58-68 ms one at a time, 2 CPUs).
			wopts := &writer.Options{Injector: opts.injector(), Parallel: runtime.GOMAXPROCS(0)}
			err = checkpoint.RestoreUndo(r, img, checkpoint.UndoOptions{PIDMap: pidMap, AnyNamespace: true, Writer: wopts})
			opts.closeReader(r)
			if err != nil {
				return nil, fail(err)
			}
		}
		res.Lists = len(lists)
	}

	var errs []error
	for _, tk := range t.Tasks {
		if tk.Stopped || states[tk.PID] != stateStopped {
			continue
		}
		if err := unix.Kill(newPID[tk.PID], unix.SIGCONT); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("continue pid %d: %w", newPID[tk.PID], err))
			continue
		}
		res.Continued++
	}
	return res, errors.Join(errs...)
}

// restoredTree finds each task of t in the restored tree of root by its
// pid in the root's PID namespace, and returns its pid now by its pid at
// dump.
func restoredTree(p procfs.FS, root int, t *tree) (map[int]int, error) {
	procs, err := walkHeld(p, root)
	if err != nil {
		return nil, err
	}
	byVPID := map[int]int{}
	for _, p := range procs {
		byVPID[p.vpid] = p.pid
	}
	if byVPID[t.Tasks[0].VPID] != root {
		return nil, fmt.Errorf("the restored root, pid %d, is pid %d in its PID namespace, the dumped root was %d: is %s the root restored from these images? %w",
			root, procs[0].vpid, t.Tasks[0].VPID, EnvInitPID, ErrNoTask)
	}
	newPID := map[int]int{}
	for _, tk := range t.Tasks {
		p, ok := byVPID[tk.VPID]
		if !ok {
			return nil, fmt.Errorf("pid %d of the dump (%d in its PID namespace) is not in the restored tree of pid %d: %w; "+
				"the restored tasks are left as CRIU left them", tk.PID, tk.VPID, root, ErrNoTask)
		}
		newPID[tk.PID] = p
	}
	return newPID, nil
}

// waitStops waits until no task of t is half way to group-stop and returns
// each one's state, by its pid at dump. A task that looks running is looked
// at once more a moment later: a thread the group-stop has not reached yet
// shows neither a pending SIGSTOP nor a stopped state. parentOf, when not
// nil, is the parent each task (by its pid now) must have: a task with
// another is not the restored process, and waitStops fails.
func waitStops(p procfs.FS, t *tree, newPID, parentOf map[int]int) (map[int]runState, error) {
	deadline := time.Now().Add(stopWait)
	rechecked := false
	type seen struct {
		st   runState
		ppid int
	}
	for {
		states := map[int]runState{}
		pending, running := 0, false
		sts, err := mapParallel(len(t.Tasks), func(i int) (seen, error) {
			st, ppid, err := processStateParent(p, newPID[t.Tasks[i].PID])
			return seen{st, ppid}, err
		})
		if err != nil {
			return nil, err
		}
		for i, tk := range t.Tasks {
			st := sts[i].st
			pid := newPID[tk.PID]
			if want, ok := parentOf[pid]; ok && st != stateGone && sts[i].ppid != want {
				return nil, fmt.Errorf("pid %d is not the process restored from pid %d of the dump: its parent is pid %d, not %d: %w",
					pid, tk.PID, sts[i].ppid, want, ErrNoTask)
			}
			states[tk.PID] = st
			switch st {
			case stateStopping:
				pending = newPID[tk.PID]
			case stateRunning:
				running = true
			}
		}
		if pending == 0 && (!running || rechecked) {
			return states, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("pid %d did not finish stopping within %v of the restore", pending, stopWait)
		}
		if pending == 0 {
			rechecked = true
			time.Sleep(recheckDelay)
			continue
		}
		time.Sleep(time.Millisecond)
	}
}

// recheckDelay is how long waitStops gives a task that looks running to
// show that it is stopping after all.
const recheckDelay = 20 * time.Millisecond

// leftStopped lists the restored tasks that are stopped but were running
// at dump: what Resume would have continued. states gives their states, or
// is nil to read them now.
func leftStopped(p procfs.FS, t *tree, newPID map[int]int, states map[int]runState) string {
	var s []string
	for _, tk := range t.Tasks {
		if tk.Stopped {
			continue
		}
		st, ok := states[tk.PID]
		if !ok {
			st, _ = processState(p, newPID[tk.PID])
		}
		if st == stateStopped {
			s = append(s, strconv.Itoa(newPID[tk.PID]))
		}
	}
	return strings.Join(s, " ")
}

// addLists adds each saved list to the current list of its task, which
// already runs: the injected semop pairs move each adjustment by the
// saved amount, so what the task built since stays.
func addLists(opts *Options, lists []image.List, newPID map[int]int) error {
	r, err := opts.open()
	if err != nil {
		return err
	}
	defer opts.closeReader(r)
	snap, err := r.Scan()
	if err != nil {
		return err
	}
	var jobs []writer.Job
	for _, l := range lists {
		pid := newPID[int(l.Processes[0].PID)]
		cur := snap.ByPID(pid).Undo()
		want, err := sum(cur, l.Undo())
		if err != nil {
			return fmt.Errorf("pid %d: %w", pid, err)
		}
		jobs = append(jobs, writer.Job{PID: pid, Current: cur, Want: want})
	}
	if inj := opts.injector(); inj != nil {
		return inj(jobs)
	}
	for _, j := range jobs {
		if err := writer.Inject(j.PID, j.Current, j.Want, nil); err != nil {
			return fmt.Errorf("pid %d: %w", j.PID, err)
		}
	}
	return nil
}

// sum returns, for each set of saved, the adjustments of cur plus saved's.
func sum(cur, saved undo.List) (undo.List, error) {
	out := make(undo.List, 0, len(saved))
	for _, s := range saved {
		e := undo.Entry{Semid: s.Semid, Adj: make([]int16, len(s.Adj))}
		c, ok := cur.Lookup(s.Semid)
		if ok && len(c.Adj) != len(s.Adj) {
			return nil, fmt.Errorf("set %d had %d semaphores at dump and has %d now", s.Semid, len(s.Adj), len(c.Adj))
		}
		for i, a := range s.Adj {
			v := int32(a)
			if ok {
				v += int32(c.Adj[i])
			}
			if v < -32768 || v > 32767 {
				return nil, fmt.Errorf("set %d, semaphore %d: saved adjustment %d plus the current one leaves the range of an adjustment", s.Semid, i, a)
			}
			e.Adj[i] = int16(v)
		}
		out = append(out, e)
	}
	return out, nil
}

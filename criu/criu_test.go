package criu

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/writer"
)

// These tests run real CRIU (>= 4.1; testdata/install-criu.sh) on trees of
// tree.c processes, with semundo criu-script as the action script, as root.

// TestRestoredLockReleased is the first case: a child holding +1
// with SEM_UNDO is dumped and restored; killing the restored child must
// bring the value back to 0. The control, CRIU alone, leaves it at 1
// (CRIU issue 47): if it ever reads 0, CRIU has learnt to keep undo lists.
func TestRestoredLockReleased(t *testing.T) {
	rg := newRig(t)
	r := openReader(t)
	for _, withSemundo := range []bool{true, false} {
		name, want := "semundo", "0"
		if !withSemundo {
			name, want = "CRIU alone (control)", "1"
		}
		t.Run(name, func(t *testing.T) {
			lt := rg.startTree(t, treeSpec{sizes: "1", kids: []string{"1/0.0+1"}})
			semid := lt.sets[0]
			if got := listOf(t, r, lt.kids[0]); got != "0 -1\n" {
				t.Fatalf("before the dump the child holds %q, want %q", got, "0 -1\n")
			}
			dir, run := rg.dump(t, lt.root, withSemundo)
			if run.status != 0 {
				t.Fatalf("criu dump: %s", run)
			}
			lt.kill(t) // CRIU killed it; wait until its pids are free
			rs := rg.restore(t, dir, withSemundo, withSemundo)
			if rs.run.status != 0 {
				t.Fatalf("criu restore: %s", rs.run)
			}
			child := rs.pidOf(t, lt.vpid[lt.kids[0]])
			wantList := ""
			if withSemundo {
				wantList = "0 -1\n"
				waitState(t, child, stateRunning)
			}
			if got := listOf(t, r, child); got != wantList {
				t.Errorf("restored child %d holds %q, want %q", child, got, wantList)
			}
			if got := rg.values(t, rs.root, semid); got != "1" {
				t.Fatalf("restored value %q, want 1", got)
			}
			killAndWait(t, child)
			if got := rg.values(t, rs.root, semid); got != want {
				t.Errorf("after the restored child died the value is %s, want %s", got, want)
			}
		})
	}
}

// TestTreeOfLists dumps and restores a tree whose children hold different
// lists: on one set, on two sets of different sizes, a multi-threaded
// child's one shared list, a child stopped at dump, and a child with none.
func TestTreeOfLists(t *testing.T) {
	rg := newRig(t)
	r := openReader(t)
	lt := rg.startTree(t, treeSpec{sizes: "1,5", kids: []string{
		"1/0.0+1",       // 0: one set
		"1/0.0+2,1.4+3", // 1: two sets of different sizes
		"4/1.2+1",       // 2: four threads, the list made by a non-leader
		"1/1.0+2",       // 3: stopped at dump
		"1/-",           // 4: no list
	}})
	const stoppedKid = 3
	s0, s1 := lt.sets[0], lt.sets[1]
	before := make([]string, len(lt.kids))
	for i, k := range lt.kids {
		before[i] = listOf(t, r, k)
	}
	wantLists := []string{
		"0 -1\n",
		"0 -2\n1 0 0 0 0 -3\n",
		"1 0 0 -1 0 0\n",
		"1 -2 0 0 0 0\n",
		"",
	}
	// The lists name the sets by id: a new IPC namespace's first two.
	if s0 != 0 || s1 != 1 {
		t.Fatalf("sets %d and %d in a new IPC namespace, expected 0 and 1", s0, s1)
	}
	for i := range wantLists {
		if before[i] != wantLists[i] {
			t.Fatalf("child %d holds %q before the dump, want %q", i, before[i], wantLists[i])
		}
	}
	stopAndWait(t, lt.kids[stoppedKid])

	dir, run := rg.dump(t, lt.root, true)
	if run.status != 0 {
		t.Fatalf("criu dump: %s", run)
	}
	if !strings.Contains(run.log, "semundo: post-dump: saved 4 undo lists") || !strings.Contains(run.log, "("+treeSource(true)+")") {
		t.Errorf("CRIU's log lacks semundo's post-dump note:\n%s", tail(run.log, 20))
	}
	img, err := image.ReadFile(filepath.Join(dir, ImageFile))
	if err != nil {
		t.Fatal(err)
	}
	if len(img.Lists) != 4 {
		t.Errorf("image holds %d lists, want 4", len(img.Lists))
	}
	for i, k := range lt.kids[:4] {
		l := img.ListOf(int32(k))
		if l == nil || len(l.Processes) != 1 {
			t.Errorf("image: child %d (pid %d) has no list of its own", i, k)
			continue
		}
		if got, want := l.Processes[0].Stopped, i == stoppedKid; got != want {
			t.Errorf("image: child %d stopped = %v, want %v", i, got, want)
		}
		if i == 2 && len(l.Processes[0].TIDs) != 4 {
			t.Errorf("image: multi-threaded child has tids %v, want 4", l.Processes[0].TIDs)
		}
	}
	tr := readTreeFile(t, dir)
	if len(tr.Tasks) != 1+len(lt.kids) {
		t.Errorf("%s has %d tasks, want %d", TreeFile, len(tr.Tasks), 1+len(lt.kids))
	}
	for _, tk := range tr.Tasks {
		if want := tk.PID == lt.kids[stoppedKid]; tk.Stopped != want {
			t.Errorf("%s: pid %d stopped = %v, want %v", TreeFile, tk.PID, tk.Stopped, want)
		}
	}
	// The tree, root first, is CRIU's own pstree.img (the root shares
	// this PID namespace, so post-dump took it from there): the same
	// processes as the live tree, each its own vpid.
	wantPIDs := append([]int{lt.root}, lt.kids...)
	var gotPIDs []int
	for _, tk := range tr.Tasks {
		gotPIDs = append(gotPIDs, tk.PID)
		if tk.VPID != tk.PID {
			t.Errorf("%s: pid %d has vpid %d in the root's (this) PID namespace", TreeFile, tk.PID, tk.VPID)
		}
	}
	if len(gotPIDs) == 0 || gotPIDs[0] != lt.root || !sameSet(gotPIDs, wantPIDs) {
		t.Errorf("%s lists pids %v, want root %d first and %v", TreeFile, gotPIDs, lt.root, wantPIDs)
	}
	if pst, err := pstreePIDs(dir); err != nil || !slices.Equal(pst, gotPIDs) {
		t.Errorf("CRIU's pstree.img lists %v (%v), the tree file %v", pst, err, gotPIDs)
	}
	// From these images pre-restore hands post-resume every process's
	// parent, which spares post-resume the walk of the restored tree.
	handoff := filepath.Join(t.TempDir(), "criu-2147483646-1")
	if ok, err := PrepareRestore(dir, handoff); !ok || err != nil {
		t.Fatalf("PrepareRestore of the dump: %v, %v", ok, err)
	}
	parents, err := os.ReadFile(filepath.Join(handoff, parentsFile))
	wantParents := fmt.Sprintf("%d 0\n", lt.root)
	for _, k := range lt.kids {
		wantParents += fmt.Sprintf("%d %d\n", k, lt.root)
	}
	if err != nil || !slices.Equal(sortedLines(string(parents)), sortedLines(wantParents)) {
		t.Errorf("parents handed over: %q (%v), want the lines of %q", parents, err, wantParents)
	}
	lt.kill(t)

	rs := rg.restore(t, dir, true, true)
	if rs.run.status != 0 {
		t.Fatalf("criu restore: %s", rs.run)
	}
	if !strings.Contains(rs.run.log, "semundo: post-resume: wrote 4 undo lists into the stopped tasks, continued 5 of the 6 tasks ("+treeSource(true)+")") {
		t.Errorf("CRIU's log lacks semundo's post-resume note:\n%s", tail(rs.run.log, 20))
	}
	if left := rg.handoffsLeft(); len(left) != 0 {
		t.Errorf("post-resume left %v in the state directory", left)
	}
	kids := make([]int, len(lt.kids))
	for i, k := range lt.kids {
		kids[i] = rs.pidOf(t, lt.vpid[k])
	}
	t.Run("lists", func(t *testing.T) {
		for i, k := range kids {
			if got := listOf(t, r, k); got != before[i] {
				t.Errorf("restored child %d (pid %d) holds %q, at dump %q", i, k, got, before[i])
			}
		}
	})
	t.Run("threads share one list", func(t *testing.T) {
		l, err := r.Read(kids[2])
		if err != nil || l == nil {
			t.Fatalf("no list for the multi-threaded child: %v", err)
		}
		if len(l.Processes) != 1 || len(l.Processes[0].TIDs) != 4 {
			t.Errorf("list held by %+v, want one process with 4 threads", l.Processes)
		}
	})
	t.Run("stopped stays stopped", func(t *testing.T) {
		waitState(t, rs.root, stateRunning)
		for i, k := range kids {
			if i != stoppedKid {
				waitState(t, k, stateRunning)
			}
		}
		// The others run, so a SIGCONT sent to it would have arrived
		// too. It was written into: it may still be on its way back to
		// group-stop after the ptrace detach.
		for i := 0; ; i++ {
			st, err := processState(live, kids[stoppedKid])
			if err != nil {
				t.Fatal(err)
			}
			if st == stateStopped {
				break
			}
			if i == 5000 {
				t.Fatalf("child stopped at dump: state %v 5 s after the restore, want stopped", st)
			}
			time.Sleep(time.Millisecond)
		}
	})
	t.Run("exit applies the lists", func(t *testing.T) {
		if got := rg.values(t, rs.root, s0); got != "3" {
			t.Errorf("set 0 restored as %s, want 3", got)
		}
		if got := rg.values(t, rs.root, s1); got != "2 0 1 0 3" {
			t.Errorf("set 1 restored as %s, want 2 0 1 0 3", got)
		}
		killAndWait(t, kids[1])
		if got := rg.values(t, rs.root, s0) + " / " + rg.values(t, rs.root, s1); got != "1 / 2 0 1 0 0" {
			t.Errorf("after child 1 died: %s, want 1 / 2 0 1 0 0", got)
		}
		for _, k := range kids {
			killAndWait(t, k)
		}
		if got := rg.values(t, rs.root, s0) + " / " + rg.values(t, rs.root, s1); got != "0 / 0 0 0 0 0" {
			t.Errorf("after every child died: %s, want 0 / 0 0 0 0 0", got)
		}
	})
}

// TestPIDNamespace dumps a tree whose root is pid 1 of its own PID
// namespace: CRIU restores the pids inside it, the host pids change, and
// CRTOOLS_INIT_PID is the root's host pid at dump and at restore.
func TestPIDNamespace(t *testing.T) {
	rg := newRig(t)
	r := openReader(t)
	lt := rg.startTree(t, treeSpec{pidns: true, sizes: "2", kids: []string{"1/0.0+1", "2/0.1+2"}})
	if lt.vpid[lt.root] != 1 {
		t.Fatalf("root has pid %d in its namespace, want 1", lt.vpid[lt.root])
	}
	before := []string{listOf(t, r, lt.kids[0]), listOf(t, r, lt.kids[1])}
	if before[0] != "0 -1 0\n" || before[1] != "0 0 -2\n" {
		t.Fatalf("lists before the dump: %q", before)
	}
	dir, run := rg.dump(t, lt.root, true)
	if run.status != 0 {
		t.Fatalf("criu dump: %s", run)
	}
	// The tree file pairs each host pid with its pid in the namespace,
	// whether post-dump took the tree from pstree.img through the kernel's
	// translation (Linux 6.11) or walked it.
	tr := readTreeFile(t, dir)
	if len(tr.Tasks) != 1+len(lt.kids) || tr.Tasks[0].PID != lt.root {
		t.Errorf("%s lists %+v, want root %d and its %d children", TreeFile, tr.Tasks, lt.root, len(lt.kids))
	}
	for _, tk := range tr.Tasks {
		if v, ok := lt.vpid[tk.PID]; !ok || v != tk.VPID {
			t.Errorf("%s: pid %d has vpid %d, want %d (in the tree: %v)", TreeFile, tk.PID, tk.VPID, v, ok)
		}
	}
	// Taken from pstree.img where the kernel translates pids (Linux 6.11),
	// else walked.
	wantSource := treeSource(testenv.KernelAtLeast(t, 6, 11))
	if !strings.Contains(run.log, ImageFile+" ("+wantSource+")") {
		t.Errorf("post-dump did not take %s:\n%s", wantSource, tail(run.log, 20))
	}
	lt.kill(t)
	rs := rg.restore(t, dir, true, true)
	if rs.run.status != 0 {
		t.Fatalf("criu restore: %s", rs.run)
	}
	if !strings.Contains(rs.run.log, "tasks ("+wantSource+")") {
		t.Errorf("post-resume did not take %s:\n%s", wantSource, tail(rs.run.log, 20))
	}
	if rs.procs[0].vpid != 1 {
		t.Fatalf("restored root is pid %d in its namespace, want 1", rs.procs[0].vpid)
	}
	changed := rs.root != lt.root
	for i, k := range lt.kids {
		nk := rs.pidOf(t, lt.vpid[k])
		changed = changed || nk != k
		waitState(t, nk, stateRunning)
		if got := listOf(t, r, nk); got != before[i] {
			t.Errorf("restored child %d: host pid %d (was %d), pid %d in the namespace: holds %q, want %q", i, nk, k, lt.vpid[k], got, before[i])
		}
	}
	if !changed {
		t.Log("the restored tree got its old host pids again: the mapping was not exercised")
	}
	for _, k := range lt.kids {
		killAndWait(t, rs.pidOf(t, lt.vpid[k]))
	}
	if got := rg.values(t, rs.root, lt.sets[0]); got != "0 0" {
		t.Errorf("after the children died the values are %s, want 0 0", got)
	}
}

// TestSharedWithOutside: the root's list is shared with a process outside
// the dumped tree (clone with CLONE_SYSVSEM). The dump must fail with a
// message naming both, and the tasks run on with their lists.
func TestSharedWithOutside(t *testing.T) {
	rg := newRig(t)
	r := openReader(t)
	lt := rg.startTree(t, treeSpec{shared: true, sizes: "1", rootOps: "0.0+1", kids: []string{"1/0.0+1"}})
	l, err := r.Read(lt.root)
	if err != nil || l == nil || len(l.Processes) != 2 {
		t.Fatalf("root's list is not shared with its parent: %+v, %v", l, err)
	}
	outer := l.Processes[0].PID
	if outer == lt.root {
		outer = l.Processes[1].PID
	}
	dir, run := rg.dump(t, lt.root, true)
	if run.status == 0 {
		t.Fatalf("criu dump succeeded, want a failure: %s", run)
	}
	want := "is shared with pid " + strconv.Itoa(outer)
	if !strings.Contains(run.log, want) || !strings.Contains(run.log, "outside the dumped tree") {
		t.Errorf("CRIU's log lacks %q ... outside the dumped tree:\n%s", want, tail(run.log, 30))
	}
	if _, err := os.Stat(filepath.Join(dir, ImageFile)); err == nil {
		t.Errorf("a failed dump left %s", ImageFile)
	}
	for _, pid := range []int{lt.root, lt.kids[0]} {
		waitState(t, pid, stateRunning)
		if got := listOf(t, r, pid); got != "0 -1\n" {
			t.Errorf("pid %d holds %q after the failed dump, want %q", pid, got, "0 -1\n")
		}
	}
	if got := rg.values(t, lt.root, lt.sets[0]); got != "2" {
		t.Errorf("value %s after the failed dump, want 2", got)
	}
	// They really run: the child can still die and release its +1.
	killAndWait(t, lt.kids[0])
	if got := rg.values(t, lt.root, lt.sets[0]); got != "1" {
		t.Errorf("value %s after the child died, want 1", got)
	}
}

// TestRestoreWithoutLeaveStopped: without --leave-stopped the tasks run
// before post-resume, so semundo refuses (CRIU only logs it) unless
// SEMUNDO_CRIU_ALLOW_RUNNING=1, which adds the saved adjustments.
func TestRestoreWithoutLeaveStopped(t *testing.T) {
	rg := newRig(t)
	r := openReader(t)
	lt := rg.startTree(t, treeSpec{sizes: "1", kids: []string{"1/0.0+1"}})
	dir, run := rg.dump(t, lt.root, true)
	if run.status != 0 {
		t.Fatalf("criu dump: %s", run)
	}
	lt.kill(t)
	vpid := lt.vpid[lt.kids[0]]

	rs := rg.restore(t, dir, false, true)
	if rs.run.status != 0 {
		t.Fatalf("criu restore: %s", rs.run)
	}
	if !strings.Contains(rs.run.log, "restore with --leave-stopped") {
		t.Errorf("CRIU's log lacks semundo's refusal:\n%s", tail(rs.run.log, 20))
	}
	if got := listOf(t, r, rs.pidOf(t, vpid)); got != "" {
		t.Errorf("refused, yet the child holds %q", got)
	}
	if left := rg.handoffsLeft(); len(left) != 0 {
		t.Errorf("post-resume left %v in the state directory", left)
	}
	rs.kill(t)

	rs = rg.restore(t, dir, false, true, EnvAllowRunning+"=1")
	if rs.run.status != 0 {
		t.Fatalf("criu restore: %s", rs.run)
	}
	if !strings.Contains(rs.run.log, "added to the running tasks") {
		t.Errorf("CRIU's log lacks semundo's note:\n%s", tail(rs.run.log, 20))
	}
	child := rs.pidOf(t, vpid)
	if got := listOf(t, r, child); got != "0 -1\n" {
		t.Errorf("with %s=1 the child holds %q, want %q", EnvAllowRunning, got, "0 -1\n")
	}
	killAndWait(t, child)
	if got := rg.values(t, rs.root, lt.sets[0]); got != "0" {
		t.Errorf("after the child died the value is %s, want 0", got)
	}
	rs.kill(t)

	// A damaged semundo image stops the restore at pre-restore, before
	// CRIU creates a task.
	if err := os.WriteFile(filepath.Join(dir, ImageFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	rs = rg.restore(t, dir, true, true)
	if rs.run.status == 0 {
		t.Fatalf("criu restore with a damaged %s succeeded", ImageFile)
	}
	if !strings.Contains(rs.run.log, "semundo criu-script: "+ImageFile) || !strings.Contains(rs.run.log, "Aborting restore due to pre-restore script") {
		t.Errorf("CRIU's log lacks semundo's complaint and CRIU's abort:\n%s", tail(rs.run.log, 20))
	}
}

// TestResumeFailureLeavesStopped runs the post-resume step (without CRIU)
// on a stopped tree whose saved list names a set its namespace lacks: the
// write fails, the tasks stay stopped, and the error says how to resume
// them.
func TestResumeFailureLeavesStopped(t *testing.T) {
	testenv.RequireRoot(t)
	openReader(t)
	rg := &rig{dir: t.TempDir(), tree: buildTree(t)}
	lt := rg.startTree(t, treeSpec{sizes: "1", kids: []string{"1/-", "1/-"}})
	all := append([]int{lt.root}, lt.kids...)
	tr := tree{Format: treeFormat, Root: lt.root}
	for _, p := range all {
		stopAndWait(t, p)
		tr.Tasks = append(tr.Tasks, task{PID: p, VPID: p})
	}
	img := &image.Image{
		Created: time.Now().UTC(), KernelRelease: "test", SemundoVersion: "test", IPCNamespace: 1,
		Sets: []image.Set{{ID: 7, Mode: 0o600, Nsems: 1, Values: []uint16{1}}},
		Lists: []image.List{{
			Processes: []image.Process{{PID: int32(lt.kids[0]), Comm: "tree", TIDs: []int32{int32(lt.kids[0])}}},
			Entries:   []image.Entry{{Semid: 7, Adj: []int16{-1}}},
		}},
	}
	handoff := filepath.Join(rg.dir, "handoff")
	if err := os.Mkdir(handoff, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := image.WriteFile(filepath.Join(handoff, ImageFile), img); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(tr)
	if err := os.WriteFile(filepath.Join(handoff, TreeFile), b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Resume(lt.root, handoff, nil)
	if !errors.Is(err, writer.ErrNoSet) {
		t.Fatalf("Resume: %v, want writer.ErrNoSet", err)
	}
	want := fmt.Sprintf("kill -CONT %d %d %d to run them", lt.root, lt.kids[0], lt.kids[1])
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q lacks %q", err, want)
	}
	// The task written into goes back to group-stop after the ptrace
	// detach (in the kernel, without running its own code): wait for it.
	for _, p := range all {
		for i := 0; ; i++ {
			st, err := processState(live, p)
			if err != nil {
				t.Fatal(err)
			}
			if st == stateStopped {
				break
			}
			if i == 5000 {
				t.Fatalf("pid %d: state %v 5 s after Resume, want stopped", p, st)
			}
			time.Sleep(time.Millisecond)
		}
	}
	if _, err := os.Stat(handoff); !os.IsNotExist(err) {
		t.Errorf("the handoff directory is still there: %v", err)
	}
}

// sameSet reports whether a and b hold the same numbers, in any order.
func sameSet(a, b []int) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// sortedLines returns the lines of s, sorted.
func sortedLines(s string) []string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	slices.Sort(l)
	return l
}

// readTreeFile reads and decodes the tree file post-dump wrote into dir.
func readTreeFile(t *testing.T, dir string) *tree {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, TreeFile))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := decodeTree(b)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

package checkpoint_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/semundo/semundo/checkpoint"
	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/reader"
	"github.com/semundo/semundo/sysvsem"
	"github.com/semundo/semundo/undo"
	"golang.org/x/sys/unix"
)

// fixture is a runner with workers that hold adjustments on one set.
type fixture struct {
	r       *runner
	set     int
	workers []int
}

// newFixture starts a runner with n workers and a set of 3 semaphores
// (values 5 5 5); worker i takes -(i+1) on semaphore i%3 with SEM_UNDO,
// so its list holds one entry with adjustment i+1 there.
func newFixture(t *testing.T, n int) *fixture {
	t.Helper()
	f := &fixture{r: startRunner(t)}
	f.set = f.r.must(t, "create 3 0 600 5,5,5").ID
	f.workers = f.r.must(t, "spawn %d", n).PIDs
	for i := range f.workers {
		f.r.must(t, "op %d %d %d %d %d", i, f.set, i%3, -(i + 1), sysvsem.Undo|sysvsem.NoWait)
	}
	return f
}

// list is worker i's list in the fixture.
func (f *fixture) list(i int) undo.List {
	e := undo.Entry{Semid: int32(f.set), Adj: make([]int16, 3)}
	e.Adj[i%3] = int16(i + 1)
	return undo.List{e}
}

// capture runs Capture and checks that no thread of this process is left
// in the workers' namespace afterwards.
func capture(t *testing.T, rd *reader.Reader, opts checkpoint.CaptureOptions) (*image.Image, error) {
	t.Helper()
	host, err := ownNS()
	if err != nil {
		t.Fatal(err)
	}
	img, err := checkpoint.Capture(rd, opts)
	if err := noThreadOutsideNS(host); err != nil {
		t.Error(err)
	}
	return img, err
}

// requireRunning checks that the processes are not stopped (Capture has
// continued them).
func requireRunning(t *testing.T, pids ...int) {
	t.Helper()
	for _, pid := range pids {
		if err := waitState(pid, "SR"); err != nil {
			t.Errorf("after Capture: %v", err)
		}
	}
}

// TestCaptureThaws: Capture stops the processes and lets them go again,
// among them one blocked in semop, whose op then completes as if nothing
// had happened.
func TestCaptureThaws(t *testing.T) {
	rd := openReader(t)
	f := newFixture(t, 3)
	// Worker 2 waits for 7 on semaphore 1 (value 5), with SEM_UNDO.
	f.r.must(t, "opbg 2 %d 1 -7 %d", f.set, sysvsem.Undo)
	img, err := capture(t, rd, checkpoint.CaptureOptions{PIDs: f.workers})
	if err != nil {
		t.Fatalf("Capture: %v", err)
	}
	requireRunning(t, f.workers...)
	for i, pid := range f.workers {
		l := img.ListOf(int32(pid))
		if l == nil || len(l.Processes) != 1 || l.Processes[0].Stopped {
			t.Fatalf("worker %d: image list %+v, want the process alone, not stopped", pid, l)
		}
		want := f.list(i)
		if i == 2 {
			// The blocked op has made its entry, not its adjustment.
			want = undo.List{{Semid: int32(f.set), Adj: []int16{0, 0, 3}}}
		}
		if !l.Undo().Equal(want) {
			t.Errorf("worker %d: image holds %v, want %v", pid, l.Undo(), want)
		}
	}
	if s := img.Set(int32(f.set)); s == nil || !slices.Equal(s.Values, []uint16{4, 3, 2}) {
		t.Errorf("image set %+v, want values [4 3 2]", s)
	}
	// Still blocked after the thaw, and released like any waiter.
	if n := f.r.must(t, "getall").Sets[0].Values[1]; n != 3 {
		t.Fatalf("semaphore 1 is %d, want 3 (the blocked op must not have gone through)", n)
	}
	f.r.must(t, "op 0 %d 1 4 %d", f.set, sysvsem.NoWait)
	f.r.must(t, "wait 2")
	if got := f.r.must(t, "getall").Sets[0].Values; !slices.Equal(got, []uint16{4, 0, 2}) {
		t.Errorf("values after the release %v, want [4 0 2]", got)
	}
	snap, err := rd.Scan()
	if err != nil {
		t.Fatal(err)
	}
	want := undo.List{{Semid: int32(f.set), Adj: []int16{0, 7, 3}}}
	if got := snap.ByPID(f.workers[2]).Undo(); !got.Equal(want) {
		t.Errorf("worker 2 holds %v after its op completed, want %v", got, want)
	}
}

// TestCaptureLeavesStopped: a process stopped before the capture is still
// stopped after it, and the image says so.
func TestCaptureLeavesStopped(t *testing.T) {
	rd := openReader(t)
	f := newFixture(t, 2)
	stopped := f.workers[0]
	if err := unix.Kill(stopped, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Kill(stopped, unix.SIGCONT) })
	if err := waitState(stopped, "T"); err != nil {
		t.Fatal(err)
	}
	img, err := capture(t, rd, checkpoint.CaptureOptions{PIDs: f.workers})
	if err != nil {
		t.Fatalf("Capture: %v", err)
	}
	if st, err := procState(stopped); err != nil || st != 'T' {
		t.Errorf("pid %d, stopped before Capture, is in state %c (%v) after it, want T", stopped, st, err)
	}
	requireRunning(t, f.workers[1])
	for i, pid := range f.workers {
		l := img.ListOf(int32(pid))
		if l == nil || len(l.Processes) != 1 {
			t.Fatalf("pid %d: image list %+v", pid, l)
		}
		if got, want := l.Processes[0].Stopped, i == 0; got != want {
			t.Errorf("pid %d: image says stopped=%v, want %v", pid, got, want)
		}
		if !l.Undo().Equal(f.list(i)) {
			t.Errorf("pid %d: image holds %v, want %v", pid, l.Undo(), f.list(i))
		}
	}
	// Continued, it works as before.
	if err := unix.Kill(stopped, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	f.r.must(t, "op 0 %d 0 1 %d", f.set, sysvsem.NoWait)
}

// TestCaptureNamespaces: processes in two IPC namespaces are refused.
func TestCaptureNamespaces(t *testing.T) {
	rd := openReader(t)
	a, b := newFixture(t, 1), newFixture(t, 1)
	pids := []int{a.workers[0], b.workers[0]}
	_, err := capture(t, rd, checkpoint.CaptureOptions{PIDs: pids})
	if !errors.Is(err, checkpoint.ErrNamespaces) {
		t.Fatalf("Capture of pids %v in namespaces %d and %d: %v, want ErrNamespaces", pids, a.r.ns, b.r.ns, err)
	}
	requireRunning(t, pids...)
}

// TestCaptureShared: a list shared (clone(CLONE_SYSVSEM)) with a process
// outside the checkpoint is refused, naming both pids; Force takes it
// with a warning; checkpointing both gives one list of two processes.
func TestCaptureShared(t *testing.T) {
	rd := openReader(t)
	f := newFixture(t, 1)
	w := f.workers[0]
	child := f.r.must(t, "fork 0").PIDs[0]
	snap, err := rd.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if l := snap.ByPID(child); l == nil || l != snap.ByPID(w) {
		t.Fatalf("pid %d (cloned with CLONE_SYSVSEM by %d) does not share its list: %+v", child, w, l)
	}

	_, err = capture(t, rd, checkpoint.CaptureOptions{PIDs: []int{w}})
	if !errors.Is(err, checkpoint.ErrShared) {
		t.Fatalf("Capture of %d alone: %v, want ErrShared", w, err)
	}
	if msg := err.Error(); !strings.Contains(msg, strconv.Itoa(w)) || !strings.Contains(msg, strconv.Itoa(child)) {
		t.Errorf("error %q does not name both pids %d and %d", msg, w, child)
	}
	requireRunning(t, w, child)

	img, err := capture(t, rd, checkpoint.CaptureOptions{PIDs: []int{w}, Force: true})
	if err != nil {
		t.Fatalf("Capture with Force: %v", err)
	}
	if len(img.Warnings) != 1 || !strings.Contains(img.Warnings[0], strconv.Itoa(w)) || !strings.Contains(img.Warnings[0], strconv.Itoa(child)) {
		t.Errorf("warnings %q, want one naming %d and %d", img.Warnings, w, child)
	}
	l := img.ListOf(int32(w))
	if l == nil || !slices.Equal(l.PIDs(), []int32{int32(w)}) || !l.Undo().Equal(f.list(0)) {
		t.Errorf("forced image list %+v, want pid %d alone holding %v", l, w, f.list(0))
	}
	if img.ListOf(int32(child)) != nil {
		t.Errorf("forced image names pid %d, which was not checkpointed", child)
	}
	if err := image.Encode(new(strings.Builder), img); err != nil {
		t.Errorf("the forced image does not encode: %v", err)
	}
	requireRunning(t, w, child)

	img, err = capture(t, rd, checkpoint.CaptureOptions{PIDs: []int{w, child}})
	if err != nil {
		t.Fatalf("Capture of both: %v", err)
	}
	l = img.ListOf(int32(child))
	if len(img.Lists) != 1 || l == nil || !slices.Equal(l.PIDs(), []int32{int32(min(w, child)), int32(max(w, child))}) || len(img.Warnings) != 0 {
		t.Errorf("image of both: lists %+v, warnings %q; want one list of %d and %d", img.Lists, img.Warnings, w, child)
	}
	requireRunning(t, w, child)
}

// TestCaptureTree: Tree adds the descendants: the runner's workers and a
// worker's child that shares its list.
func TestCaptureTree(t *testing.T) {
	rd := openReader(t)
	f := newFixture(t, 2)
	child := f.r.must(t, "fork 1").PIDs[0]

	img, err := capture(t, rd, checkpoint.CaptureOptions{PIDs: []int{f.r.pid}})
	if err != nil {
		t.Fatalf("Capture of the runner alone: %v", err)
	}
	for _, pid := range append(slices.Clone(f.workers), child) {
		if img.ListOf(int32(pid)) != nil {
			t.Errorf("without Tree the image holds pid %d, a descendant", pid)
		}
	}

	img, err = capture(t, rd, checkpoint.CaptureOptions{PIDs: []int{f.r.pid}, Tree: true})
	if err != nil {
		t.Fatalf("Capture with Tree: %v", err)
	}
	for i, pid := range f.workers {
		l := img.ListOf(int32(pid))
		if l == nil || !l.Undo().Equal(f.list(i)) {
			t.Errorf("with Tree: worker %d's list is %+v, want %v", pid, l, f.list(i))
		}
	}
	if l := img.ListOf(int32(child)); l == nil || !slices.Contains(l.PIDs(), int32(f.workers[1])) {
		t.Errorf("with Tree: the list of pid %d (child of %d) is %+v, want the one it shares with its parent", child, f.workers[1], l)
	}
	if img.ListOf(int32(f.r.pid)) == nil {
		t.Errorf("with Tree: no list for the runner %d (a Go process always has one)", f.r.pid)
	}
	requireRunning(t, append(slices.Clone(f.workers), child, f.r.pid)...)
}

// TestCaptureNoProcess: a pid that does not exist is ErrNoProcess.
func TestCaptureNoProcess(t *testing.T) {
	rd := openReader(t)
	// The test binary itself, running no test: the VM has no /bin/true.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := testenv.Run(t, cmd, "the test binary running no test"); err != nil {
		t.Fatal(err)
	}
	if _, err := capture(t, rd, checkpoint.CaptureOptions{PIDs: []int{cmd.Process.Pid}}); !errors.Is(err, checkpoint.ErrNoProcess) {
		t.Errorf("Capture of exited pid %d: %v, want ErrNoProcess", cmd.Process.Pid, err)
	}
}

// TestCaptureRepeated captures the same namespace again and again from
// one process, as a periodic checkpointer would: every image must hold
// that namespace's sets, never the caller's own.
func TestCaptureRepeated(t *testing.T) {
	rd := openReader(t)
	f := newFixture(t, 1)
	want := f.r.must(t, "getall").Sets
	host, err := ownNS()
	if err != nil {
		t.Fatal(err)
	}
	// Checked once at the end: the images tell what a thread left in the
	// namespace does to the next capture.
	defer func() {
		if err := noThreadOutsideNS(host); err != nil {
			t.Error(err)
		}
	}()
	for i := range 30 {
		img, err := checkpoint.Capture(rd, checkpoint.CaptureOptions{PIDs: f.workers})
		if err != nil {
			t.Fatalf("capture %d: %v", i, err)
		}
		var got []setState
		for _, s := range img.Sets {
			got = append(got, setState{ID: int(s.ID), Key: s.Key, Mode: s.Mode & 0o777, UID: s.UID, GID: s.GID, Values: s.Values})
		}
		if !equalSets(got, want) {
			t.Fatalf("capture %d of namespace %d holds sets %s, the namespace has %s", i, f.r.ns, setIDs(got), setIDs(want))
		}
	}
}

// TestRestoreSetsTaken: RestoreSets refuses a namespace where one of the
// image's ids or keys is taken, and then creates nothing.
func TestRestoreSetsTaken(t *testing.T) {
	rd := openReader(t)
	requireNextID(t)
	src := startRunner(t)
	const key1, key2 = 0x5e3a0001, 0x5e3a0002
	src.must(t, "create 2 %d 640 1,2", key1)
	src.must(t, "create 3 0 600 3,4,5")
	src.must(t, "create 1 %d 666 6", key2)
	workers := src.must(t, "spawn 1").PIDs
	orig := src.must(t, "getall").Sets
	img, err := capture(t, rd, checkpoint.CaptureOptions{PIDs: workers})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "image.json")
	if err := image.WriteFile(path, img); err != nil {
		t.Fatal(err)
	}
	if len(orig) != 3 || orig[0].ID != 0 {
		t.Fatalf("a fresh namespace gave sets %+v, want ids from 0", orig)
	}

	for _, tc := range []struct {
		name, create string
	}{
		{"id", "createat 0 1 0"},                                     // set 0's id, no key
		{"index", "createat 32768 1 0"},                              // set 0's index, another sequence number
		{"key", "createat 100 1 " + strconv.Itoa(key2)},              // set 2's key, a free id
		{"last id", "createat " + strconv.Itoa(orig[2].ID) + " 4 0"}, // the last set's id only
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startRunner(t)
			r.must(t, "%s", tc.create)
			before := r.must(t, "getall").Sets
			rep, err := r.call("restore %s", path)
			if err == nil || !rep.Taken {
				t.Fatalf("RestoreSets into a namespace holding %+v: %v (taken=%v), want ErrTaken", before, err, rep.Taken)
			}
			if after := r.must(t, "getall").Sets; !equalSets(after, before) {
				t.Errorf("the refused restore changed the namespace: %+v, before %+v", after, before)
			}
			if id := r.must(t, "nextid").ID; id != -1 {
				t.Errorf("sem_next_id is %d after the refused restore, want -1 (unset)", id)
			}
		})
	}

	// And into a fresh namespace it works, exactly.
	r := startRunner(t)
	r.must(t, "restore %s", path)
	if got := r.must(t, "getall").Sets; !equalSets(got, orig) {
		t.Errorf("restored sets %+v, want %+v", got, orig)
	}
	if id := r.must(t, "nextid").ID; id != -1 {
		t.Errorf("sem_next_id is %d after the restore, want -1 (unset)", id)
	}
	for _, k := range []int32{key1, key2} {
		if err := hostKeyFree(k); err != nil {
			t.Error(err)
		}
	}
}

// setIDs names sets briefly: id, key and size.
func setIDs(sets []setState) string {
	var b strings.Builder
	for _, s := range sets {
		fmt.Fprintf(&b, "[id %d key %#x nsems %d] ", s.ID, uint32(s.Key), len(s.Values))
	}
	return strings.TrimSpace(b.String())
}

// TestCaptureFrozenSharedNamespace: with SharedNamespace, CaptureFrozen
// reads one namespace link and refuses a list the scan found in another
// namespace; over one namespace it builds what the per-process check
// builds.
func TestCaptureFrozenSharedNamespace(t *testing.T) {
	rd := openReader(t)
	a, b := newFixture(t, 2), newFixture(t, 1)
	snap, err := rd.Scan()
	if err != nil {
		t.Fatal(err)
	}
	mixed := []int{a.workers[0], b.workers[0]}
	if _, err := checkpoint.CaptureFrozen(snap, mixed, nil, checkpoint.CaptureOptions{SharedNamespace: true}); !errors.Is(err, checkpoint.ErrNamespaces) {
		t.Errorf("pids %v in namespaces %d and %d: %v, want ErrNamespaces", mixed, a.r.ns, b.r.ns, err)
	}
	shared, err := checkpoint.CaptureFrozen(snap, a.workers, nil, checkpoint.CaptureOptions{SharedNamespace: true})
	if err != nil {
		t.Fatal(err)
	}
	each, err := checkpoint.CaptureFrozen(snap, a.workers, nil, checkpoint.CaptureOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if shared.IPCNamespace != each.IPCNamespace || len(shared.Lists) != 2 || len(shared.Sets) != len(each.Sets) {
		t.Errorf("shared: namespace %d, %d lists, %d sets; per process: %d, %d, %d",
			shared.IPCNamespace, len(shared.Lists), len(shared.Sets), each.IPCNamespace, len(each.Lists), len(each.Sets))
	}
	for i, pid := range a.workers {
		if l := shared.ListOf(int32(pid)); l == nil || !l.Undo().Equal(a.list(i)) {
			t.Errorf("pid %d: image holds %+v, want %v", pid, l, a.list(i))
		}
	}
}

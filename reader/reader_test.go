package reader_test

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/internal/testreader"
	"github.com/semundo/semundo/reader"
	"github.com/semundo/semundo/sysvsem"
	"golang.org/x/sys/unix"
)

// openReader returns the Reader shared by the package's tests, or stops the
// test naming what is missing.
func openReader(t testing.TB) *reader.Reader {
	t.Helper()
	return testreader.Open(t)
}

var (
	fullOnce sync.Once
	fullRd   *reader.Reader
	fullErr  error
)

// readFunc is Reader.Read or Reader.ReadProcess.
type readFunc func(pid int) (*reader.List, error)

// eachRead runs f as three subtests: with Read (a full scan), with
// ReadProcess, which visits only the process asked for (Linux >= 6.1),
// and with ReadProcess of a reader that walks every task, as it does on
// older kernels.
func eachRead(t *testing.T, f func(t *testing.T, read readFunc)) {
	t.Helper()
	r := openReader(t)
	t.Run("Read", func(t *testing.T) { f(t, r.Read) })
	t.Run("ReadProcess", func(t *testing.T) { f(t, r.ReadProcess) })
	t.Run("ReadProcess-fullwalk", func(t *testing.T) {
		fullOnce.Do(func() { fullRd, fullErr = reader.OpenFullWalk() })
		if fullErr != nil {
			t.Fatalf("open the full-walk reader: %v", fullErr)
		}
		f(t, fullRd.ReadProcess)
	})
}

// checkList compares a list's entries with the expected adjustments.
func checkList(t *testing.T, l *reader.List, want map[int][]int16, nsems map[int]int) {
	t.Helper()
	if l == nil {
		if len(want) > 0 {
			t.Fatalf("no undo list, want %d entries", len(want))
		}
		return
	}
	if len(l.Entries) != len(want) {
		var got []int32
		for _, e := range l.Entries {
			got = append(got, e.Semid)
		}
		t.Fatalf("got entries for sets %v, want %d sets", got, len(want))
	}
	for i, e := range l.Entries {
		if i > 0 && l.Entries[i-1].Semid >= e.Semid {
			t.Errorf("entries not sorted by semid: %d before %d", l.Entries[i-1].Semid, e.Semid)
		}
		w, ok := want[int(e.Semid)]
		if !ok {
			t.Errorf("unexpected entry for set %d", e.Semid)
			continue
		}
		if len(e.Adj) != nsems[int(e.Semid)] {
			t.Errorf("set %d: nsems %d, want %d", e.Semid, len(e.Adj), nsems[int(e.Semid)])
			continue
		}
		if !slices.Equal(e.Adj, w) {
			for j := range w {
				if e.Adj[j] != w[j] {
					t.Errorf("set %d sem %d: adj %d, want %d", e.Semid, j, e.Adj[j], w[j])
				}
			}
		}
	}
}

// script builds the acceptance script: sets of 1, 7, 250 and 32000
// semaphores, adjustments of -32768 and 32767, an all-zero entry, and a set
// that is removed after the ops.
func script(t *testing.T) (ops []holder.Op, nsems map[int]int, removed int) {
	nsems = map[int]int{}
	mk := func(n int) int { id := holder.NewSet(t, n); nsems[id] = n; return id }
	s1, s7, s250, s32k, zero, gone := mk(1), mk(7), mk(250), mk(32000), mk(3), mk(2)
	ops = []holder.Op{
		{Semid: s1, Num: 0, Val: 5, Undo: true},
		{Semid: s1, Num: 0, Val: -2, Undo: true},
		// 32767: raise the value first, then take it back with SEM_UNDO.
		{Semid: s7, Num: 0, Val: 32767},
		{Semid: s7, Num: 0, Val: -32767, Undo: true},
		// -32768: +32767 and +1 with SEM_UNDO, making room in between.
		{Semid: s7, Num: 1, Val: 32767, Undo: true},
		{Semid: s7, Num: 1, Val: -1},
		{Semid: s7, Num: 1, Val: 1, Undo: true},
		{Semid: s7, Num: 6, Val: 3, Undo: true},
		{Semid: s32k, Num: 0, Val: 1, Undo: true},
		{Semid: s32k, Num: 12345, Val: 77, Undo: true},
		{Semid: s32k, Num: 31999, Val: 2, Undo: true},
		// A failed SEM_UNDO op still creates an (all-zero) entry.
		{Semid: zero, Num: 1, Val: -1, Undo: true, MayFail: true},
		{Semid: gone, Num: 1, Val: 4, Undo: true},
	}
	for i := 0; i < 250; i++ {
		ops = append(ops, holder.Op{Semid: s250, Num: uint16(i), Val: int16(i%9 + 1), Undo: true})
	}
	return ops, nsems, gone
}

func TestReadScripted(t *testing.T) {
	eachRead(t, testRead)
}

// TestReadBounded runs the same script through the program variant for
// kernels without bpf_loop.
func TestReadBounded(t *testing.T) {
	openReader(t)
	r, err := reader.Open(&reader.Options{Bounded: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	t.Run("Read", func(t *testing.T) { testRead(t, r.Read) })
	t.Run("ReadProcess", func(t *testing.T) { testRead(t, r.ReadProcess) })
}

func testRead(t *testing.T, read readFunc) {
	ops, nsems, gone := script(t)
	h := holder.Start(t, "wait", ops, nil)
	want := holder.Expect(ops, nsems)

	l, err := read(h.PID)
	if err != nil {
		t.Fatal(err)
	}
	if l == nil || l.Entry(int32(gone)) == nil {
		t.Fatalf("entry for set %d missing before its removal", gone)
	}
	if err := sysvsem.Remove(gone); err != nil {
		t.Fatal(err)
	}
	delete(want, gone)

	l, err = read(h.PID)
	if err != nil {
		t.Fatal(err)
	}
	checkList(t, l, want, nsems)
	if len(l.Processes) != 1 || l.Processes[0].PID != h.PID {
		t.Errorf("processes %+v, want pid %d alone", l.Processes, h.PID)
	}
	if l.IPCNS != ipcns(t, h.PID) {
		t.Errorf("ipcns %d, want %d", l.IPCNS, ipcns(t, h.PID))
	}
	for _, e := range l.Entries {
		if e.Key != 0 {
			t.Errorf("set %d: key %d, want 0 (IPC_PRIVATE)", e.Semid, e.Key)
		}
	}
}

func ipcns(t testing.TB, pid int) uint32 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/ipc", pid), &st); err != nil {
		t.Fatal(err)
	}
	return uint32(st.Ino)
}

// TestThreads: all threads of a process share one list, reported once.
func TestThreads(t *testing.T) {
	r := openReader(t)
	s := holder.NewSet(t, 2)
	ops := []holder.Op{{Semid: s, Num: 1, Val: 2, Undo: true}}
	h := holder.Start(t, "wait", ops, nil)

	snap, err := r.Scan()
	if err != nil {
		t.Fatal(err)
	}
	l := snap.ByPID(h.PID)
	if l == nil {
		t.Fatal("no list for the helper")
	}
	checkList(t, l, holder.Expect(ops, map[int]int{s: 2}), map[int]int{s: 2})
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", h.PID))
	if err != nil {
		t.Fatal(err)
	}
	if len(tasks) < 2 {
		t.Fatalf("helper has %d threads; the test needs several", len(tasks))
	}
	var tids []int
	for _, d := range tasks {
		tid, _ := strconv.Atoi(d.Name())
		tids = append(tids, tid)
	}
	slices.Sort(tids)
	if len(l.Processes) != 1 || !slices.Equal(l.Processes[0].TIDs, tids) {
		t.Errorf("processes %+v, want pid %d with threads %v", l.Processes, h.PID, tids)
	}
	n := 0
	for _, other := range snap.Lists {
		for _, p := range other.Processes {
			if p.PID == h.PID {
				n++
			}
		}
	}
	if n != 1 {
		t.Errorf("helper appears in %d lists, want 1", n)
	}
	for _, tid := range tids {
		if snap.ByPID(tid) != l {
			t.Errorf("thread %d does not map to the process's list", tid)
		}
	}
	// Read of the process and of each thread finds the same list, on
	// both paths: a thread that is not the leader is visited alone.
	eachRead(t, func(t *testing.T, read readFunc) {
		for _, pid := range append([]int{h.PID}, tids...) {
			got, err := read(pid)
			if err != nil {
				t.Fatal(err)
			}
			if got == nil || len(got.Processes) != 1 || got.Processes[0].PID != h.PID || !slices.Contains(got.Processes[0].TIDs, pid) && pid != h.PID {
				t.Fatalf("Read(%d): %+v, want the list of pid %d naming thread %d", pid, got, h.PID, pid)
			}
			checkList(t, got, holder.Expect(ops, map[int]int{s: 2}), map[int]int{s: 2})
		}
	})
}

// TestFork: a child forked after the ops has no list.
func TestFork(t *testing.T) {
	eachRead(t, func(t *testing.T, read readFunc) {
		s := holder.NewSet(t, 1)
		ops := []holder.Op{{Semid: s, Num: 0, Val: 1, Undo: true}}
		h := holder.Start(t, "fork", ops, nil)
		if h.Child <= 0 {
			t.Fatal("helper reported no child")
		}
		l, err := read(h.Child)
		if err != nil {
			t.Fatal(err)
		}
		if l != nil {
			t.Errorf("forked child has a list: %+v", l)
		}
		l, err = read(h.PID)
		if err != nil {
			t.Fatal(err)
		}
		checkList(t, l, holder.Expect(ops, map[int]int{s: 1}), map[int]int{s: 1})
	})
}

// TestExec: execve keeps the list.
func TestExec(t *testing.T) {
	eachRead(t, func(t *testing.T, read readFunc) {
		s := holder.NewSet(t, 4)
		ops := []holder.Op{{Semid: s, Num: 3, Val: 9, Undo: true}, {Semid: s, Num: 0, Val: 1, Undo: true}}
		h := holder.Start(t, "exec", ops, nil)
		l, err := read(h.PID)
		if err != nil {
			t.Fatal(err)
		}
		checkList(t, l, holder.Expect(ops, map[int]int{s: 4}), map[int]int{s: 4})
	})
}

// TestIPCNamespace: a process in its own IPC namespace whose set has the
// same semid as a set of another size in the parent namespace.
func TestIPCNamespace(t *testing.T) {
	eachRead(t, func(t *testing.T, read readFunc) {
		parentSet := holder.NewSet(t, 3)
		parentOps := []holder.Op{{Semid: parentSet, Num: 2, Val: 1, Undo: true}}
		hp := holder.Start(t, "wait", parentOps, nil)

		// The child's namespace gets a set of 5 with the parent set's id,
		// through sem_next_id, before the helper runs its ops in it.
		childOps := []holder.Op{{Semid: -1, Num: 4, Val: 6, Undo: true}}
		h := holder.StartNS(t, parentSet, 5, childOps)
		hc, childSet := h.PID, h.Child
		if childSet != parentSet {
			t.Fatalf("child set got id %d, want %d", childSet, parentSet)
		}
		childOps[0].Semid = childSet

		l, err := read(hc)
		if err != nil {
			t.Fatal(err)
		}
		checkList(t, l, holder.Expect(childOps, map[int]int{childSet: 5}), map[int]int{childSet: 5})
		if l.IPCNS != ipcns(t, hc) || l.IPCNS == ipcns(t, os.Getpid()) {
			t.Errorf("list ipcns %d, want the child's %d", l.IPCNS, ipcns(t, hc))
		}
		lp, err := read(hp.PID)
		if err != nil {
			t.Fatal(err)
		}
		checkList(t, lp, holder.Expect(parentOps, map[int]int{parentSet: 3}), map[int]int{parentSet: 3})
	})
}

func TestNoProcess(t *testing.T) {
	eachRead(t, func(t *testing.T, read readFunc) {
		_, err := read(1 << 30)
		if !errors.Is(err, reader.ErrNoProcess) {
			t.Fatalf("Read of a missing pid: %v, want ErrNoProcess", err)
		}
	})
}

// TestNoList: a process that never used SEM_UNDO and has one thread has no
// list at all; a multi-threaded one has an empty list (CLONE_SYSVSEM
// allocates it).
func TestNoList(t *testing.T) {
	eachRead(t, func(t *testing.T, read readFunc) {
		h := holder.Start(t, "fork", nil, nil)
		l, err := read(h.Child)
		if err != nil || l != nil {
			t.Fatalf("single-threaded child: list %+v, err %v; want none", l, err)
		}
		l, err = read(h.PID)
		if err != nil {
			t.Fatal(err)
		}
		if l != nil && len(l.Entries) != 0 {
			t.Fatalf("helper without ops has entries: %+v", l.Entries)
		}
	})
}

// TestLeaderExited: a process whose main thread has exited while its other
// threads live is still reported, by its pid, with the threads that hold
// the list.
func TestLeaderExited(t *testing.T) {
	eachRead(t, func(t *testing.T, read readFunc) {
		s := holder.NewSet(t, 3)
		ops := []holder.Op{{Semid: s, Num: 2, Val: 4, Undo: true}}
		h := holder.Start(t, "leaderexit", ops, nil)
		// The main thread leaves right after "ready": wait until it has.
		testenv.Eventually(t, fmt.Sprintf("the main thread of %d to exit (state Z)", h.PID), func() bool {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/stat", h.PID, h.PID))
			return err == nil && strings.Contains(string(b), ") Z ")
		})
		l, err := read(h.PID)
		if err != nil {
			t.Fatal(err)
		}
		checkList(t, l, holder.Expect(ops, map[int]int{s: 3}), map[int]int{s: 3})
		if len(l.Processes) != 1 || l.Processes[0].PID != h.PID || slices.Contains(l.Processes[0].TIDs, h.PID) || len(l.Processes[0].TIDs) == 0 {
			t.Fatalf("processes %+v, want pid %d with its live threads only", l.Processes, h.PID)
		}
	})
}

// TestLongList: a list whose entries do not fit one task's share of the
// seq file travels through the ring buffer in several chunks.
func TestLongList(t *testing.T) {
	eachRead(t, func(t *testing.T, read readFunc) {
		nsems := map[int]int{}
		var ops []holder.Op
		for i := 0; i < 300; i++ {
			s := holder.NewSet(t, 30)
			nsems[s] = 30
			ops = append(ops, holder.Op{Semid: s, Num: uint16(i % 30), Val: int16(i%7 + 1), Undo: true})
		}
		h := holder.Start(t, "wait", ops, nil)
		l, err := read(h.PID)
		if err != nil {
			t.Fatal(err)
		}
		checkList(t, l, holder.Expect(ops, nsems), nsems)
	})
}

// TestSnapshotOutlivesNextScan: a snapshot stays as it was while its reader
// scans again (a reader reuses its scratch from pass to pass): every list of
// the first scan, copied right after it, equals the list after two more
// scans that saw other lists.
func TestSnapshotOutlivesNextScan(t *testing.T) {
	r := openReader(t)
	s := holder.NewSet(t, 4)
	holder.Start(t, "wait", []holder.Op{{Semid: s, Num: 1, Val: 2, Undo: true}}, nil)
	holder.Start(t, "wait", []holder.Op{{Semid: s, Num: 3, Val: 1, Undo: true}, {Semid: s, Num: 0, Val: 1, Undo: true}}, nil)
	first, err := r.Scan()
	if err != nil {
		t.Fatal(err)
	}
	copied := deepCopyLists(first.Lists)
	if len(copied) < 2 {
		t.Fatalf("first scan: %d lists, want at least the 2 holders'", len(copied))
	}
	s2 := holder.NewSet(t, 2)
	holder.Start(t, "wait", []holder.Op{{Semid: s2, Num: 1, Val: 5, Undo: true}}, nil)
	for range 2 {
		if _, err := r.Scan(); err != nil {
			t.Fatal(err)
		}
	}
	if got := deepCopyLists(first.Lists); !reflect.DeepEqual(got, copied) {
		t.Errorf("the first snapshot changed while its reader scanned again:\nbefore %+v\nafter  %+v", copied, got)
	}
}

// deepCopyLists copies lists with everything they point to.
func deepCopyLists(ls []reader.List) []reader.List {
	out := make([]reader.List, len(ls))
	for i, l := range ls {
		c := l
		c.Processes = nil
		for _, p := range l.Processes {
			p.TIDs = slices.Clone(p.TIDs)
			c.Processes = append(c.Processes, p)
		}
		c.Entries = nil
		for _, e := range l.Entries {
			e.Adj = slices.Clone(e.Adj)
			c.Entries = append(c.Entries, e)
		}
		out[i] = c
	}
	return out
}

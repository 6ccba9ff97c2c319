package reader

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"testing"

	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
)

// TestTaskFilter: from Linux 6.1 a ReadProcess pass visits only the process asked
// for (or the thread, when it is not a leader), not every task: its
// snapshot holds that list alone, while another holder runs beside it.
// Before 6.1, where the iterator takes no filter, ReadProcess walks every
// task and still answers for the process asked for. The open-coded scan
// (Linux >= 6.7) filters the same way.
func TestTaskFilter(t *testing.T) {
	testenv.RequireRoot(t)
	for _, p := range []struct {
		name string
		path scanPath
	}{{"seq", pathSeq}, {"open", pathOpen}} {
		t.Run(p.name, func(t *testing.T) {
			r, err := Open(&Options{NoWaiters: true, path: p.path})
			if p.path == pathOpen && !testenv.KernelAtLeast(t, 6, 7) {
				// TestScanPathsAgree checks that Open says why.
				if err == nil {
					r.Close()
					t.Fatal("the open-coded scan loaded before Linux 6.7")
				}
				return
			}
			if err != nil {
				if errors.Is(err, ErrNotSupported) {
					testenv.Missing(t, "BPF task iterator", err.Error())
				}
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			testTaskFilter(t, r)
		})
	}
}

func testTaskFilter(t *testing.T, r *Reader) {
	s := holder.NewSet(t, 2)
	ops := []holder.Op{{Semid: s, Num: 1, Val: 3, Undo: true}}
	h := holder.Start(t, "wait", ops, nil)
	other := holder.Start(t, "wait", []holder.Op{{Semid: s, Num: 0, Val: 1, Undo: true}}, nil)
	if !testenv.KernelAtLeast(t, 6, 1) {
		l, err := r.ReadProcess(h.PID)
		if err != nil {
			t.Fatal(err)
		}
		if l == nil || l.Entry(int32(s)) == nil || l.Entry(int32(s)).Adj[1] != -3 || !slices.ContainsFunc(l.Processes, func(p Process) bool { return p.PID == h.PID }) {
			t.Fatalf("ReadProcess(%d) on a kernel without the filter read %+v, want its list with adj -3 on semaphore 1", h.PID, l)
		}
		return
	}

	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", h.PID))
	if err != nil {
		t.Fatal(err)
	}
	var thread int
	for _, d := range tasks {
		if tid, _ := strconv.Atoi(d.Name()); tid != h.PID {
			thread = tid
		}
	}
	if thread == 0 {
		t.Fatalf("helper %d has one thread; the test needs several", h.PID)
	}
	for _, c := range []struct {
		name     string
		tid, pid uint32
		tids     func([]int) bool
	}{
		{"process", 0, uint32(h.PID), func(tids []int) bool { return len(tids) == len(tasks) }},
		{"thread", uint32(thread), 0, func(tids []int) bool { return slices.Equal(tids, []int{thread}) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			snap, err := filteredScan(t, r, iterTaskInfo{tid: c.tid, pid: c.pid})
			if err != nil {
				t.Fatal(err)
			}
			if len(snap.Lists) != 1 || len(snap.Lists[0].Processes) != 1 || snap.Lists[0].Processes[0].PID != h.PID || !c.tids(snap.Lists[0].Processes[0].TIDs) {
				t.Fatalf("filtered pass found %+v; want pid %d's list alone (%d threads, other holder %d left out)", snap.Lists, h.PID, len(tasks), other.PID)
			}
			if e := snap.Lists[0].Entry(int32(s)); e == nil || e.Adj[1] != -3 {
				t.Fatalf("filtered pass read %+v, want adj -3 on semaphore 1", snap.Lists[0].Entries)
			}
		})
	}
}

// filteredScan runs a pass over the tasks f names.
func filteredScan(t *testing.T, r *Reader, f iterTaskInfo) (*Snapshot, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.oc != nil {
		r.taskInfo = f
		return r.scan(nil, false)
	}
	it, err := r.taskIter(f.tid, f.pid)
	if err != nil {
		t.Fatalf("Linux >= 6.1 refused the filtered iterator: %v", err)
	}
	defer it.Close()
	return r.scan(it, false)
}

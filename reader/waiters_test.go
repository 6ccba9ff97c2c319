package reader_test

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/reader"
	"github.com/semundo/semundo/sysvsem"
	"golang.org/x/sys/unix"
)

// scanWaiters scans until it sees n waiters of process pid (a thread the
// kernel counts as waiting may still be on its way to sleep, and a scan
// reports only sleepers), and returns them; it fails the test when the
// reader cannot read waiters at all.
func scanWaiters(t *testing.T, r *reader.Reader, pid, n int) []reader.Waiter {
	t.Helper()
	var out []reader.Waiter
	testenv.EventuallyErr(t, fmt.Sprintf("a scan that sees %d waiters of pid %d", n, pid), func() (bool, error) {
		snap, err := r.Scan()
		if err != nil {
			return false, err
		}
		if snap.WaitersErr != nil {
			if errors.Is(snap.WaitersErr, reader.ErrNotSupported) {
				testenv.Missing(t, "reading blocked semop callers", snap.WaitersErr.Error())
			}
			return false, snap.WaitersErr
		}
		out = out[:0]
		for _, w := range snap.Waiters {
			if w.PID == pid {
				out = append(out, w)
			}
		}
		return len(out) >= n, nil
	})
	return out
}

// ipcNS is the inode of the IPC namespace of pid.
func ipcNS(t *testing.T, pid int) uint32 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/ipc", pid), &st); err != nil {
		t.Fatal(err)
	}
	return uint32(st.Ino)
}

// checkWaiter compares a reported waiter with what the process was told.
func checkWaiter(t *testing.T, w reader.Waiter, pid, semid int, ops []sysvsem.Sembuf, timed bool) {
	t.Helper()
	if w.PID != pid || w.TID <= 0 || w.Semid != int32(semid) || w.Comm != "semwait" {
		t.Errorf("waiter %+v: want pid %d, a tid, set %d, comm semwait", w, pid, semid)
	}
	if !slices.Equal(w.Ops, ops) || w.NOps != len(ops) {
		t.Errorf("waiter %d ops %v (of %d), want %v", w.TID, w.Ops, w.NOps, ops)
	}
	if w.Timed != timed {
		t.Errorf("waiter %d timed %v, want %v", w.TID, w.Timed, timed)
	}
	if w.IPCNS != ipcNS(t, pid) {
		t.Errorf("waiter %d: ipc namespace %d, want %d", w.TID, w.IPCNS, ipcNS(t, pid))
	}
	if w.Blocking < -1 || w.Blocking >= len(w.Ops) {
		t.Errorf("waiter %d: blocking index %d out of range", w.TID, w.Blocking)
	}
}

// TestWaiterOps: one blocked call of each kind, reported with its
// operations, the one that blocks, and whether it has a timeout.
func TestWaiterOps(t *testing.T) {
	for _, c := range []struct {
		name     string
		init     int    // every semaphore's value
		steps    string // semwait's steps, %[1]d the set
		sem      int    // a semaphore it waits on
		zero     bool   // ... to be zero
		ops      []sysvsem.Sembuf
		blocking int
		timed    bool
	}{
		{"decrement", 0, "wait:%[1]d:1:-2", 1, false, []sysvsem.Sembuf{{Num: 1, Op: -2}}, 0, false},
		{"zero", 1, "wait:%[1]d:0:0", 0, true, []sysvsem.Sembuf{{Num: 0, Op: 0}}, 0, false},
		// Several operations wait on the set's own queue; the third blocks.
		{"several", 1, "wait:%[1]d:0:-1,2:1,3:-2", 3, false,
			[]sysvsem.Sembuf{{Num: 0, Op: -1}, {Num: 2, Op: 1}, {Num: 3, Op: -2}}, 2, false},
		// More operations than the BPF check folds inline (10): the
		// rest go through its bpf_loop callback.
		{"long", 1, "wait:%[1]d:" + strings.Repeat("1:1,1:-1,", 8) + "2:-1,3:-2", 3, false,
			append(slices.Repeat([]sysvsem.Sembuf{{Num: 1, Op: 1}, {Num: 1, Op: -1}}, 8), sysvsem.Sembuf{Num: 2, Op: -1}, sysvsem.Sembuf{Num: 3, Op: -2}), 17, false},
		// An hour: the test ends long before, and kills it.
		{"semtimedop", 0, "timed:3600000 wait:%[1]d:0:-1", 0, false, []sysvsem.Sembuf{{Num: 0, Op: -1}}, 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := openReader(t)
			id := holder.NewSetVal(t, 4, c.init)
			p := holder.StartWaiter(t, holder.Steps(c.steps, id)...)
			holder.BlockedOn(t, id, c.sem, 1, c.zero)
			ws := scanWaiters(t, r, p.PID, 1)
			if len(ws) != 1 {
				t.Fatalf("got %d waiters of pid %d, want 1: %+v", len(ws), p.PID, ws)
			}
			checkWaiter(t, ws[0], p.PID, id, c.ops, c.timed)
			if ws[0].Blocking != c.blocking {
				t.Errorf("blocking op %d, want %d", ws[0].Blocking, c.blocking)
			}
		})
	}
}

// The open-coded scan's records travel in its ring buffer: a reader whose
// ring starts at one page must grow it for the waiters too.
func TestWaiterMany(t *testing.T) {
	small, err := reader.OpenSmallRing()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { small.Close() })
	const n = 50
	id := holder.NewSetVal(t, 1, 0)
	p := holder.StartWaiter(t, fmt.Sprintf("threads:%d", n), fmt.Sprintf("wait:%d:0:-1", id))
	holder.BlockedOn(t, id, 0, n, false)
	for name, r := range map[string]*reader.Reader{"default": openReader(t), "small ring": small} {
		ws := scanWaiters(t, r, p.PID, n)
		if len(ws) != n {
			t.Fatalf("%s reader: got %d waiters of pid %d, want %d", name, len(ws), p.PID, n)
		}
		tids := map[int]bool{}
		for _, w := range ws {
			checkWaiter(t, w, p.PID, id, []sysvsem.Sembuf{{Num: 0, Op: -1}}, false)
			if w.TID == p.PID || tids[w.TID] {
				t.Errorf("%s reader: tid %d: the main thread, or reported twice", name, w.TID)
			}
			tids[w.TID] = true
			if _, err := os.Stat(fmt.Sprintf("/proc/%d/task/%d", p.PID, w.TID)); err != nil {
				t.Errorf("%s reader: tid %d is no thread of pid %d: %v", name, w.TID, p.PID, err)
			}
		}
	}
	if reader.ScanPath(small) == "open" && reader.RingSize(small) <= 4096 {
		t.Errorf("the open-coded scan's ring buffer stayed at %d bytes for %d waiters", reader.RingSize(small), n)
	}
}

// A waiter in its own IPC namespace names a set of that namespace, whose id
// here may be nobody's or another set's.
func TestWaiterOtherNamespace(t *testing.T) {
	testenv.RequireRoot(t)
	r := openReader(t)
	p := holder.StartWaiter(t, "ns", "new:2:0", "wait:-1:1:-3")
	ws := scanWaiters(t, r, p.PID, 1)
	if len(ws) != 1 {
		t.Fatalf("got %d waiters, want 1: %+v", len(ws), ws)
	}
	checkWaiter(t, ws[0], p.PID, p.Semid, []sysvsem.Sembuf{{Num: 1, Op: -3}}, false)
	if ws[0].IPCNS == ipcNS(t, os.Getpid()) {
		t.Errorf("waiter reported in the test's IPC namespace")
	}
}

// A reader opened without waiters still reads lists, and says why it has no
// waiters.
func TestWaitersOff(t *testing.T) {
	testenv.RequireRoot(t)
	for _, opts := range []*reader.Options{{NoWaiters: true}, {Bounded: true}} {
		r, err := reader.Open(opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		id := holder.NewSetVal(t, 1, 0)
		h := holder.Start(t, "wait", []holder.Op{{Semid: id, Num: 0, Val: 1, Undo: true}}, nil)
		snap, err := r.Scan()
		if err != nil {
			t.Fatal(err)
		}
		if snap.WaitersErr == nil || r.WaitersErr() == nil || len(snap.Waiters) != 0 {
			t.Errorf("%+v: waiters %d, error %v", opts, len(snap.Waiters), snap.WaitersErr)
		}
		if opts.Bounded && !errors.Is(snap.WaitersErr, reader.ErrNotSupported) {
			t.Errorf("bounded reader: %v is not ErrNotSupported", snap.WaitersErr)
		}
		if l := snap.ByPID(h.PID); l == nil || l.Entry(int32(id)) == nil || l.Entry(int32(id)).Adj[0] != -1 {
			t.Errorf("%+v: the holder's list is missing or wrong: %+v", opts, l)
		}
	}
}

// TestWaitersSupported: from Linux 5.17 on (bpf_loop, bpf_task_pt_regs)
// the reader reads waiters; a kernel that has both but whose verifier
// rejects the waiter code fails here, by its verifier's words. It needs no
// target process, so that it runs on the kernel matrix's guests too.
func TestWaitersSupported(t *testing.T) {
	r := openReader(t)
	err := r.WaitersErr()
	switch {
	case testenv.KernelAtLeast(t, 5, 17):
		if err != nil {
			if errors.Is(err, reader.ErrNotSupported) {
				testenv.Missing(t, "reading blocked semop callers", err.Error())
			}
			t.Fatal(err)
		}
	case !errors.Is(err, reader.ErrNotSupported):
		t.Errorf("a kernel before 5.17: waiters error %v, want ErrNotSupported", err)
	case !strings.Contains(err.Error(), "bpf_loop") || strings.Contains(err.Error(), "asked for"):
		// Nobody asked for the bounded variant: the kernel lacks bpf_loop.
		t.Errorf("a kernel before 5.17: waiters error %q, want it to name the missing helper bpf_loop", err)
	}
}

// TestWaiterInProcess blocks threads of the test process itself in semop
// and semtimedop: no target program, so that it runs on the kernel matrix's
// guests too, where semwait cannot be compiled.
func TestWaiterInProcess(t *testing.T) {
	r := openReader(t)
	for _, c := range []struct {
		name  string
		init  int
		ops   []sysvsem.Sembuf
		timed bool
	}{
		{"decrement", 0, []sysvsem.Sembuf{{Num: 1, Op: -1}}, false},
		{"zero", 1, []sysvsem.Sembuf{{Num: 0, Op: 0}}, false},
		{"semtimedop", 0, []sysvsem.Sembuf{{Num: 0, Op: 1}, {Num: 1, Op: -3}}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			id := holder.NewSetVal(t, 2, c.init)
			tid := make(chan int, 1)
			done := make(chan error, 1)
			go func() {
				// The call holds this thread; the test knows it by its tid.
				runtime.LockOSThread()
				tid <- unix.Gettid()
				if c.timed {
					done <- sysvsem.TimedOp(id, c.ops, time.Hour)
				} else {
					done <- sysvsem.Op(id, c.ops)
				}
			}()
			me := <-tid
			// Removing the set ends the call (EIDRM); NewSet's cleanup
			// removes it again, harmlessly.
			t.Cleanup(func() {
				sysvsem.Remove(id)
				<-done
			})
			var got *reader.Waiter
			testenv.EventuallyErr(t, fmt.Sprintf("a scan that sees thread %d waiting", me), func() (bool, error) {
				snap, err := r.Scan()
				if err == nil {
					err = snap.WaitersErr
				}
				if err != nil {
					return false, err
				}
				for i, w := range snap.Waiters {
					if w.TID == me {
						got = &snap.Waiters[i]
					}
				}
				return got != nil, nil
			})
			if got.PID != os.Getpid() || got.Semid != int32(id) || !slices.Equal(got.Ops, c.ops) || got.Timed != c.timed ||
				got.IPCNS != ipcNS(t, os.Getpid()) || got.Blocking != len(c.ops)-1 {
				t.Errorf("waiter %+v: want pid %d, set %d, ops %v, timed %v, the last op blocking", *got, os.Getpid(), id, c.ops, c.timed)
			}
		})
	}
}

//go:build linux

package sysvsem

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/semundo/semundo/internal/testenv"
	"golang.org/x/sys/unix"
)

func TestSetAllGetAllGetValSetVal(t *testing.T) {
	id, _ := newSet(t, 5)
	want := []uint16{0, 1, 2, SemVMX, 100}
	if err := SetAll(id, want); err != nil {
		t.Fatal(err)
	}
	got, err := GetAll(id)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("GetAll = %v, want %v", got, want)
	}
	for i, w := range want {
		v, err := GetVal(id, i)
		if err != nil {
			t.Fatal(err)
		}
		if v != int(w) {
			t.Errorf("GetVal(%d) = %d, want %d", i, v, w)
		}
	}
	if err := SetVal(id, 2, 77); err != nil {
		t.Fatal(err)
	}
	want[2] = 77
	if got, err = GetAll(id); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("after SetVal(2, 77): GetAll = %v, want %v", got, want)
	}
}

// Sets larger than the kernel's on-stack buffer (SEMMSL_FAST = 256) take
// its kvmalloc path for GETALL and SETALL.
func TestGetAllLargeSet(t *testing.T) {
	lim, err := ReadLimits()
	if err != nil {
		t.Fatal(err)
	}
	n := min(1000, lim.Semmsl)
	if n <= 256 {
		t.Skipf("SEMMSL is %d; the large-set path needs more than 256", lim.Semmsl)
	}
	id, _ := newSet(t, n)
	want := make([]uint16, n)
	for i := range want {
		want[i] = uint16((i * 37) % (SemVMX + 1))
	}
	if err := SetAll(id, want); err != nil {
		t.Fatal(err)
	}
	got, err := GetAll(id)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("GetAll of %d semaphores differs from what SetAll wrote", n)
	}
}

func TestSetAllWrongLength(t *testing.T) {
	id, _ := newSet(t, 3)
	if err := SetAll(id, []uint16{4, 5, 6}); err != nil {
		t.Fatal(err)
	}
	for _, vals := range [][]uint16{nil, {1, 2}, {1, 2, 3, 4}} {
		err := SetAll(id, vals)
		if !errors.Is(err, ErrNsemsMismatch) {
			t.Fatalf("SetAll with %d values on a 3-set: got %v, want ErrNsemsMismatch", len(vals), err)
		}
		var oe *OpError
		if !errors.As(err, &oe) || oe.Op != "semctl(SETALL)" || oe.Semid != id {
			t.Fatalf("error %v should be an OpError for semctl(SETALL) on %d", err, id)
		}
	}
	got, err := GetAll(id)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []uint16{4, 5, 6}) {
		t.Fatalf("rejected SetAll changed the values to %v", got)
	}
}

// The guard page must turn a set larger than the buffer into EFAULT
// rather than a write past the buffer: this is what happens when an id is
// reused by a larger set between IPC_STAT and GETALL/SETALL. Both the
// cached mapping and a private one (used while the cache is busy) are
// checked.
func TestGuardPageTurnsOverflowIntoEFAULT(t *testing.T) {
	id, _ := newSet(t, 5)
	if err := SetAll(id, []uint16{1, 2, 3, 4, 5}); err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T) {
		_, err := getAllN(id, 3)
		requireErrno(t, err, unix.EFAULT, "semctl(GETALL)")
		err = setAllN(id, []uint16{9, 9, 9})
		requireErrno(t, err, unix.EFAULT, "semctl(SETALL)")
		got, err := getAllN(id, 5)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, []uint16{1, 2, 3, 4, 5}) {
			t.Fatalf("SETALL from a short buffer changed the values to %v", got)
		}
	}
	t.Run("cached", check)
	t.Run("private", func(t *testing.T) {
		guardCache.Lock() // makes withGuard map its own buffer
		defer guardCache.Unlock()
		check(t)
	})
}

func TestGuardValuesEndAtGuardPage(t *testing.T) {
	page := os.Getpagesize()
	var pipe [2]int
	if err := unix.Pipe2(pipe[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(pipe[0]); unix.Close(pipe[1]) })
	for _, n := range []int{0, 1, page / 2, page/2 + 1, guardCacheBytes / 2, guardCacheBytes/2 + 1} {
		err := withGuard(n, func(vals []uint16, p unsafe.Pointer) error {
			if len(vals) != n {
				t.Errorf("n=%d: got %d values", n, len(vals))
			}
			for i, v := range vals {
				if v != 0 {
					t.Fatalf("n=%d: value %d is %d, want zeroed", n, i, v)
				}
				vals[i] = 0xffff // must not show up in the next call
			}
			end := uintptr(p) + uintptr(2*n)
			if end%uintptr(page) != 0 {
				t.Errorf("n=%d: values end at %#x, not at a page boundary", n, end)
			}
			// The byte at end must be unreadable and the last value's
			// readable: write(2) from them to a pipe tells without
			// faulting this process.
			if _, _, e := unix.Syscall(unix.SYS_WRITE, uintptr(pipe[1]), end, 1); e != unix.EFAULT {
				t.Errorf("n=%d: write from the byte after the values: %v, want EFAULT", n, e)
			}
			if n > 0 {
				if _, _, e := unix.Syscall(unix.SYS_WRITE, uintptr(pipe[1]), end-1, 1); e != 0 {
					t.Errorf("n=%d: write from the last value's byte: %v", n, e)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("withGuard(%d): %v", n, err)
		}
	}
}

func TestStat(t *testing.T) {
	// The kernel stamps sem_ctime with ktime_get_real_seconds(): the
	// timekeeper's seconds, advanced at a tick, which just after a second
	// begins can still name the one before while time.Now (the clock
	// source, read through) names the new one (a 6.12 guest of CI: Ctime
	// 20:14:25 against a start at 20:14:26.0). A tick is at most 10 ms
	// (HZ >= 100); 50 ms is the margin.
	start := time.Now().Add(-50 * time.Millisecond).Truncate(time.Second)
	id, key := newKeyedSet(t, 3, 0o640)
	ds, err := Stat(id)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if ds.Perm.Key != key {
		t.Errorf("Key = %#x, want %#x", uint32(ds.Perm.Key), uint32(key))
	}
	// The key opens the set in signed and in unsigned (ftok-style) form.
	for _, k := range []int{int(key), int(uint32(key))} {
		if got, err := Get(k, 0, 0); err != nil || got != id {
			t.Errorf("Get(%#x, 0, 0) = %d, %v; want %d", k, got, err, id)
		}
	}
	euid, egid := uint32(os.Geteuid()), uint32(os.Getegid())
	if ds.Perm.UID != euid || ds.Perm.CUID != euid {
		t.Errorf("UID, CUID = %d, %d, want %d", ds.Perm.UID, ds.Perm.CUID, euid)
	}
	if ds.Perm.GID != egid || ds.Perm.CGID != egid {
		t.Errorf("GID, CGID = %d, %d, want %d", ds.Perm.GID, ds.Perm.CGID, egid)
	}
	if ds.Perm.Mode&0o777 != 0o640 {
		t.Errorf("Mode = %#o, want 0640", ds.Perm.Mode)
	}
	if ds.Nsems != 3 {
		t.Errorf("Nsems = %d, want 3", ds.Nsems)
	}
	if ds.Ctime.Before(start) || ds.Ctime.After(now) {
		t.Errorf("Ctime = %v, want between %v and %v", ds.Ctime, start, now)
	}
	if !ds.Otime.IsZero() {
		t.Errorf("Otime = %v before any semop, want zero", ds.Otime)
	}
	// The id is the index plus the slot's sequence number shifted by
	// IPCMNI_SHIFT (15, or 24 with ipcmni_extend).
	idx := indexOf(t, id)
	if seq := ds.Perm.Seq; id != int(seq)<<15+idx && id != int(seq)<<24+idx {
		t.Errorf("Seq %d and index %d do not make id %d", seq, idx, id)
	}

	if err := Op(id, []Sembuf{{Num: 1, Op: 1}}); err != nil {
		t.Fatal(err)
	}
	ds, err = Stat(id)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Otime.Before(start) || ds.Otime.After(time.Now()) {
		t.Errorf("Otime = %v after a semop, want between %v and now", ds.Otime, start)
	}
}

func TestSetChangesOwnerAndMode(t *testing.T) {
	id, _ := newSet(t, 1)
	if err := SetPerm(id, 1234, 5678, 0o604); err != nil {
		t.Fatal(err)
	}
	ds, err := Stat(id)
	if err != nil {
		t.Fatal(err)
	}
	if ds.Perm.UID != 1234 || ds.Perm.GID != 5678 || ds.Perm.Mode&0o777 != 0o604 {
		t.Errorf("after Set: uid %d gid %d mode %#o, want 1234 5678 0604", ds.Perm.UID, ds.Perm.GID, ds.Perm.Mode)
	}
	if euid := uint32(os.Geteuid()); ds.Perm.CUID != euid {
		t.Errorf("CUID = %d changed, want %d", ds.Perm.CUID, euid)
	}
}

func TestGetPidAfterOp(t *testing.T) {
	id, _ := newSet(t, 2)
	if err := Op(id, []Sembuf{{Num: 1, Op: 3}}); err != nil {
		t.Fatal(err)
	}
	pid, err := GetPid(id, 1)
	if err != nil {
		t.Fatal(err)
	}
	if pid != os.Getpid() {
		t.Errorf("GetPid = %d, want %d", pid, os.Getpid())
	}
	if v, err := GetVal(id, 1); err != nil || v != 3 {
		t.Errorf("GetVal = %d, %v; want 3", v, err)
	}
}

// A helper process blocks in semop(-1) on a zero semaphore: GETNCNT must
// count it, and raising the value must let it complete.
func TestGetNcntCountsWaiterAndWakes(t *testing.T) {
	id, _ := newSet(t, 2)
	c := startChild(t, "op", strconv.Itoa(id), "1", "-1", "0")
	testenv.EventuallyErr(t, "GETNCNT to reach 1", func() (bool, error) {
		if c.exited() {
			code, out := c.wait(t)
			return false, fmt.Errorf("helper exited early (%d): %s", code, out)
		}
		n, err := GetNcnt(id, 1)
		return n == 1, err
	})
	if z, err := GetZcnt(id, 1); err != nil || z != 0 {
		t.Errorf("GetZcnt = %d, %v; want 0", z, err)
	}
	if n, err := GetNcnt(id, 0); err != nil || n != 0 {
		t.Errorf("GetNcnt of the other semaphore = %d, %v; want 0", n, err)
	}
	if err := SetVal(id, 1, 1); err != nil {
		t.Fatal(err)
	}
	if code, out := c.wait(t); code != childOK {
		t.Fatalf("helper exit %d: %s", code, out)
	}
	if v, err := GetVal(id, 1); err != nil || v != 0 {
		t.Errorf("GetVal after the waiter took 1 = %d, %v; want 0", v, err)
	}
	if pid, err := GetPid(id, 1); err != nil || pid != c.cmd.Process.Pid {
		t.Errorf("GetPid = %d, %v; want the helper's pid %d", pid, err, c.cmd.Process.Pid)
	}
}

// A helper process waits for zero on a semaphore holding 1: GETZCNT must
// count it, and setting the value to 0 must let it complete.
func TestGetZcntCountsWaiterAndWakes(t *testing.T) {
	id, _ := newSet(t, 1)
	if err := SetVal(id, 0, 1); err != nil {
		t.Fatal(err)
	}
	c := startChild(t, "op", strconv.Itoa(id), "0", "0", "0")
	testenv.EventuallyErr(t, "GETZCNT to reach 1", func() (bool, error) {
		if c.exited() {
			code, out := c.wait(t)
			return false, fmt.Errorf("helper exited early (%d): %s", code, out)
		}
		n, err := GetZcnt(id, 0)
		return n == 1, err
	})
	if n, err := GetNcnt(id, 0); err != nil || n != 0 {
		t.Errorf("GetNcnt = %d, %v; want 0", n, err)
	}
	if err := SetVal(id, 0, 0); err != nil {
		t.Fatal(err)
	}
	if code, out := c.wait(t); code != childOK {
		t.Fatalf("helper exit %d: %s", code, out)
	}
}

// Removing a set wakes its waiters with EIDRM; the helper checks that its
// error is an OpError wrapping EIDRM and prints the message.
func TestRemoveWakesWaiterWithEIDRM(t *testing.T) {
	id, remove := newSet(t, 1)
	c := startChild(t, "op", strconv.Itoa(id), "0", "-1", "0")
	testenv.EventuallyErr(t, "GETNCNT to reach 1", func() (bool, error) {
		if c.exited() {
			code, out := c.wait(t)
			return false, fmt.Errorf("helper exited early (%d): %s", code, out)
		}
		n, err := GetNcnt(id, 0)
		return n == 1, err
	})
	if err := remove(); err != nil {
		t.Fatal(err)
	}
	code, out := c.wait(t)
	if code != childEIDRM {
		t.Fatalf("helper exit %d (want %d, EIDRM): %s", code, childEIDRM, out)
	}
	if want := fmt.Sprintf("semop semid %d", id); !strings.Contains(out, want) {
		t.Errorf("helper's error %q does not name %q", out, want)
	}
}

func TestUndo(t *testing.T) {
	id, _ := newSet(t, 2)
	// Accepted in this process: the value changes now, the adjustment is
	// applied when the test binary exits (by then the set is removed).
	if err := Op(id, []Sembuf{{Num: 0, Op: 2, Flg: Undo}}); err != nil {
		t.Fatal(err)
	}
	if v, err := GetVal(id, 0); err != nil || v != 2 {
		t.Fatalf("GetVal after +2 with Undo = %d, %v; want 2", v, err)
	}
	// In a helper that exits, the kernel reverts the operation.
	c := startChild(t, "op", strconv.Itoa(id), "1", "5", strconv.Itoa(Undo))
	if code, out := c.wait(t); code != childOK {
		t.Fatalf("helper exit %d: %s", code, out)
	}
	if v, err := GetVal(id, 1); err != nil || v != 0 {
		t.Errorf("GetVal after the helper's +5 with Undo and exit = %d, %v; want 0", v, err)
	}
	if pid, err := GetPid(id, 1); err != nil || pid != c.cmd.Process.Pid {
		t.Errorf("GetPid = %d, %v; want the helper's pid %d (exit_sem sets it)", pid, err, c.cmd.Process.Pid)
	}
}

func TestTimedOp(t *testing.T) {
	id, _ := newSet(t, 1)
	take := []Sembuf{{Num: 0, Op: -1}}
	for _, d := range []time.Duration{20 * time.Millisecond, 0, -time.Second} {
		err := TimedOp(id, take, d)
		requireErrno(t, err, unix.EAGAIN, "semtimedop")
	}
	if err := SetVal(id, 0, 1); err != nil {
		t.Fatal(err)
	}
	if err := TimedOp(id, take, time.Minute); err != nil {
		t.Fatalf("TimedOp that can proceed: %v", err)
	}
	if v, err := GetVal(id, 0); err != nil || v != 0 {
		t.Errorf("GetVal = %d, %v; want 0", v, err)
	}
	if err := Op(id, []Sembuf{{Num: 0, Op: -1, Flg: NoWait}}); !errors.Is(err, unix.EAGAIN) {
		t.Errorf("Op with NoWait on 0: %v, want EAGAIN", err)
	}
}

func TestInfoMatchesProc(t *testing.T) {
	lim, err := ReadLimits()
	if err != nil {
		t.Fatal(err)
	}
	si, _, err := Info()
	if err != nil {
		t.Fatal(err)
	}
	if int(si.Semmsl) != lim.Semmsl || int(si.Semmns) != lim.Semmns ||
		int(si.Semopm) != lim.Semopm || int(si.Semmni) != lim.Semmni {
		t.Errorf("IPC_INFO %+v disagrees with /proc/sys/kernel/sem %+v", si, lim)
	}
	// IPC_INFO reports the compile-time constants in these two fields.
	if si.Semvmx != SemVMX || si.Semaem != SemAEM {
		t.Errorf("IPC_INFO semvmx %d semaem %d, want %d %d", si.Semvmx, si.Semaem, SemVMX, SemAEM)
	}
}

func TestSemInfoCounts(t *testing.T) {
	id, _ := newSet(t, 7)
	lim, err := ReadLimits()
	if err != nil {
		t.Fatal(err)
	}
	si, maxIdx, err := SemInfo()
	if err != nil {
		t.Fatal(err)
	}
	if int(si.Semmsl) != lim.Semmsl || int(si.Semopm) != lim.Semopm || int(si.Semmni) != lim.Semmni {
		t.Errorf("SEM_INFO limits %+v disagree with /proc/sys/kernel/sem %+v", si, lim)
	}
	// Usage counts: at least this test's set, never more than the limits.
	if si.Semusz < 1 || int(si.Semusz) > lim.Semmni {
		t.Errorf("SEM_INFO sets in use = %d, want 1..%d", si.Semusz, lim.Semmni)
	}
	if si.Semaem < 7 || int(si.Semaem) > lim.Semmns {
		t.Errorf("SEM_INFO semaphores in use = %d, want 7..%d", si.Semaem, lim.Semmns)
	}
	if idx := indexOf(t, id); idx > maxIdx {
		t.Errorf("set at index %d above the reported highest index %d", idx, maxIdx)
	}
}

func TestStatIndexAndStatAnyIndex(t *testing.T) {
	id, _ := newSet(t, 4)
	want, err := Stat(id)
	if err != nil {
		t.Fatal(err)
	}
	idx := indexOf(t, id)
	for name, stat := range map[string]func(int) (int, SemidDS, error){"StatIndex": StatIndex, "StatAnyIndex": StatAnyIndex} {
		got, ds, err := stat(idx)
		if err != nil {
			t.Fatalf("%s(%d): %v", name, idx, err)
		}
		if got != id || ds != want {
			t.Errorf("%s(%d) = %d %+v, want %d %+v", name, idx, got, ds, id, want)
		}
	}
}

// A free index is EINVAL for both commands, and must not be mistaken for
// a kernel without SEM_STAT_ANY.
func TestStatIndexFreeIndex(t *testing.T) {
	// Other processes may create a set at the freed index before the
	// check; try again with a fresh index when that happens.
	for range 10 {
		id, remove := newSet(t, 1)
		idx := indexOf(t, id)
		if err := remove(); err != nil {
			t.Fatal(err)
		}
		got, _, err := StatAnyIndex(idx)
		if err == nil {
			if got == id {
				t.Fatalf("StatAnyIndex(%d) still finds removed set %d", idx, id)
			}
			continue
		}
		if errors.Is(err, ErrNotSupported) {
			t.Fatalf("free index reported as unsupported command: %v", err)
		}
		requireErrno(t, err, unix.EINVAL, "semctl(SEM_STAT_ANY)")
		_, _, err = StatIndex(-1)
		requireErrno(t, err, unix.EINVAL, "semctl(SEM_STAT)")
		return
	}
	t.Fatal("every freed index was reused before it could be checked")
}

// SEM_STAT_ANY exists to read sets without read permission: an
// unprivileged helper gets EACCES from SEM_STAT and the set from
// SEM_STAT_ANY.
func TestStatAnyIndexWithoutReadPermission(t *testing.T) {
	testenv.RequireRoot(t)
	id, _ := newSet(t, 1) // mode 0600, owned by root
	idx := indexOf(t, id)
	c := startChild(t, "drop-stat", strconv.Itoa(idx))
	code, out := c.wait(t)
	if code != childOK {
		t.Fatalf("helper exit %d: %s", code, out)
	}
	lines := strings.Split(out, "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "stat: ") || !strings.Contains(lines[0], "permission denied") {
		t.Fatalf("unprivileged SEM_STAT should fail with EACCES, helper said: %q", out)
	}
	if want := fmt.Sprintf("any: %d <nil>", id); lines[1] != want {
		t.Fatalf("unprivileged SEM_STAT_ANY: helper said %q, want %q", lines[1], want)
	}
}

func TestGetValWithoutPermission(t *testing.T) {
	testenv.RequireRoot(t)
	id, _ := newSet(t, 1)
	c := startChild(t, "drop-getval", strconv.Itoa(id))
	if code, out := c.wait(t); code != childEACCES {
		t.Fatalf("helper exit %d (want %d, EACCES): %s", code, childEACCES, out)
	}
}

func TestEnumerate(t *testing.T) {
	a, _ := newSet(t, 2)
	b, _ := newSet(t, 9)
	sets, err := Enumerate()
	if err != nil {
		t.Fatal(err)
	}
	found := map[int]Entry{}
	for i, e := range sets {
		found[e.ID] = e
		if i > 0 && e.Index <= sets[i-1].Index {
			t.Errorf("entries not in index order: %d after %d", e.Index, sets[i-1].Index)
		}
	}
	for id, nsems := range map[int]int{a: 2, b: 9} {
		e, ok := found[id]
		if !ok {
			t.Errorf("set %d missing from Enumerate's %d entries", id, len(sets))
			continue
		}
		if e.Stat.Nsems != nsems {
			t.Errorf("set %d: Nsems %d, want %d", id, e.Stat.Nsems, nsems)
		}
		if got, _, err := StatIndex(e.Index); err != nil || got != id {
			t.Errorf("set %d: StatIndex(%d) = %d, %v", id, e.Index, got, err)
		}
	}
}

func TestErrors(t *testing.T) {
	id, _ := newSet(t, 2)
	gone, remove := newSet(t, 2)
	if err := remove(); err != nil {
		t.Fatal(err)
	}
	lim, err := ReadLimits()
	if err != nil {
		t.Fatal(err)
	}
	if err := SetVal(id, 1, SemVMX); err != nil {
		t.Fatal(err)
	}
	missing := unusedKey(t)

	tests := []struct {
		name  string
		call  func() error
		errno unix.Errno
		op    string
		semid int
	}{
		{"GetVal semnum out of range", func() error { _, err := GetVal(id, 2); return err }, unix.EINVAL, "semctl(GETVAL)", id},
		{"GetPid negative semnum", func() error { _, err := GetPid(id, -1); return err }, unix.EINVAL, "semctl(GETPID)", id},
		{"Op on negative semid", func() error { return Op(-1, []Sembuf{{Op: 1}}) }, unix.EINVAL, "semop", -1},
		{"Op with no operations", func() error { return Op(id, nil) }, unix.EINVAL, "semop", id},
		{"Op semnum beyond set", func() error { return Op(id, []Sembuf{{Num: 2, Op: 1}}) }, unix.EFBIG, "semop", id},
		{"Op above SEMVMX", func() error { return Op(id, []Sembuf{{Num: 1, Op: 1}}) }, unix.ERANGE, "semop", id},
		{"SetVal above SEMVMX", func() error { return SetVal(id, 0, SemVMX+1) }, unix.ERANGE, "semctl(SETVAL)", id},
		{"SetVal negative", func() error { return SetVal(id, 0, -1) }, unix.ERANGE, "semctl(SETVAL)", id},
		{"SetAll above SEMVMX", func() error { return SetAll(id, []uint16{1, SemVMX + 1}) }, unix.ERANGE, "semctl(SETALL)", id},
		{"more ops than SEMOPM", func() error { return Op(id, make([]Sembuf, lim.Semopm+1)) }, unix.E2BIG, "semop", id},
		{"semget missing key", func() error { _, err := Get(int(missing), 1, 0); return err }, unix.ENOENT, "semget", -1},
		{"semget key too large", func() error { _, err := Get(1<<32, 1, 0); return err }, unix.EINVAL, "semget", -1},
		{"semget nsems above SEMMSL", func() error { _, err := Get(Private, lim.Semmsl+1, unix.IPC_CREAT|0o600); return err }, unix.EINVAL, "semget", -1},
		{"semid does not fit int", func() error { _, err := GetVal(id+1<<32, 0); return err }, unix.EINVAL, "semctl(GETVAL)", id + 1<<32},
		{"removed: Stat", func() error { _, err := Stat(gone); return err }, unix.EINVAL, "semctl(IPC_STAT)", gone},
		{"removed: GetVal", func() error { _, err := GetVal(gone, 0); return err }, unix.EINVAL, "semctl(GETVAL)", gone},
		{"removed: GetAll", func() error { _, err := GetAll(gone); return err }, unix.EINVAL, "semctl(GETALL)", gone},
		{"removed: SetAll", func() error { return SetAll(gone, []uint16{1, 1}) }, unix.EINVAL, "semctl(SETALL)", gone},
		{"removed: Op", func() error { return Op(gone, []Sembuf{{Op: 1}}) }, unix.EINVAL, "semop", gone},
		{"removed: Set", func() error { return SetPerm(gone, 0, 0, 0o600) }, unix.EINVAL, "semctl(IPC_SET)", gone},
		{"removed: Remove", func() error { return Remove(gone) }, unix.EINVAL, "semctl(IPC_RMID)", gone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			oe := requireErrno(t, tc.call(), tc.errno, tc.op)
			if oe.Semid != tc.semid {
				t.Errorf("OpError.Semid = %d, want %d", oe.Semid, tc.semid)
			}
			if tc.op != "semget" && !strings.Contains(oe.Error(), fmt.Sprintf("semid %d", tc.semid)) {
				t.Errorf("message %q does not name semid %d", oe.Error(), tc.semid)
			}
		})
	}

	// The failed ops changed nothing.
	if got, err := GetAll(id); err != nil || !slices.Equal(got, []uint16{0, SemVMX}) {
		t.Errorf("values after failed calls = %v, %v; want [0 %d]", got, err, SemVMX)
	}

	t.Run("semget existing key with IPC_EXCL", func(t *testing.T) {
		_, key := newKeyedSet(t, 1, 0o600)
		_, err := Get(int(key), 1, unix.IPC_CREAT|unix.IPC_EXCL|0o600)
		oe := requireErrno(t, err, unix.EEXIST, "semget")
		if oe.Key != key || !strings.Contains(oe.Error(), fmt.Sprintf("key %#x", uint32(key))) {
			t.Errorf("error %q should name key %#x", oe.Error(), uint32(key))
		}
	})
}

func TestOpErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		err  *OpError
		want string
	}{
		{&OpError{Op: "semctl(GETALL)", Semid: 32769, Err: unix.EIDRM},
			"sysvsem: semctl(GETALL) semid 32769: identifier removed (the set was removed)"},
		{&OpError{Op: "semget", Semid: -1, Key: -559038737, Err: unix.ENOENT},
			"sysvsem: semget key 0xdeadbeef: no such file or directory (no set has this key; add IPC_CREAT to create one)"},
		{&OpError{Op: "semctl(SEM_STAT)", Semid: 7, Err: unix.EINVAL},
			"sysvsem: semctl(SEM_STAT) index 7: invalid argument (no set with this id or index, or an argument out of range)"},
		{&OpError{Op: "semctl(SEM_INFO)", Semid: -1, Err: unix.ENOSYS},
			"sysvsem: semctl(SEM_INFO): function not implemented (kernel built without System V IPC (CONFIG_SYSVIPC))"},
		{&OpError{Op: "semop", Semid: 3, Err: errors.New("custom")},
			"sysvsem: semop semid 3: custom"},
		{&OpError{Op: "semop", Semid: 3}, "sysvsem: semop semid 3: <nil>"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q\nwant      %q", got, tc.want)
		}
	}
	err := error(&OpError{Op: "semop", Semid: 1, Err: fmt.Errorf("wrapped: %w", unix.EIDRM)})
	if !errors.Is(err, unix.EIDRM) {
		t.Error("errors.Is does not see through OpError")
	}
}

// The reason this package never sets IPC_64: the direct semctl system call
// of amd64 and arm64 takes the command as is and rejects the flag.
func TestIPC64FlagRejected(t *testing.T) {
	id, _ := newSet(t, 1)
	var raw semid64DS
	_, err := semctl(id, 0, cmdIPCStat|cmdIPC64Bit, unsafe.Pointer(&raw), 0)
	if !errors.Is(err, unix.EINVAL) {
		t.Fatalf("IPC_STAT|IPC_64: %v, want EINVAL", err)
	}
	if _, err := semctl(id, 0, cmdIPCStat, unsafe.Pointer(&raw), 0); err != nil {
		t.Fatalf("IPC_STAT: %v", err)
	}
	if raw.Nsems != 1 {
		t.Fatalf("IPC_STAT nsems = %d, want 1", raw.Nsems)
	}
}

package undofs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/sysvsem"
	"golang.org/x/sys/unix"
)

func path(f *FS, pid int) string {
	return filepath.Join(f.Dir(), strconv.Itoa(pid), FileName)
}

// startHolder starts a holder with adjustments on two sets and returns it
// with the sets' ids.
func startHolder(t testing.TB) (*holder.Helper, int, int) {
	a, b := holder.NewSet(t, 4), holder.NewSet(t, 1)
	h := holder.Start(t, "wait", []holder.Op{
		{Semid: a, Num: 0, Val: 1, Undo: true},
		{Semid: a, Num: 3, Val: 2, Undo: true},
		{Semid: b, Num: 0, Val: 7, Undo: true},
	}, nil)
	return h, a, b
}

func TestReadShellTools(t *testing.T) {
	f := mountT(t, nil)
	h, a, b := startHolder(t)
	want := listText(t, f, h.PID)
	// The reader's text is the seed's format; check it against the ops.
	lines := []string{fmt.Sprintf("%d -1 0 0 -2", a), fmt.Sprintf("%d -7", b)}
	if a > b {
		lines[0], lines[1] = lines[1], lines[0]
	}
	if exp := strings.Join(lines, "\n") + "\n"; want != exp {
		t.Fatalf("reader says %q, the holder's ops make %q", want, exp)
	}
	p := path(f, h.PID)

	out, errs, code := run(t, nil, "", "cat", p)
	if code != 0 || out != want {
		t.Errorf("cat: exit %d, %q, stderr %q; want %q", code, out, errs, want)
	}
	for _, bs := range []string{"1", "7"} {
		out, errs, code := run(t, nil, "", "dd", "if="+p, "bs="+bs, "status=none")
		if code != 0 || out != want {
			t.Errorf("dd bs=%s: exit %d, %q, stderr %q; want %q", bs, code, out, errs, want)
		}
	}
	// dd skipping blocks: reads that start past the first byte.
	out, _, code = run(t, nil, "", "dd", "if="+p, "bs=3", "skip=2", "status=none")
	if code != 0 || out != want[6:] {
		t.Errorf("dd bs=3 skip=2: exit %d, %q; want %q", code, out, want[6:])
	}
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != int64(len(want)) || st.Mode() != 0o644 {
		t.Errorf("stat: size %d mode %v; want %d, -rw-r--r--", st.Size(), st.Mode(), len(want))
	}
}

func TestReadSnapshotAtOpen(t *testing.T) {
	f := mountT(t, nil)
	h, a, _ := startHolder(t)
	want := listText(t, f, h.PID)
	file, err := os.Open(path(f, h.PID))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	first := make([]byte, 5)
	if _, err := file.Read(first); err != nil {
		t.Fatal(err)
	}
	// SETVAL zeroes every process's adjustment of that semaphore: the
	// holder's list changes after the open.
	if err := sysvsem.SetVal(a, 0, 3); err != nil {
		t.Fatal(err)
	}
	changed := listText(t, f, h.PID)
	if changed == want {
		t.Fatalf("SETVAL did not change the list: %q", changed)
	}
	// pread at every offset, and the rest by read, give the text at open.
	for off := range len(want) + 2 {
		buf := make([]byte, 4)
		n, err := file.ReadAt(buf, int64(off))
		if err != nil && n == 0 && off < len(want) {
			t.Fatalf("pread at %d: %v", off, err)
		}
		if end := min(off+4, len(want)); off < len(want) && string(buf[:n]) != want[off:end] {
			t.Errorf("pread at %d = %q, want %q", off, buf[:n], want[off:end])
		}
	}
	rest, err := readAll(file)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(first) + string(rest); got != want {
		t.Errorf("read after the change = %q, want the text at open %q", got, want)
	}
	// fstat does not tell the daemon which open file asks (no
	// FUSE_GETATTR_FH): the size is the snapshot's or a recent scan's.
	if st, err := file.Stat(); err != nil || (st.Size() != int64(len(want)) && st.Size() != int64(len(changed))) {
		t.Errorf("fstat of the open file: %v, size %d, want %d (at open) or %d (now)", err, st.Size(), len(want), len(changed))
	}
	// A new open sees the change: nothing was cached.
	got, err := os.ReadFile(path(f, h.PID))
	if err != nil || string(got) != changed {
		t.Errorf("read after reopen = %q, %v; want %q", got, err, changed)
	}
	// The process exits: the open file still reads its text.
	h.Cmd.Process.Kill()
	h.Cmd.Wait()
	got, err = readAllAt(file)
	if err != nil || string(got) != want {
		t.Errorf("read of the open file after the process exited = %q, %v; want %q", got, err, want)
	}
	if _, err := os.ReadFile(path(f, h.PID)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("open after the process exited: %v, want ENOENT", err)
	}
}

func readAll(f *os.File) ([]byte, error) {
	var out []byte
	buf := make([]byte, 3)
	for {
		n, err := f.Read(buf)
		out = append(out, buf[:n]...)
		if n == 0 || err != nil {
			if err != nil && err.Error() == "EOF" {
				err = nil
			}
			return out, err
		}
	}
}

func readAllAt(f *os.File) ([]byte, error) {
	buf := make([]byte, 4096)
	n, err := f.ReadAt(buf, 0)
	if n > 0 {
		err = nil
	}
	return buf[:n], err
}

func TestListing(t *testing.T) {
	f := mountT(t, nil)
	h1, _, _ := startHolder(t)
	h2, _, _ := startHolder(t)
	// A forked child has no list; the helper itself has one with no
	// entries unless it did ops: neither is listed.
	nolist := holder.Start(t, "fork", nil, nil)
	// A process whose sets were all removed keeps its (now empty) list:
	// a listing from before the removal must not be served again.
	emptied, a, b := startHolder(t)
	if _, err := run1(t, "ls", f.Dir()); err != nil {
		t.Fatal(err)
	}
	for _, id := range []int{a, b} {
		if err := sysvsem.Remove(id); err != nil {
			t.Fatal(err)
		}
	}

	out, err := run1(t, "ls", f.Dir())
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Fields(out)
	for _, pid := range []int{h1.PID, h2.PID} {
		if !slices.Contains(names, strconv.Itoa(pid)) {
			t.Errorf("ls %s = %v, lacks holder %d", f.Dir(), names, pid)
		}
	}
	for _, pid := range []int{nolist.PID, nolist.Child, os.Getpid(), emptied.PID} {
		if slices.Contains(names, strconv.Itoa(pid)) {
			t.Errorf("ls lists pid %d, which has no entries", pid)
		}
	}
	// Processes of other test packages come and go, and their sets are
	// removed while they live, so only the form of their names is checked.
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err != nil || pid <= 0 || strconv.Itoa(pid) != n {
			t.Errorf("ls lists %q, not a pid", n)
		}
	}
	out, _, code := run(t, nil, "", "ls", filepath.Join(f.Dir(), strconv.Itoa(h1.PID)))
	if code != 0 || out != FileName+"\n" {
		t.Errorf("ls of a pid directory: exit %d, %q", code, out)
	}
	// A live process without a list can still be opened: empty file.
	got, err := os.ReadFile(path(f, nolist.Child))
	if err != nil || len(got) != 0 {
		t.Errorf("read of pid %d without a list = %q, %v; want empty", nolist.Child, got, err)
	}
}

// run1 runs a command that must succeed and returns its standard output.
func run1(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	out, errs, code := run(t, nil, "", name, args...)
	if code != 0 {
		return out, fmt.Errorf("%s %v: exit %d, %s", name, args, code, errs)
	}
	return out, nil
}

func TestLookupRules(t *testing.T) {
	f := mountT(t, nil)
	h, _, _ := startHolder(t)
	tid := otherThread(t, h.PID)
	pid := strconv.Itoa(h.PID)
	for _, name := range []string{"0" + pid, "+" + pid, "0", "-1", "self", strconv.Itoa(tid), pid + "/other", "4194305"} {
		if _, err := os.Stat(filepath.Join(f.Dir(), name)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("stat %s: %v, want ENOENT", name, err)
		}
	}
	for what, err := range map[string]error{
		"mkdir":  os.Mkdir(filepath.Join(f.Dir(), "x"), 0o755),
		"create": createErr(filepath.Join(f.Dir(), pid, "new")),
		"remove": os.Remove(path(f, h.PID)),
		"chmod":  os.Chmod(path(f, h.PID), 0o600),
		"rename": os.Rename(path(f, h.PID), filepath.Join(f.Dir(), pid, "x")),
	} {
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("%s: %v, want EPERM", what, err)
		}
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(f.Dir(), &sfs); err != nil {
		t.Errorf("statfs: %v", err)
	}
}

func createErr(name string) error {
	f, err := os.Create(name)
	if err == nil {
		f.Close()
	}
	return err
}

// otherThread returns a thread of pid other than its leader (every Go
// helper has several).
func otherThread(t *testing.T, pid int) int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if tid, _ := strconv.Atoi(e.Name()); tid != pid && tid > 0 {
			return tid
		}
	}
	t.Fatalf("pid %d has no second thread", pid)
	return 0
}

func TestSecondMountFails(t *testing.T) {
	f := mountT(t, nil)
	_, err := Mount(f.Dir(), &Options{Log: testLogger(t)})
	if !errors.Is(err, ErrMounted) || !strings.Contains(err.Error(), f.Dir()) {
		t.Fatalf("second Mount on %s: %v, want ErrMounted naming the directory", f.Dir(), err)
	}
	t.Log(err)
	// The first mount still serves.
	if _, err := os.ReadDir(f.Dir()); err != nil {
		t.Errorf("first mount after the second failed: %v", err)
	}
}

func TestAccess(t *testing.T) {
	h, _, _ := startHolder(t)
	t.Run("owner only", func(t *testing.T) {
		f := mountT(t, nil)
		for _, args := range [][]string{{"ls", f.Dir()}, {"cat", path(f, h.PID)}} {
			_, errs, code := run(t, nobody, "", args[0], args[1:]...)
			if code == 0 || !strings.Contains(errs, "Permission denied") {
				t.Errorf("%v as nobody without allow_other: exit %d, %q; want Permission denied", args, code, errs)
			}
		}
		if _, errs, code := run(t, nil, "", "cat", path(f, h.PID)); code != 0 {
			t.Errorf("cat as root: exit %d, %s", code, errs)
		}
	})
	// Let in, a user reads the lists of the processes it may ptrace-read
	// (its own), not root's.
	t.Run("allow other", func(t *testing.T) {
		f := mountT(t, &Options{AllowOther: true})
		_, errs, code := run(t, nobody, "", "cat", path(f, h.PID))
		if code == 0 || !strings.Contains(errs, "Permission denied") {
			t.Errorf("cat of root's process as nobody with allow_other: exit %d, %q; want Permission denied", code, errs)
		}
		mine := sleeper(t, nobody)
		out, errs, code := run(t, nobody, "", "cat", path(f, mine))
		if code != 0 || out != listText(t, f, mine) {
			t.Errorf("cat of its own process as nobody with allow_other: exit %d, %q, %q; want %q", code, out, errs, listText(t, f, mine))
		}
		if _, errs, code := run(t, nil, "", "cat", path(f, h.PID)); code != 0 {
			t.Errorf("cat as root: exit %d, %s", code, errs)
		}
	})
}

func TestUnmountBusy(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	f, err := Mount(dir, &Options{Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	mountsMu.Lock()
	mounts = append(mounts, f.Dir())
	mountsMu.Unlock()
	// A process whose working directory is inside keeps the mount busy.
	sleeper := exec1(t, f.Dir(), "sleep", "1000")
	err = f.Unmount()
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("Unmount of a busy mount: %v, want ErrBusy", err)
	}
	t.Log(err)
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if _, _, ok := mountAt(mi, f.Dir()); ok {
		t.Errorf("%s still in mountinfo after the lazy unmount", f.Dir())
	}
	sleeper.Process.Kill()
	sleeper.Wait()
	waitDone(t, f)
	if err2 := f.Unmount(); err2 != err {
		t.Errorf("second Unmount = %v, want the first's result", err2)
	}
}

// TestVisibleFromGone: a process reaped while its file is being opened
// (after the opener's credentials were taken, before its namespace was
// compared) is gone, ENOENT to the opener as for any exit, never a
// refusal: CI once saw EACCES there while readers raced exits.
func TestVisibleFromGone(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	ns, err := os.Open("/proc/self/ns/pid")
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if _, err := visibleFrom(ns, cmd.Process.Pid); !errors.Is(err, ErrNoProcess) {
		t.Errorf("visibleFrom of reaped pid %d: %v, want ErrNoProcess", cmd.Process.Pid, err)
	}
	if ok, err := visibleFrom(ns, os.Getpid()); !ok || err != nil {
		t.Errorf("visibleFrom of this process: %v, %v; want true", ok, err)
	}
}

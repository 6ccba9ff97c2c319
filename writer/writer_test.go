//go:build amd64 || arm64

// The writer injects into other processes on x86-64 and arm64 (package inject).

package writer_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/semundo/semundo/inject"
	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/procfs"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/internal/testreader"
	"github.com/semundo/semundo/reader"
	"github.com/semundo/semundo/sysvsem"
	"github.com/semundo/semundo/undo"
	"github.com/semundo/semundo/writer"
	"golang.org/x/sys/unix"
)

// openReader returns the reader shared by the tests.
func openReader(tb testing.TB) *reader.Reader { return testreader.Open(tb) }

// proc is a running C target (testdata/target.c).
type proc struct {
	pid   int
	stdin io.WriteCloser
	out   *bufio.Reader
	cmd   *exec.Cmd
}

var targetOnce sync.Once

// startTarget runs testdata/target.c in a mode and waits for "ready". It is
// killed and reaped at cleanup.
func startTarget(t *testing.T, args ...string) *proc {
	t.Helper()
	targetOnce.Do(func() {
		src, err := os.ReadFile("testdata/target.c")
		if err != nil {
			t.Fatal(err)
		}
		targetBin = testenv.BuildC(t, "target", string(src))
		// BuildC's directory belongs to this test: keep a copy for the rest.
		dst, err := os.CreateTemp("", "semundo-target")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(targetBin)
		dst.Write(b)
		dst.Chmod(0o755)
		dst.Close()
		targetBin = dst.Name()
	})
	if targetBin == "" {
		t.Fatal("target program not built")
	}
	cmd := exec.Command(targetBin, args...)
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{pid: cmd.Process.Pid, stdin: stdin, out: bufio.NewReader(stdout), cmd: cmd}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	if line := p.line(t); line != "ready" {
		t.Fatalf("target %v said %q", args, line)
	}
	return p
}

func (p *proc) line(t *testing.T) string {
	t.Helper()
	type res struct {
		s   string
		err error
	}
	ch := make(chan res, 1)
	go func() { s, err := p.out.ReadString('\n'); ch <- res{s, err} }()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("target output: %v", r.err)
		}
		return strings.TrimSpace(r.s)
	case <-time.After(testenv.Patience):
		p.cmd.Process.Kill()
		t.Fatalf("target %d said nothing for %v (killed)", p.pid, testenv.Patience)
	}
	return ""
}

// kill ends the target and waits, so the kernel has applied its list.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	p.cmd.Process.Kill()
	p.cmd.Wait()
}

// set is a fixture: a set with initial values.
type set struct {
	id   int
	vals []uint16
}

func newSet(t *testing.T, vals ...uint16) set {
	t.Helper()
	id := holder.NewSet(t, len(vals))
	if err := sysvsem.SetAll(id, vals); err != nil {
		t.Fatal(err)
	}
	return set{id: id, vals: vals}
}

// afterExit checks that the values equal what the kernel's exit
// adjustment of adj gives: value + adj, clamped to [0, 32767].
func (s set) afterExit(t *testing.T, adj []int16) {
	t.Helper()
	got, err := sysvsem.GetAll(s.id)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range s.vals {
		want := min(max(int(v)+int(adj[i]), 0), 32767)
		if int(got[i]) != want {
			t.Errorf("set %d sem %d after exit: %d, want %d (value %d, adjustment %d)", s.id, i, got[i], want, v, adj[i])
		}
	}
}

// values checks that the set still holds its initial values.
func (s set) unchanged(t *testing.T) {
	t.Helper()
	got, err := sysvsem.GetAll(s.id)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range s.vals {
		if got[i] != v {
			t.Errorf("set %d sem %d: value %d, want it unchanged at %d", s.id, i, got[i], v)
		}
	}
}

// listOf reads pid's entry for semid (nil when none).
func listOf(t *testing.T, r *reader.Reader, pid int, semid int) []int16 {
	t.Helper()
	l, err := r.Read(pid)
	if err != nil {
		t.Fatal(err)
	}
	if l == nil {
		return nil
	}
	if e := l.Entry(int32(semid)); e != nil {
		return e.Adj
	}
	return nil
}

func mustParse(t *testing.T, text string) undo.List {
	t.Helper()
	l, err := undo.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// TestSetTargets writes into each kind of target the issue names and
// checks that the list is exactly what was asked, that the target's own
// work is unharmed, and that its exit applies the list.
func TestSetTargets(t *testing.T) {
	r := openReader(t)
	for _, tc := range []struct {
		name  string
		args  []string
		after func(t *testing.T, p *proc, s set)
	}{
		{"nanosleep", []string{"sleep", "700"}, func(t *testing.T, p *proc, s set) {
			var ms int
			if _, err := fmt.Sscanf(p.line(t), "slept %d", &ms); err != nil || ms < 700 {
				t.Errorf("sleep of 700 ms lasted %d ms (%v)", ms, err)
			}
		}},
		{"pipe-read", []string{"read"}, func(t *testing.T, p *proc, s set) {
			io.WriteString(p.stdin, "hello\n")
			if got := p.line(t); got != "read 6 hello" {
				t.Errorf("read returned %q, want %q", got, "read 6 hello")
			}
		}},
		{"pause", []string{"pause"}, func(t *testing.T, p *proc, s set) {
			// A signal that came before pause() would leave it blocked.
			waitInSyscall(t, p.pid, nrPause)
			syscall.Kill(p.pid, syscall.SIGUSR1)
			if got := p.line(t); got != "woke" {
				t.Errorf("pause: %q", got)
			}
		}},
		{"spin", []string{"spin", "300000000"}, func(t *testing.T, p *proc, s set) {
			var want uint64
			for i := uint64(0); i < 300000000; i++ {
				want += i * i
			}
			if got := p.line(t); got != fmt.Sprintf("sum %d", want) {
				t.Errorf("spin: %q, want sum %d", got, want)
			}
		}},
		{"threads", []string{"threads", "6"}, func(t *testing.T, p *proc, s set) {
			// Every thread must go on counting after the write: on a busy
			// machine some get no CPU for a while, so ask until all have.
			io.WriteString(p.stdin, "mark\n")
			if got := p.line(t); got != "marked" {
				t.Fatalf("threads: %q, want marked", got)
			}
			var got string
			testenv.Eventually(t, "all 6 threads of the target to count after the write", func() bool {
				io.WriteString(p.stdin, "x\n")
				got = p.line(t)
				return got == "count 6"
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSet(t, 0, 5, 100, 32767, 2)
			p := startTarget(t, tc.args...)
			want := mustParse(t, fmt.Sprintf("%d 3 -5 -32768 32767 0\n", s.id))
			if err := writer.WriteProcess(r, p.pid, want, nil); err != nil {
				t.Fatal(err)
			}
			if got := listOf(t, r, p.pid, s.id); !equal(got, want[0].Adj) {
				t.Fatalf("list after set: %v, want %v", got, want[0].Adj)
			}
			s.unchanged(t)
			tc.after(t, p, s)
			p.kill(t)
			s.afterExit(t, want[0].Adj)
		})
	}
}

// waitInSyscall waits until pid's main thread is blocked in system call nr.
func waitInSyscall(t *testing.T, pid int, nr int) {
	t.Helper()
	testenv.Eventually(t, fmt.Sprintf("pid %d to block in system call %d", pid, nr), func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/syscall", pid))
		f := strings.Fields(string(b))
		return len(f) > 0 && f[0] == fmt.Sprint(nr)
	})
}

func equal(a, b []int16) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestSetBlockedOnSameSet: a target blocked in semop on the very set being
// written stays blocked, and completes when the set is posted.
func TestSetBlockedOnSameSet(t *testing.T) {
	r := openReader(t)
	s := newSet(t, 0, 9)
	p := startTarget(t, "semop", fmt.Sprint(s.id))
	waitNcnt(t, s.id, 1)
	want := mustParse(t, fmt.Sprintf("%d 0 -4\n", s.id))
	if err := writer.WriteProcess(r, p.pid, want, nil); err != nil {
		t.Fatal(err)
	}
	waitNcnt(t, s.id, 1)
	if err := sysvsem.Op(s.id, []sysvsem.Sembuf{{Num: 0, Op: 1}}); err != nil {
		t.Fatal(err)
	}
	if got := p.line(t); got != "got" {
		t.Fatalf("blocked semop: %q", got)
	}
	p.kill(t)
	s.vals[0] = 0 // the target took the 1 it was waiting for
	s.afterExit(t, want[0].Adj)
}

func waitNcnt(t *testing.T, semid, n int) {
	t.Helper()
	testenv.EventuallyErr(t, fmt.Sprintf("semncnt of set %d to become %d", semid, n), func() (bool, error) {
		c, err := sysvsem.GetNcnt(semid, 0)
		return c == n, err
	})
}

// TestSetGoTarget: a Go program with busy goroutines (the holder helper):
// their results stay right.
func TestSetGoTarget(t *testing.T) {
	r := openReader(t)
	s := newSet(t, 7, 7, 7)
	h := holder.Start(t, "busy", nil, nil)
	want := mustParse(t, fmt.Sprintf("%d -7 0 100\n", s.id))
	for i := 0; i < 5; i++ {
		if err := writer.WriteProcess(r, h.PID, want, nil); err != nil {
			t.Fatal(err)
		}
	}
	var sum uint64
	for i := uint64(0); i < 2e8; i++ {
		sum += i * i
	}
	for g := 0; g < 4; g++ {
		line, err := h.Out.ReadString('\n')
		if err != nil || strings.TrimSpace(line) != fmt.Sprintf("sum %d", sum) {
			t.Fatalf("goroutine result %q (%v), want sum %d", line, err, sum)
		}
	}
	h.Cmd.Process.Kill()
	h.Cmd.Wait()
	s.afterExit(t, want[0].Adj)
}

// TestAddOrUpdate: sets not listed keep their adjustments; a listed set
// takes exactly the given values, whatever it held.
func TestAddOrUpdate(t *testing.T) {
	r := openReader(t)
	a, b := newSet(t, 10, 10), newSet(t, 10)
	h := holder.Start(t, "wait", []holder.Op{
		{Semid: a.id, Num: 0, Val: 3, Undo: true}, {Semid: b.id, Num: 0, Val: 2, Undo: true},
	}, nil)
	want := mustParse(t, fmt.Sprintf("%d 4 -1\n", a.id))
	if err := writer.WriteProcess(r, h.PID, want, nil); err != nil {
		t.Fatal(err)
	}
	if got := listOf(t, r, h.PID, a.id); !equal(got, []int16{4, -1}) {
		t.Errorf("set %d: %v, want [4 -1]", a.id, got)
	}
	if got := listOf(t, r, h.PID, b.id); !equal(got, []int16{-2}) {
		t.Errorf("unlisted set %d: %v, want [-2] kept", b.id, got)
	}
}

// TestValidation: every refused write changes nothing.
func TestValidation(t *testing.T) {
	r := openReader(t)
	s := newSet(t, 3, 3)
	other := newSet(t, 1)
	h := holder.Start(t, "wait", []holder.Op{{Semid: s.id, Num: 1, Val: 1, Undo: true}}, nil)
	s.vals[1]++ // the helper's own op
	before := listOf(t, r, h.PID, s.id)

	gone := holder.NewSet(t, 1)
	sysvsem.Remove(gone)
	for _, tc := range []struct {
		name string
		text string
		err  error
	}{
		{"no such set", fmt.Sprintf("%d 1 1\n%d 5\n", s.id, gone), writer.ErrNoSet},
		{"too few values", fmt.Sprintf("%d 1\n", s.id), writer.ErrCount},
		{"too many values", fmt.Sprintf("%d 1 2 3\n", s.id), writer.ErrCount},
		{"second set wrong", fmt.Sprintf("%d 1 1\n%d 1 1\n", s.id, other.id), writer.ErrCount},
	} {
		err := writer.WriteProcess(r, h.PID, mustParse(t, tc.text), nil)
		if !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		}
		if got := listOf(t, r, h.PID, s.id); !equal(got, before) {
			t.Errorf("%s: list changed to %v from %v", tc.name, got, before)
		}
		if got := listOf(t, r, h.PID, other.id); got != nil {
			t.Errorf("%s: entry for %d created: %v", tc.name, other.id, got)
		}
		s.unchanged(t)
	}
	if err := writer.WriteProcess(r, 1<<30, mustParse(t, fmt.Sprintf("%d 1 1\n", s.id)), nil); !errors.Is(err, inject.ErrNoProcess) {
		t.Errorf("missing pid: %v, want inject.ErrNoProcess", err)
	}
}

// TestNoAlterPermission: a target that may not alter the set is refused
// before anything changes.
func TestNoAlterPermission(t *testing.T) {
	r := openReader(t)
	s := newSet(t, 1, 1)
	if err := sysvsem.SetPerm(s.id, 0, 0, 0o644); err != nil {
		t.Fatal(err)
	}
	h := holder.Start(t, "wait", nil, &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}})
	err := writer.WriteProcess(r, h.PID, mustParse(t, fmt.Sprintf("%d 1 0\n", s.id)), nil)
	if !errors.Is(err, writer.ErrPermission) {
		t.Fatalf("write into a target without alter permission: %v", err)
	}
	if got := listOf(t, r, h.PID, s.id); got != nil {
		t.Errorf("entry created: %v", got)
	}
	s.unchanged(t)
}

// TestCredsOfSeizedThread: the kernel judges an injected semop by the
// credentials of the thread that makes it, so the writer does too: here
// the zombie leader has given up root and the live threads that write
// have not, and a set only root may alter is written.
func TestCredsOfSeizedThread(t *testing.T) {
	r := openReader(t)
	s := newSet(t, 1, 1)
	if err := sysvsem.SetPerm(s.id, 0, 0, 0o600); err != nil {
		t.Fatal(err)
	}
	h := holder.Start(t, "leaderexit", nil, nil, holder.EnvLeaderUID+"=65534")
	testenv.Eventually(t, fmt.Sprintf("the main thread of %d to exit (state Z)", h.PID), func() bool {
		st, err := procfs.NewDefaultFS().Stat(h.PID)
		return err == nil && st.State == 'Z'
	})
	if st, err := procfs.NewDefaultFS().Status(h.PID); err != nil || st.UID[procfs.Effective] != 65534 {
		t.Fatalf("the zombie leader's status: %+v, %v; want euid 65534", st, err)
	}
	want := mustParse(t, fmt.Sprintf("%d -1 1\n", s.id))
	if err := writer.WriteProcess(r, h.PID, want, nil); err != nil {
		t.Fatalf("write into the root threads of a process whose leader left as uid 65534: %v", err)
	}
	if got := listOf(t, r, h.PID, s.id); !equal(got, want[0].Adj) {
		t.Errorf("list %v, want %v", got, want[0].Adj)
	}
	s.unchanged(t)
}

// TestNoIPCOwnerFromChildUserNamespace: root of a user namespace of its
// own (uid 100000 outside, every capability inside) that shares the
// host's IPC namespace holds no CAP_IPC_OWNER over its sets, and a set
// only host root may alter is refused before any call is injected.
func TestNoIPCOwnerFromChildUserNamespace(t *testing.T) {
	r := openReader(t)
	s := newSet(t, 1, 1)
	if err := sysvsem.SetPerm(s.id, 0, 0, 0o600); err != nil {
		t.Fatal(err)
	}
	h := holder.Start(t, "wait", nil, &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWUSER,
		// setuid(0) inside the new namespace: uid 100000 outside.
		Credential:  &syscall.Credential{Uid: 0, Gid: 0},
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 1}},
	})
	st, err := procfs.NewDefaultFS().Status(h.PID)
	if err != nil {
		t.Fatal(err)
	}
	if st.UID[procfs.Effective] != 100000 || st.CapEff&(1<<15) == 0 {
		t.Fatalf("target: euid %d, CapEff %#x; want 100000 and CAP_IPC_OWNER in its own user namespace", st.UID[procfs.Effective], st.CapEff)
	}
	injected := -1
	opts := &writer.Options{Stats: func(pid int, st inject.Stats) { injected = st.Injections }}
	err = writer.WriteProcess(r, h.PID, mustParse(t, fmt.Sprintf("%d 1 0\n", s.id)), opts)
	if !errors.Is(err, writer.ErrPermission) {
		t.Fatalf("write into a user namespace's root, set of the host's root with mode 0600: %v, want ErrPermission", err)
	}
	if injected > 0 {
		t.Errorf("%d calls injected before the refusal, want none", injected)
	}
	if got := listOf(t, r, h.PID, s.id); got != nil {
		t.Errorf("entry created: %v", got)
	}
	s.unchanged(t)
}

// TestValuesChangingDuringWrite: other processes keep moving the values;
// the write retries and ends exact, or fails cleanly.
func TestValuesChangingDuringWrite(t *testing.T) {
	r := openReader(t)
	s := newSet(t, 0, 0, 0, 0)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				// Up and down again, never with SEM_UNDO: no entry here.
				n := uint16(rand.IntN(4))
				sysvsem.Op(s.id, []sysvsem.Sembuf{{Num: n, Op: 5000, Flg: sysvsem.NoWait}})
				sysvsem.Op(s.id, []sysvsem.Sembuf{{Num: n, Op: -5000, Flg: sysvsem.NoWait}})
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()
	ok := 0
	for i := 0; i < 30; i++ {
		h := holder.Start(t, "wait", nil, nil)
		want := mustParse(t, fmt.Sprintf("%d %d -20000 32767 -32768\n", s.id, i))
		err := writer.WriteProcess(r, h.PID, want, nil)
		switch {
		case err == nil:
			ok++
			if got := listOf(t, r, h.PID, s.id); !equal(got, want[0].Adj) {
				t.Fatalf("try %d: list %v, want %v", i, got, want[0].Adj)
			}
		case errors.Is(err, writer.ErrBusy):
			if got := listOf(t, r, h.PID, s.id); got != nil && !equal(got, make([]int16, 4)) {
				t.Fatalf("try %d: failed write left %v", i, got)
			}
		default:
			t.Fatalf("try %d: %v", i, err)
		}
		h.Cmd.Process.Kill()
		h.Cmd.Wait()
	}
	t.Logf("%d of 30 writes succeeded while values moved", ok)
	if ok == 0 {
		t.Fatal("no write succeeded")
	}
}

// TestTargetExitsDuringWrite: targets killed at random moments of a
// write: an error or a complete write, never a panic or a hang.
func TestTargetExitsDuringWrite(t *testing.T) {
	r := openReader(t)
	s := newSet(t, 50, 50)
	want := mustParse(t, fmt.Sprintf("%d 9 -9\n", s.id))
	done, failed := 0, 0
	for i := 0; i < 40; i++ {
		h := holder.Start(t, "wait", nil, nil)
		go func() {
			time.Sleep(time.Duration(rand.IntN(3000)) * time.Microsecond)
			h.Cmd.Process.Kill()
		}()
		err := writer.WriteProcess(r, h.PID, want, nil)
		h.Cmd.Wait()
		if err == nil {
			done++
		} else {
			failed++
		}
		// Dead now: whatever it held was applied; put the values back.
		if err := sysvsem.SetAll(s.id, s.vals); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d writes completed, %d failed as their target died", done, failed)
}

// TestWriteSelf: the calling process writes its own list (and keeps it
// until exit); here the test undoes it again before it exits.
func TestWriteSelf(t *testing.T) {
	r := openReader(t)
	s := newSet(t, 4, 4)
	cur := func() undo.List {
		l, err := r.Read(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		return l.Undo()
	}
	want := mustParse(t, fmt.Sprintf("%d -4 30000\n", s.id))
	if err := writer.WriteSelf(cur(), want, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Leave nothing for this test binary's exit to apply.
		writer.WriteSelf(cur(), mustParse(t, fmt.Sprintf("%d 0 0\n", s.id)), nil)
	})
	if got := listOf(t, r, os.Getpid(), s.id); !equal(got, want[0].Adj) {
		t.Fatalf("own list %v, want %v", got, want[0].Adj)
	}
	s.unchanged(t)
}

// TestUnprivilegedInject: an unprivileged user can write into its own
// processes and not into root's. The injection runs as that user, with the
// current list handed over, as the file system's write path does it.
func TestUnprivilegedInject(t *testing.T) {
	r := openReader(t)
	bin := testenv.BuildGo(t, "github.com/semundo/semundo/cmd/semundo")
	// t.TempDir makes two levels, both private to root.
	os.Chmod(dirOf(bin), 0o755)
	os.Chmod(dirOf(dirOf(bin)), 0o755)
	s := newSet(t, 2, 2)
	if err := sysvsem.SetPerm(s.id, 0, 0, 0o666); err != nil {
		t.Fatal(err)
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	own := holder.Start(t, "wait", nil, &syscall.SysProcAttr{Credential: nobody})
	roots := holder.Start(t, "wait", nil, nil)
	run := func(pid int) int {
		cmd := exec.Command(bin, "__inject")
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: nobody}
		cmd.Stdin = strings.NewReader(fmt.Sprintf(`{"pid": %d, "current": "", "want": "%d 1 -1\n"}`, pid, s.id))
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("run __inject as nobody: %v", err)
		}
		t.Logf("__inject %d as nobody: exit %d %s", pid, code, out)
		return code
	}
	if code := run(own.PID); code != 0 {
		t.Fatalf("nobody writing its own process: exit %d", code)
	}
	if got := listOf(t, r, own.PID, s.id); !equal(got, []int16{1, -1}) {
		t.Errorf("own process list %v, want [1 -1]", got)
	}
	if code := run(roots.PID); code != 3 {
		t.Fatalf("nobody writing root's process: exit %d, want 3 (permission)", code)
	}
	if got := listOf(t, r, roots.PID, s.id); got != nil {
		t.Errorf("root's process got %v", got)
	}
	s.unchanged(t)
}

func dirOf(p string) string { return p[:strings.LastIndexByte(p, '/')] }

// TestSetOtherNamespace: a target in its own IPC namespace is written with
// its own sets (read inside it), even where the caller's namespace has a
// set of the same id; a value at SEMVMX forces the plan to read the values.
func TestSetOtherNamespace(t *testing.T) {
	r := openReader(t)
	mine := newSet(t, 1)
	h := holder.StartNS(t, mine.id, 3, []holder.Op{{Semid: -1, Num: 0, Val: 32767}})
	if h.Child != mine.id {
		t.Fatalf("set in the new namespace got id %d, want %d", h.Child, mine.id)
	}
	want := mustParse(t, fmt.Sprintf("%d -5 7 -32768\n", h.Child))
	var injected int
	opts := &writer.Options{Stats: func(pid int, st inject.Stats) { injected = st.Injections - st.MemoryCalls }}
	if err := writer.WriteProcess(r, h.PID, want, opts); err != nil {
		t.Fatal(err)
	}
	// The set checks (IPC_STAT, GETALL) ran in the target's namespace from
	// here: injected are only the semop calls (the first plan, which
	// SEMVMX defeats, and the one after the values were read), besides
	// the mapping of a page for their operations where the padding after
	// the injector's stub has no room (the arm64 test binary's last text
	// page, in some builds).
	if injected != 2 {
		t.Errorf("%d calls injected besides mmap and munmap, want 2 semop: the set checks were injected", injected)
	}
	if got := listOf(t, r, h.PID, h.Child); !equal(got, want[0].Adj) {
		t.Fatalf("list %v, want %v", got, want[0].Adj)
	}
	mine.unchanged(t)
	// A list for the caller's set of the same id has the wrong size there.
	if err := writer.WriteProcess(r, h.PID, mustParse(t, fmt.Sprintf("%d 1\n", h.Child)), nil); !errors.Is(err, writer.ErrCount) {
		t.Fatalf("one value for the 3-semaphore set in the target's namespace: %v", err)
	}
}

// TestInjectAllReportsPartial: when one of several parallel writes fails,
// the others are done or never started, each failure is named, and the
// error lists which processes were written; the failed target keeps its
// list.
func TestInjectAllReportsPartial(t *testing.T) {
	r := openReader(t)
	s := newSet(t, 0, 0)
	var jobs []writer.Job
	pids := map[int]bool{}
	for i := range 6 {
		p := startTarget(t, "pause")
		pids[p.pid] = true
		want := mustParse(t, fmt.Sprintf("%d %d 1\n", s.id, i+1))
		if i == 3 {
			want = mustParse(t, fmt.Sprintf("%d %d\n", s.id, i+1)) // one value for two semaphores
		}
		jobs = append(jobs, writer.Job{PID: p.pid, Want: want})
	}
	err := writer.InjectAll(jobs, &writer.Options{Parallel: 3})
	if !errors.Is(err, writer.ErrCount) {
		t.Fatalf("InjectAll with a bad list: %v, want ErrCount", err)
	}
	if !strings.Contains(err.Error(), "written: ") || !strings.Contains(err.Error(), "not tried: ") {
		t.Errorf("error %q does not say which processes were written", err)
	}
	written := 0
	for i, j := range jobs {
		got := listOf(t, r, j.PID, s.id)
		mentioned := strings.Contains(err.Error(), fmt.Sprint(j.PID))
		switch {
		case i == 3:
			if got != nil {
				t.Errorf("the failed target %d holds %v, want no entry", j.PID, got)
			}
		case got == nil:
			if !mentioned {
				t.Errorf("pid %d was not written and the error %q does not name it", j.PID, err)
			}
		case !equal(got, j.Want[0].Adj):
			t.Errorf("pid %d holds %v, want %v or nothing", j.PID, got, j.Want[0].Adj)
		default:
			written++
			if !mentioned {
				t.Errorf("pid %d was written and the error %q does not name it", j.PID, err)
			}
		}
	}
	s.unchanged(t)
	t.Logf("%d of the 5 good targets written before the failure stopped the rest", written)
}

// TestInjectAllParallel: targets in six IPC namespaces, each with a set of
// the same id as the caller's but its own size, are written at once: each
// write reads its target's namespace, and afterwards the caller's threads
// all still see the caller's set (no thread that joined a namespace went
// back to running other goroutines).
func TestInjectAllParallel(t *testing.T) {
	r := openReader(t)
	mine := newSet(t, 1)
	var before unix.Stat_t
	if err := unix.Stat("/proc/self/ns/ipc", &before); err != nil {
		t.Fatal(err)
	}
	var jobs []writer.Job
	for i := range 6 {
		h := holder.StartNS(t, mine.id, i+2, nil)
		if h.Child != mine.id {
			t.Fatalf("set in the new namespace got id %d, want %d", h.Child, mine.id)
		}
		adj := make([]string, i+2)
		for k := range adj {
			adj[k] = fmt.Sprint(k - i)
		}
		jobs = append(jobs, writer.Job{PID: h.PID, Want: mustParse(t, fmt.Sprintf("%d %s\n", h.Child, strings.Join(adj, " ")))})
	}
	var mu sync.Mutex
	injected, selfStops := map[int]int{}, map[int]int{}
	opts := &writer.Options{Parallel: 3, Stats: func(pid int, st inject.Stats) {
		mu.Lock()
		injected[pid], selfStops[pid] = st.Injections-st.MemoryCalls, st.SelfStops
		mu.Unlock()
	}}
	if err := writer.InjectAll(jobs, opts); err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		// One semop (all values are 0, as the first plan assumes), its
		// operations after the injector's stub or in a page mapped for
		// them; the checks from here.
		if injected[j.PID] != 1 {
			t.Errorf("pid %d: %d calls injected besides mmap and munmap, want 1 semop", j.PID, injected[j.PID])
		}
		// These holders ignore SIGWINCH: on x86-64 the call ends in the
		// stub's own stop (inject's self-stop), on every kernel of the
		// matrix too.
		if want := map[string]int{"amd64": 1}[runtime.GOARCH]; selfStops[j.PID] != want {
			t.Errorf("pid %d: %d calls ended in the self-stop, want %d on %s", j.PID, selfStops[j.PID], want, runtime.GOARCH)
		}
		if got := listOf(t, r, j.PID, mine.id); !equal(got, j.Want[0].Adj) {
			t.Errorf("pid %d holds %v, want %v", j.PID, got, j.Want[0].Adj)
		}
	}
	// /proc/self is the main thread.
	var after unix.Stat_t
	if err := unix.Stat("/proc/self/ns/ipc", &after); err != nil || after.Ino != before.Ino {
		t.Errorf("the main thread's IPC namespace is %d after the writes, was %d (%v)", after.Ino, before.Ino, err)
	}
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ds, err := sysvsem.Stat(mine.id)
			if err != nil || ds.Nsems != 1 {
				t.Errorf("set %d seen from a thread of the caller: %d semaphores, %v; want the caller's set of 1", mine.id, ds.Nsems, err)
			}
		}()
	}
	wg.Wait()
	mine.unchanged(t)
}

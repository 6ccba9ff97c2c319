//go:build amd64

package main

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/internal/testreader"
	"github.com/semundo/semundo/undo"
)

// spinTarget is a C process that computes the same sum again and again and
// prints each result: wrong registers or memory after an injection show up
// as a wrong sum, or as the process dying.
type spinTarget struct {
	cmd  *exec.Cmd
	pid  int
	bad  atomic.Int32
	sums atomic.Int32
	done chan struct{}
}

const spinN = 3000000

func startSpinTarget(t *testing.T) *spinTarget {
	t.Helper()
	src, err := os.ReadFile("../../writer/testdata/target.c")
	if err != nil {
		t.Fatal(err)
	}
	bin := testenv.BuildC(t, "target", string(src))
	var want uint64
	for i := uint64(0); i < spinN; i++ {
		want += i * i
	}
	cmd := exec.Command(bin, "spinloop", fmt.Sprint(spinN))
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &spinTarget{cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); <-s.done })
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" {
		t.Fatalf("target: %q", sc.Text())
	}
	go func() {
		defer close(s.done)
		for sc.Scan() {
			if sc.Text() != fmt.Sprintf("sum %d", want) {
				s.bad.Add(1)
			}
			s.sums.Add(1)
		}
	}()
	return s
}

// alive reports whether the target still runs (not dead, not a zombie).
func (s *spinTarget) alive() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.pid))
	return err == nil && !strings.Contains(string(b), ") Z ")
}

// reapInjectors waits for the `semundo __inject` children that outlived a
// killed semundo: this test process is a child subreaper (holder.Main), so
// when semundo died they became its children. Every child but the target
// is one (maybe not yet exec'd).
func reapInjectors(t *testing.T, target int) {
	t.Helper()
	self := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == target {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 2 || f[1] != strconv.Itoa(self) {
			continue
		}
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err == nil && ws != 0 {
			t.Logf("injector %d: exit %d, signal %v", pid, ws.ExitStatus(), ws.Signal())
		}
	}
}

// untraced waits until nothing traces pid any more: the injection child,
// which outlives a killed semundo, has finished.
func untraced(t *testing.T, pid int) {
	t.Helper()
	testenv.Eventually(t, fmt.Sprintf("pid %d to be traced no more (the injection child to finish)", pid), func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		return err != nil || strings.Contains(string(b), "TracerPid:\t0\n")
	})
}

func entryOf(t *testing.T, pid, semid int) string {
	t.Helper()
	l, err := testreader.Open(t).Read(pid)
	if err != nil {
		t.Fatal(err)
	}
	if e := l.Entry(int32(semid)); e != nil {
		b, _ := undo.Marshal(undo.List{{Semid: e.Semid, Adj: e.Adj}})
		return string(b)
	}
	return ""
}

// TestKillDuringSet kills `semundo set` at random moments, 500 times (50
// with -short): the target lives on, computes right, and its list is either
// as before or fully written. The injection runs in a child of its own
// session, which completes when the command dies.
func TestKillDuringSet(t *testing.T) {
	testenv.RequireRoot(t)
	trials := 500
	if testing.Short() {
		trials = 50
	}
	s := holder.NewSet(t, 4)
	target := startSpinTarget(t)
	lists := [2]string{fmt.Sprintf("%d 1 -2 3 -4\n", s), fmt.Sprintf("%d -100 200 0 7\n", s)}
	// One write to the end tells how long a write takes: the kills land
	// anywhere in that time.
	t0 := time.Now()
	first := exec.Command(binary, "set", fmt.Sprint(target.pid), "-")
	first.Stdin = strings.NewReader(lists[1])
	if out, err := testenv.CombinedOutput(t, first, "semundo __inject"); err != nil {
		t.Fatalf("set: %v: %s", err, out)
	}
	span := time.Since(t0)
	before := lists[1]
	outcomes := map[string]int{}
	for i := 0; i < trials; i++ {
		want := lists[i%2]
		cmd := exec.Command(binary, "set", fmt.Sprint(target.pid), "-")
		cmd.Stdin = strings.NewReader(want)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rand.Int64N(int64(span))))
		cmd.Process.Signal(syscall.SIGKILL)
		err := cmd.Wait()
		reapInjectors(t, target.pid)
		untraced(t, target.pid)
		if !target.alive() {
			t.Fatalf("trial %d: target died", i)
		}
		got := entryOf(t, target.pid, s)
		switch got {
		case want:
			outcomes["written"]++
		case before:
			outcomes["untouched"]++
		default:
			t.Fatalf("trial %d: list %q is neither the old %q nor the new %q", i, got, before, want)
		}
		if err == nil {
			outcomes["finished before the kill"]++
		}
		before = got
	}
	// Let the target print a few more sums, then check them all.
	n := target.sums.Load()
	testenv.Eventually(t, fmt.Sprintf("spin target %d to print 3 more sums", target.pid), func() bool { return target.sums.Load() >= n+3 })
	if b := target.bad.Load(); b != 0 {
		t.Fatalf("%d of %d sums were wrong", b, target.sums.Load())
	}
	t.Logf("%d trials, kills within %v: %v; the target printed %d right sums", trials, span, outcomes, target.sums.Load())
	if outcomes["written"] == 0 || outcomes["untouched"] == 0 {
		t.Fatalf("the kills did not land both before and after the write: %v", outcomes)
	}
}

// TestKillDuringRestore kills `semundo restore --undo` at random moments,
// 200 times (30 with -short): the target lives on, computes right, and its
// list is the one before or the one in the image, never part of it.
func TestKillDuringRestore(t *testing.T) {
	testenv.RequireRoot(t)
	trials := 500
	if testing.Short() {
		trials = 30
	}
	a, b := holder.NewSet(t, 3), holder.NewSet(t, 2)
	target := startSpinTarget(t)
	dir := t.TempDir()
	// Two images of one process's list: restoring them in turn into the
	// target alternates its list between the two.
	var images [2]string
	var lists [2]string
	for i, vals := range [2][2]int16{{5, 6}, {1, 9}} {
		h := holder.Start(t, "wait", []holder.Op{
			{Semid: a, Num: 0, Val: vals[0], Undo: true}, {Semid: b, Num: 1, Val: vals[1], Undo: true},
		}, nil)
		images[i] = filepath.Join(dir, fmt.Sprintf("img%d.json", i))
		if out, errs, code := semundo(t, nil, "checkpoint", "-o", images[i], fmt.Sprint(h.PID)); code != 0 {
			t.Fatalf("checkpoint: %d %s %s", code, out, errs)
		}
		lists[i] = fmt.Sprintf("%d %d 0 0\n%d 0 %d\n", a, -vals[0], b, -vals[1])
		restore := func() (time.Duration, error) {
			t0 := time.Now()
			cmd := exec.Command(binary, "restore", images[i], "--undo", "--pid", fmt.Sprintf("%d=%d", h.PID, target.pid))
			out, err := testenv.CombinedOutput(t, cmd, "semundo restore --undo")
			if err != nil {
				return 0, fmt.Errorf("%v: %s", err, out)
			}
			return time.Since(t0), nil
		}
		if i == 1 {
			// The last write of the setup: the target holds lists[1].
			if _, err := restore(); err != nil {
				t.Fatal(err)
			}
		}
		h.Stop()
	}
	got := func() string {
		return entryOf(t, target.pid, a) + entryOf(t, target.pid, b)
	}
	if g := got(); g != lists[1] {
		t.Fatalf("after the setup restore the target holds %q, want %q", g, lists[1])
	}
	// A restore to the end, timed: the kills land anywhere in that time.
	t0 := time.Now()
	if out, err := testenv.CombinedOutput(t, exec.Command(binary, "restore", images[0], "--undo", "--pid", fmt.Sprintf("%d=%d", imagePID(t, images[0]), target.pid)), "semundo restore --undo"); err != nil {
		t.Fatalf("restore: %v: %s", err, out)
	}
	span := time.Since(t0)
	before := lists[0]
	outcomes := map[string]int{}
	for i := 0; i < trials; i++ {
		k := (i + 1) % 2
		cmd := exec.Command(binary, "restore", images[k], "--undo", "--pid", fmt.Sprintf("%d=%d", imagePID(t, images[k]), target.pid))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rand.Int64N(int64(span))))
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		reapInjectors(t, target.pid)
		untraced(t, target.pid)
		if !target.alive() {
			t.Fatalf("trial %d: target died", i)
		}
		g := got()
		switch g {
		case lists[k]:
			outcomes["written"]++
		case before:
			outcomes["untouched"]++
		default:
			t.Fatalf("trial %d: list %q is neither the old %q nor the new %q", i, g, before, lists[k])
		}
		before = g
	}
	if bad := target.bad.Load(); bad != 0 {
		t.Fatalf("%d of %d sums were wrong", bad, target.sums.Load())
	}
	t.Logf("%d trials, kills within %v: %v", trials, span, outcomes)
	if outcomes["written"] == 0 || outcomes["untouched"] == 0 {
		t.Fatalf("the kills did not land both before and after the write: %v", outcomes)
	}
}

// imagePID is the pid of the first list's first process in an image.
func imagePID(t *testing.T, path string) int {
	t.Helper()
	img, err := image.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range img.Lists {
		if len(l.Entries) > 0 {
			return int(l.Processes[0].PID)
		}
	}
	t.Fatalf("%s has no list with entries", path)
	return 0
}

// TestKillInjectorWindow measures the window that stays open: killing the
// injecting process itself (`semundo __inject`, which `set` and `restore`
// keep out of reach of a kill of semundo) at random moments. A kill while
// an injected system call is in flight leaves the target to resume with
// the injection's registers. The test asserts that no list is ever half
// written and that at most a quarter of the targets were harmed (see
// maxHarmed); docs/reliability.md records the figures.
func TestKillInjectorWindow(t *testing.T) {
	testenv.RequireRoot(t)
	trials := 200
	if testing.Short() {
		trials = 20
	}
	s := holder.NewSet(t, 4)
	lists := [2]string{fmt.Sprintf("%d 1 -2 3 -4\n", s), fmt.Sprintf("%d -100 200 0 7\n", s)}
	target := startSpinTarget(t)
	request := func(cur, want string) string {
		return fmt.Sprintf(`{"pid": %d, "current": %q, "want": %q}`, target.pid, cur, want)
	}
	// Timing: one injection to the end.
	t0 := time.Now()
	first := exec.Command(binary, "__inject")
	first.Stdin = strings.NewReader(request("", lists[1]))
	if out, err := testenv.CombinedOutput(t, first, "semundo __inject"); err != nil {
		t.Fatalf("__inject: %v: %s", err, out)
	}
	span := time.Since(t0)
	before := lists[1]
	harmed, written, untouched := 0, 0, 0
	for i := 0; i < trials; i++ {
		want := lists[i%2]
		cmd := exec.Command(binary, "__inject")
		cmd.Stdin = strings.NewReader(request(before, want))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rand.Int64N(int64(span))))
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		untraced(t, target.pid)
		// A harmed target shows it in the sum it was computing or the
		// next: it prints a wrong one, dies, or never prints again.
		n := target.sums.Load()
		progressed := testenv.Until(testenv.Patience, func() bool { return target.sums.Load() >= n+2 || !target.alive() })
		if !progressed || !target.alive() || target.bad.Load() != 0 {
			harmed++
			t.Logf("trial %d: target harmed (alive %v, wrong sums %d, printed %d sums after the kill)", i, target.alive(), target.bad.Load(), target.sums.Load()-n)
			target = startSpinTarget(t)
			before = ""
			continue
		}
		got := entryOf(t, target.pid, s)
		switch got {
		case want:
			written++
		case before:
			untouched++
		default:
			t.Fatalf("trial %d: list %q is neither the old %q nor the new %q", i, got, before, want)
		}
		before = got
	}
	t.Logf("%d kills of the injector within %v: %d written, %d untouched, %d targets harmed", trials, span, written, untouched, harmed)
	// The window is known and not closed yet (docs/reliability.md): runs
	// of 200 kills harmed 9 to 23 targets (4.5-11.5%). The bound is there
	// to catch the window growing, not to pass judgement on it: a quarter
	// of the trials is twice the worst rate seen, and a rate of 11.5%
	// exceeds it in 200 trials with a probability of 3e-8. With -short's
	// 20 trials a quarter (5) would be passed by chance 2% of the time,
	// hence the floor of 7 (0.02%).
	if maxHarmed := max(trials/4, 7); harmed > maxHarmed {
		t.Fatalf("%d of %d kills of the injector harmed the target, more than the bound of %d: the window of a kill during an injected system call has grown", harmed, trials, maxHarmed)
	}
}

//go:build amd64

package main

import (
	"bufio"
	"fmt"
	"io"
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
	"github.com/semundo/semundo/sysvsem"
	"github.com/semundo/semundo/undo"
)

const spinN = 3000000

// targetBin builds writer/testdata/target.c, the C process the fault tests
// write into.
func targetBin(t *testing.T) string {
	t.Helper()
	src, err := os.ReadFile("../../writer/testdata/target.c")
	if err != nil {
		t.Fatal(err)
	}
	return testenv.BuildC(t, "target", string(src), "-pthread")
}

// startSpinTarget runs target.c's spinloop: it computes the same sum again
// and again and prints each result, so wrong registers or memory after an
// injection show up as a wrong sum (counted in wrong), or as the process
// dying.
func startSpinTarget(t *testing.T) *faultTarget {
	t.Helper()
	return startFaultTarget(t, targetBin(t), &faultKind{args: []string{"spinloop", fmt.Sprint(spinN)}, check: checkSpinner})
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
	n := target.count.Load()
	testenv.Eventually(t, fmt.Sprintf("spin target %d to print 3 more sums", target.pid), func() bool { return target.count.Load() >= n+3 })
	if b := target.wrong.Load(); b != 0 {
		t.Fatalf("%d of %d sums were wrong", b, target.count.Load())
	}
	t.Logf("%d trials, kills within %v: %v; the target printed %d right sums", trials, span, outcomes, target.count.Load())
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
	if bad := target.wrong.Load(); bad != 0 {
		t.Fatalf("%d of %d sums were wrong", bad, target.count.Load())
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

// TestKillInjectorWindow kills the injecting process itself (`semundo
// __inject`) at uniformly random moments of its life, 1,000 times (40 with
// -short), against four kinds of target in turn: a spinner in user space,
// a thread in nanosleep, one blocked in semop on the very set being
// written, and a multi-threaded process. Every target must go on as if
// nothing happened (right results, in order, on time) and every list be
// the old or the new one, never partial: the injector's stub restores a
// thread without the tracer (package inject).
func TestKillInjectorWindow(t *testing.T) {
	testenv.RequireRoot(t)
	trials := 1000
	if testing.Short() {
		trials = 40
	}
	s := holder.NewSet(t, 4)
	lists := [2]string{fmt.Sprintf("%d 1 -2 3 -4\n", s), fmt.Sprintf("%d -100 200 0 7\n", s)}
	bin := targetBin(t)
	var eintrs atomic.Int64
	kinds := []faultKind{
		{name: "spinner", args: []string{"spinloop", fmt.Sprint(spinN)}, check: checkSpinner, probe: func(ft *faultTarget) string { return ft.progress(2) }},
		{name: "nanosleep", args: []string{"sleeploop", "2000"}, check: checkSleeper, probe: func(ft *faultTarget) string { return ft.progress(2) }},
		{name: "semop", args: []string{"semoploop", fmt.Sprint(s)}, check: checkSemop(&eintrs), probe: probeSemop(s)},
		{name: "threads", args: []string{"threads", "2"}, probe: probeThreads(2)},
	}
	request := func(pid int, cur, want string) string {
		return fmt.Sprintf(`{"pid": %d, "current": %q, "want": %q}`, pid, cur, want)
	}
	for i := range kinds {
		k := &kinds[i]
		k.target = startFaultTarget(t, bin, k)
		// The injector's life against this kind: one full run.
		t0 := time.Now()
		first := exec.Command(binary, "__inject")
		first.Stdin = strings.NewReader(request(k.target.pid, "", lists[1]))
		if out, err := testenv.CombinedOutput(t, first, "semundo __inject"); err != nil {
			t.Fatalf("%s: __inject: %v: %s", k.name, err, out)
		}
		k.span = time.Since(t0)
		k.before = lists[1]
		if why := k.probe(k.target); why != "" {
			t.Fatalf("%s: harmed by a full, unkilled write: %s", k.name, why)
		}
	}
	harmed := 0
	for i := 0; i < trials; i++ {
		k := &kinds[i%len(kinds)]
		want := lists[i/len(kinds)%2]
		cmd := exec.Command(binary, "__inject")
		cmd.Stdin = strings.NewReader(request(k.target.pid, k.before, want))
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rand.Int64N(int64(k.span))))
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		untraced(t, k.target.pid)
		if why := k.probe(k.target); why != "" {
			harmed++
			t.Errorf("trial %d (%s): target harmed: %s", i, k.name, why)
			// Its replacement must not share the set's posts with it.
			k.target.proc.Kill()
			k.target = startFaultTarget(t, bin, k)
			k.before = ""
			continue
		}
		got := entryOf(t, k.target.pid, s)
		switch got {
		case want:
			k.written++
		case k.before:
			k.untouched++
		default:
			t.Fatalf("trial %d (%s): list %q is neither the old %q nor the new %q", i, k.name, got, k.before, want)
		}
		k.before = got
	}
	for _, k := range kinds {
		t.Logf("%s: injector's life %v; %d written, %d untouched", k.name, k.span, k.written, k.untouched)
	}
	t.Logf("%d kills of the injector: %d targets harmed; the semop target saw EINTR %d times", trials, harmed, eintrs.Load())
}

// faultKind is one kind of target of TestKillInjectorWindow.
type faultKind struct {
	name               string
	args               []string
	check              func() func(line string) string // per target: judges each line it prints, "" when right
	probe              func(*faultTarget) string       // "" when the target is right now, else what is wrong
	target             *faultTarget
	span               time.Duration
	before             string
	written, untouched int
}

// faultTarget is a target.c process whose every output line is judged as
// it comes (a line is never lost), and kept for probes that converse.
type faultTarget struct {
	pid   int
	stdin io.Writer
	lines chan string // what it printed, while there is room
	count atomic.Int64
	gots  atomic.Int64           // semoploop: semaphores taken
	wrong atomic.Int64           // lines judged wrong
	bad   atomic.Pointer[string] // the first wrong line's story
	dead  chan struct{}          // closed when its output ends
	proc  *os.Process
}

func startFaultTarget(t *testing.T, bin string, k *faultKind) *faultTarget {
	t.Helper()
	cmd := exec.Command(bin, k.args...)
	out, _ := cmd.StdoutPipe()
	in, _ := cmd.StdinPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ft := &faultTarget{pid: cmd.Process.Pid, stdin: in, lines: make(chan string, 64), dead: make(chan struct{}), proc: cmd.Process}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); <-ft.dead })
	sc := bufio.NewScanner(out)
	if !sc.Scan() || sc.Text() != "ready" {
		t.Fatalf("%v: %q", k.args, sc.Text())
	}
	var check func(string) string
	if k.check != nil {
		check = k.check()
	}
	go func() {
		defer close(ft.dead)
		for sc.Scan() {
			l := sc.Text()
			if check != nil {
				if why := check(l); why != "" {
					ft.wrong.Add(1)
					ft.bad.CompareAndSwap(nil, &why)
				}
			}
			if l == "got" {
				ft.gots.Add(1)
			}
			ft.count.Add(1)
			select {
			case ft.lines <- l:
			default:
			}
		}
	}()
	return ft
}

// alive reports whether the target still runs (not dead, not a zombie).
func (ft *faultTarget) alive() bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", ft.pid))
	return err == nil && !strings.Contains(string(b), ") Z ")
}

// progress waits for n more lines, all judged right.
func (ft *faultTarget) progress(n int64) string { return ft.progressFrom(ft.count.Load(), n) }

// progressFrom waits until the target has printed from+n lines.
func (ft *faultTarget) progressFrom(from, n int64) string {
	deadline := time.After(testenv.Patience)
	for ft.count.Load() < from+n {
		select {
		case <-ft.dead:
			return "the process died"
		case <-deadline:
			return fmt.Sprintf("printed %d lines in %v, want %d", ft.count.Load()-from, testenv.Patience, n)
		case <-time.After(time.Millisecond):
		}
	}
	if p := ft.bad.Load(); p != nil {
		return *p
	}
	return ""
}

// next returns the target's next output line, or why there is none.
func (ft *faultTarget) next() (string, string) {
	select {
	case l := <-ft.lines:
		return l, ""
	case <-ft.dead:
		return "", "the process died"
	case <-time.After(testenv.Patience):
		return "", fmt.Sprintf("no output for %v", testenv.Patience)
	}
}

// drain forgets the lines kept so far.
func (ft *faultTarget) drain() {
	for {
		select {
		case <-ft.lines:
		default:
			return
		}
	}
}

// checkSpinner wants every sum right.
func checkSpinner() func(string) string {
	var want uint64
	for i := uint64(0); i < spinN; i++ {
		want += i * i
	}
	return func(l string) string {
		if l != fmt.Sprintf("sum %d", want) {
			return fmt.Sprintf("printed %q, want sum %d", l, want)
		}
		return ""
	}
}

// checkSleeper wants the sleeps counted without a gap: the count lives in
// a register across nanosleep.
func checkSleeper() func(string) string {
	var last uint64
	return func(l string) string {
		var i uint64
		if _, err := fmt.Sscanf(l, "ok %d", &i); err != nil {
			return fmt.Sprintf("printed %q", l)
		}
		if i != last+1 {
			return fmt.Sprintf("sleep %d followed sleep %d", i, last)
		}
		last = i
		return ""
	}
}

// checkSemop wants every semop to succeed, but for EINTR, which the
// ptrace stop itself causes (as any SIGSTOP does, signal(7)) and the
// injector undoes at once: a kill in the microseconds between leaves it.
// eintrs counts those.
func checkSemop(eintrs *atomic.Int64) func() func(string) string {
	return func() func(string) string {
		return func(l string) string {
			switch l {
			case "got":
			case "eintr":
				eintrs.Add(1)
			default:
				return fmt.Sprintf("printed %q, want got", l)
			}
			return ""
		}
	}
}

// probeSemop posts the semaphore the target waits for: it must take it.
func probeSemop(semid int) func(*faultTarget) string {
	return func(ft *faultTarget) string {
		from := ft.gots.Load()
		if err := sysvsem.Op(semid, []sysvsem.Sembuf{{Num: 0, Op: 1}}); err != nil {
			return fmt.Sprintf("posting set %d: %v", semid, err)
		}
		if !testenv.Until(testenv.Patience, func() bool {
			select {
			case <-ft.dead:
				return true
			default:
			}
			return ft.gots.Load() > from
		}) {
			return fmt.Sprintf("did not take the semaphore posted %v ago", testenv.Patience)
		}
		if ft.gots.Load() == from {
			return "the process died"
		}
		if p := ft.bad.Load(); p != nil {
			return *p
		}
		return ""
	}
}

// probeThreads wants every one of n threads to count on after a mark.
func probeThreads(n int) func(*faultTarget) string {
	return func(ft *faultTarget) string {
		ft.drain()
		say := func(what string) (string, string) {
			if _, err := io.WriteString(ft.stdin, what+"\n"); err != nil {
				return "", fmt.Sprintf("writing %q: %v", what, err)
			}
			return ft.next()
		}
		if l, why := say("mark"); why != "" || l != "marked" {
			return fmt.Sprintf("printed %q, want marked %s", l, why)
		}
		want := fmt.Sprintf("count %d", n)
		var l, why string
		// A live thread counts as soon as it gets a CPU again.
		for end := time.Now().Add(testenv.Patience); time.Now().Before(end); time.Sleep(5 * time.Millisecond) {
			if l, why = say("count"); why != "" || l == want {
				return why
			}
		}
		return fmt.Sprintf("printed %q for %v, want %q", l, testenv.Patience, want)
	}
}

package holder

import (
	"bufio"
	_ "embed"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/sysvsem"
)

//go:embed testdata/semwait.c
var semwaitSrc string

// semwaitExe caches the compiled semwait per test binary: compiling takes a
// second, and the binary does not change.
var semwaitExe struct {
	sync.Mutex
	path string
}

// semwaitDir holds the compiled semwait; Main removes it.
var semwaitDir string

// semwait returns the path of the compiled semwait program.
func semwait(t testing.TB) string {
	t.Helper()
	semwaitExe.Lock()
	defer semwaitExe.Unlock()
	if semwaitExe.path != "" {
		if _, err := os.Stat(semwaitExe.path); err == nil {
			return semwaitExe.path
		}
	}
	dir, err := os.MkdirTemp("", "semundo-semwait")
	if err != nil {
		t.Fatal(err)
	}
	semwaitDir = dir
	src := dir + "/semwait.c"
	exe := dir + "/semwait"
	if err := os.WriteFile(src, []byte(semwaitSrc), 0o644); err != nil {
		t.Fatal(err)
	}
	gcc := testenv.RequireTool(t, "gcc")
	if b, err := testenv.Command(t, "gcc semwait", gcc, "-O1", "-Wall", "-pthread", "-o", exe, src).CombinedOutput(); err != nil {
		t.Fatalf("gcc semwait: %v\n%s", err, b)
	}
	semwaitExe.path = exe
	return exe
}

// Waiter is a running semwait process (see semwait.c for its steps).
type Waiter struct {
	// Cmd is the running semwait.
	Cmd *exec.Cmd
	// PID is the process's pid.
	PID int
	// Semid is the set the process created (step new), or -1.
	Semid int
	// Out has the process's output after its last "ready" line.
	Out   *bufio.Reader
	stdin io.WriteCloser
}

// StartWaiter runs semwait with the steps given and waits until it says
// ready (at its first sync step, or after its last step). Its waits may
// still be on their way into the kernel: use BlockedOn to wait for them.
// The process is killed and reaped at cleanup.
func StartWaiter(t testing.TB, steps ...string) *Waiter {
	t.Helper()
	cmd := exec.Command(semwait(t), steps...)
	stdin, stdout := startPiped(t, cmd)
	w := &Waiter{Cmd: cmd, PID: cmd.Process.Pid, stdin: stdin, Out: bufio.NewReader(stdout)}
	t.Cleanup(func() { w.Kill() })
	w.ready(t)
	return w
}

// ready reads the next "ready ID" line.
func (w *Waiter) ready(t testing.TB) {
	t.Helper()
	line := make(chan string, 1)
	go func() {
		s, _ := w.Out.ReadString('\n')
		line <- s
	}()
	var s string
	select {
	case s = <-line:
	case <-time.After(testenv.Patience):
		w.Cmd.Process.Kill()
		t.Fatalf("semwait (pid %d) did not say ready within %v (killed)", w.PID, testenv.Patience)
	}
	if _, err := fmt.Sscanf(s, "ready %d", &w.Semid); err != nil {
		t.Fatalf("semwait (pid %d) said %q, not ready (exit: %v)", w.PID, s, w.Cmd.Wait())
	}
}

// Continue lets the process past its sync step and waits for the next
// ready.
func (w *Waiter) Continue(t testing.TB) {
	t.Helper()
	if _, err := io.WriteString(w.stdin, "go\n"); err != nil {
		t.Fatalf("semwait (pid %d): %v", w.PID, err)
	}
	w.ready(t)
}

// Kill kills the process and reaps it; it may be called more than once.
func (w *Waiter) Kill() {
	w.stdin.Close()
	w.Cmd.Process.Kill()
	w.Cmd.Wait()
}

// BlockedOn waits until semaphore num of semid has n tasks waiting to
// decrement it (zero false) or to see it zero (zero true), as the kernel
// counts them (GETNCNT, GETZCNT): the test's own view, independent of the
// BPF reader.
func BlockedOn(t testing.TB, semid, num, n int, zero bool) {
	t.Helper()
	get, what := sysvsem.GetNcnt, "to decrement"
	if zero {
		get, what = sysvsem.GetZcnt, "for zero"
	}
	testenv.EventuallyErr(t, fmt.Sprintf("%d tasks waiting %s on set %d semaphore %d", n, what, semid, num), func() (bool, error) {
		c, err := get(semid, num)
		return c >= n, err
	})
}

// NewSetVal creates a private set of n semaphores, each val, removed at
// cleanup.
func NewSetVal(t testing.TB, n, val int) int {
	t.Helper()
	id := NewSet(t, n)
	for i := range n {
		if err := sysvsem.SetVal(id, i, val); err != nil {
			t.Fatal(err)
		}
	}
	return id
}

// Steps formats semwait steps: Steps("hold:%d:0:-1", id) and the like.
func Steps(format string, args ...any) []string {
	return strings.Fields(fmt.Sprintf(format, args...))
}

package checkpoint_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/internal/testreader"
	"github.com/semundo/semundo/reader"
	"github.com/semundo/semundo/sysvsem"
	"github.com/semundo/semundo/undo"
	"golang.org/x/sys/unix"
)

// openReader returns the reader shared by the tests.
func openReader(tb testing.TB) *reader.Reader { return testreader.Open(tb) }

// requireNextID stops the test unless the kernel can give sets chosen ids.
func requireNextID(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/proc/sys/kernel/sem_next_id"); err != nil {
		testenv.Missing(t, "/proc/sys/kernel/sem_next_id", "a kernel built with CONFIG_CHECKPOINT_RESTORE")
	}
}

// runner is a running runner helper (runnerMain) in its own IPC namespace.
type runner struct {
	pid    int
	ns     uint64 // inode of its IPC namespace
	stdin  io.WriteCloser
	lines  chan string
	wait   func() error
	stderr *testenv.SyncBuffer
	closed bool
}

// startRunner starts a runner in a new IPC namespace. It is killed at
// cleanup if still running; its namespace, with every set in it, dies with
// it and its workers.
func startRunner(t testing.TB) *runner {
	t.Helper()
	r, err := newRunner(t)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// newRunner is startRunner returning its error.
func newRunner(t testing.TB) (*runner, error) {
	cmd := testenv.HelperCommand(t, runnerRole, "-test.run=^$")
	// No Pdeathsig: Capture lets a locked OS thread of this process exit
	// (after setns), which would kill a runner that thread had forked.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWIPC}
	r := &runner{lines: make(chan string, 1), stderr: &testenv.SyncBuffer{}}
	cmd.Stderr = r.stderr
	var err error
	if r.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start runner: %w", err)
	}
	r.pid = cmd.Process.Pid
	r.wait = cmd.Wait
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			r.lines <- sc.Text()
		}
		close(r.lines)
	}()
	t.Cleanup(func() { r.close() })
	if r.ns, err = nsInode(r.pid); err != nil {
		return nil, err
	}
	return r, nil
}

// runnerPatience bounds the wait for the runner's reply. The runner's own
// waits for its workers take up to testenv.Patience and report what they
// waited for: this one is longer, so that their message is the one seen,
// and still within the 2 minutes any wait of a test may take.
const runnerPatience = 2 * testenv.Patience

// call sends one command and returns the runner's reply; a reply with Err
// set is returned as an error (with the reply).
func (r *runner) call(format string, a ...any) (reply, error) {
	cmd := fmt.Sprintf(format, a...)
	var rep reply
	if _, err := fmt.Fprintln(r.stdin, cmd); err != nil {
		return rep, fmt.Errorf("runner %d: %s: %w (stderr: %s)", r.pid, cmd, err, r.stderr)
	}
	select {
	case line, ok := <-r.lines:
		if !ok {
			return rep, fmt.Errorf("runner %d: %s: runner died (stderr: %s)", r.pid, cmd, r.stderr)
		}
		if err := json.Unmarshal([]byte(line), &rep); err != nil {
			return rep, fmt.Errorf("runner %d: %s: bad reply %q", r.pid, cmd, line)
		}
	case <-time.After(runnerPatience):
		return rep, fmt.Errorf("runner %d: %s: no reply within %v (stderr: %s)", r.pid, cmd, runnerPatience, r.stderr)
	}
	if rep.Err != "" {
		return rep, fmt.Errorf("runner %d: %s: %s", r.pid, cmd, rep.Err)
	}
	return rep, nil
}

// must is call for tests: an error fails the test.
func (r *runner) must(t testing.TB, format string, a ...any) reply {
	t.Helper()
	rep, err := r.call(format, a...)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// close ends the runner: it kills its workers and exits, and its IPC
// namespace goes with it.
func (r *runner) close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	r.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- r.wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(testenv.Patience):
		unix.Kill(r.pid, unix.SIGKILL)
		<-done
		return fmt.Errorf("runner %d did not exit within %v of EOF: killed", r.pid, testenv.Patience)
	}
}

// nsInode returns the inode of pid's IPC namespace.
func nsInode(pid int) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(fmt.Sprintf("/proc/%d/ns/ipc", pid), &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// ownNS returns the inode of the calling thread's IPC namespace, which is
// the process's: /proc/PID/ns/ipc is the main thread's, which a bug may
// have left in another namespace.
func ownNS() (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/ipc", &st); err != nil {
		return 0, err
	}
	return st.Ino, nil
}

// noThreadOutsideNS waits until every thread of this process is in its
// own IPC namespace again: Capture enters the workers' namespace on a
// locked thread that the Go runtime ends when its goroutine returns, a
// moment after Capture has returned. A thread that stays would keep the
// namespace, and its sets, alive.
func noThreadOutsideNS(hostNS uint64) error {
	var out []string
	var err error
	if testenv.Until(testenv.Patience, func() bool {
		var main bool
		if out, main, err = threadsOutsideNS(hostNS); err != nil {
			return true
		}
		if main {
			// The Go runtime never ends the main thread: when a goroutine
			// locked to it returns, it parks the thread for good, here
			// in another namespace.
			err = fmt.Errorf("after Capture the main thread of this process (pid %d) is parked in another IPC namespace, for good: %v", os.Getpid(), out)
			return true
		}
		return len(out) == 0
	}) {
		return err
	}
	return fmt.Errorf("%v after Capture this process (pid %d) still has threads outside its IPC namespace: %v", testenv.Patience, os.Getpid(), out)
}

// threadsOutsideNS lists this process's threads that are not in its
// original IPC namespace, and says whether the main thread is one.
func threadsOutsideNS(hostNS uint64) (out []string, main bool, err error) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return nil, false, err
	}
	for _, tk := range tasks {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join("/proc/self/task", tk.Name(), "ns/ipc"), &st); err != nil {
			continue // exited meanwhile
		}
		if st.Ino != hostNS {
			out = append(out, fmt.Sprintf("tid %s in IPC namespace %d", tk.Name(), st.Ino))
			main = main || tk.Name() == strconv.Itoa(os.Getpid())
		}
	}
	return out, main, nil
}

// procState returns the state letter of /proc/PID/stat.
func procState(pid int) (byte, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0, fmt.Errorf("pid %d: malformed stat", pid)
	}
	return b[i+2], nil
}

// waitState waits until pid's state letter is one of states.
func waitState(pid int, states string) error {
	var st byte
	var err error
	if testenv.Until(testenv.Patience, func() bool {
		st, err = procState(pid)
		return err != nil || strings.IndexByte(states, st) >= 0
	}) {
		return err
	}
	return fmt.Errorf("pid %d still in state %c after %v, want one of %q", pid, st, testenv.Patience, states)
}

// sameOrZero compares two lists where a missing entry equals an all-zero
// one: writing zeros into a process that has no entry creates none.
func sameOrZero(got, want undo.List) bool {
	nonZero := func(l undo.List) undo.List {
		var out undo.List
		for _, e := range l {
			for _, a := range e.Adj {
				if a != 0 {
					out = append(out, e)
					break
				}
			}
		}
		return out
	}
	return nonZero(got).Equal(nonZero(want))
}

// hostKeyFree checks that no set of the caller's (host) IPC namespace has
// key: sets made in a runner's namespace must stay there.
func hostKeyFree(key int32) error {
	if key == 0 {
		return nil
	}
	id, err := sysvsem.Get(int(key), 0, 0)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up key %#x in the host namespace: %w", uint32(key), err)
	}
	return fmt.Errorf("set %d with key %#x exists in the host IPC namespace: a set leaked out of a runner's namespace", id, uint32(key))
}

//go:build linux && (amd64 || arm64)

package inject

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/semundo/semundo/internal/procfs"
	"github.com/semundo/semundo/internal/testenv"
	"golang.org/x/sys/unix"
)

// System V constants x/sys/unix lacks.
const (
	semUndo    = 0x1000
	semGetPid  = 11
	semGetVal  = 12
	semGetNcnt = 14
)

// The tracer helpers (testenv helpers, run by startTracer): the test binary
// seizes the pid given as its argument and holds it until killed, standing
// for "another process traces the target" and "semundo is killed
// mid-session". "hold" only seizes, "inject-hold" also runs calls in the
// target, "die-after-restore" kills itself in the middle of one, "loop"
// runs whole sessions (Seize, calls, Detach) one after another.
var tracerModes = []string{"hold", "inject-hold", "die-in-stub", "die-at-exit", "die-after-restore", "loop"}

// proc is the live /proc, where the tests' targets run.
var proc = procfs.NewDefaultFS()

func TestMain(m *testing.M) {
	h := testenv.Helpers{}
	for _, mode := range tracerModes {
		h["inject-"+mode] = func(args []string) int { return helperMain(mode, args) }
	}
	testenv.RunHelper(h)
	os.Exit(m.Run())
}

// startTracer starts the tracer helper mode on pid.
func startTracer(tb testing.TB, mode string, pid int) *target {
	tb.Helper()
	return startEnv(tb, testenv.HelperEnviron("inject-"+mode), os.Args[0], strconv.Itoa(pid))
}

func helperMain(mode string, args []string) int {
	if len(args) < 1 {
		fmt.Println("error: want one argument, the pid")
		return 2
	}
	pid, _ := strconv.Atoi(args[0])
	if mode == "loop" {
		return loopMain(pid, os.Getenv("SEMUNDO_TEST_STAGES"))
	}
	var h hooks
	// die-*: kill itself at a stage of the first injected call (an mmap)
	// or of the rest after it, the target's registers pointing into the
	// stub or already put back the way the stub would:
	//   in-stub: registers set up, before the thread ran anything;
	//   at-exit: at the call's syscall-exit-stop, where a session rests
	//            between calls;
	//   after-restore: on the way from there to the event stop.
	if stage, ok := map[string]string{"die-in-stub": "in-stub", "die-at-exit": "exited", "die-after-restore": "restored"}[mode]; ok {
		h.onStage = func(got string) {
			if got == stage {
				fmt.Println("seized")
				_ = unix.Kill(os.Getpid(), unix.SIGKILL)
				time.Sleep(time.Hour)
			}
		}
		mode = "inject-hold"
	}
	s, err := seizeWith(pid, h, nil)
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	if mode == "inject-hold" {
		addr, err := s.Mmap(4096)
		if err == nil {
			err = s.WriteMemory(addr, []byte("scratch"))
		}
		if err == nil {
			_, err = s.Syscall(unix.SYS_GETPID)
		}
		if err == nil && h.onStage != nil {
			err = s.rest("test") // reaches the "restored" stage
		}
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
	}
	fmt.Println("seized")
	time.Sleep(time.Hour) // killed by the test
	return 0
}

// loopMain injects into pid session after session until killed, printing
// "seized" after the first: a kill lands anywhere, Detach included. With
// stages set it keeps in that file the step it is at, for a test to tell
// where a kill that harmed the target landed.
func loopMain(pid int, stages string) int {
	mark := func(string) {}
	if stages != "" {
		f, err := os.OpenFile(stages, os.O_WRONLY|os.O_CREATE, 0o600)
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		mark = func(st string) { f.WriteAt([]byte(fmt.Sprintf("%-16s", st)), 0) }
	}
	for i := 0; ; i++ {
		mark("seize")
		s, err := seizeWith(pid, hooks{onStage: mark}, nil)
		if err == nil {
			var addr uintptr
			addr, err = s.Mmap(4096)
			if err == nil {
				err = s.WriteMemory(addr, []byte("scratch"))
			}
			if err == nil {
				_, err = s.Syscall(unix.SYS_GETPID)
			}
			if err == nil {
				err = s.Munmap(addr, 4096)
			}
			mark("detach")
			if derr := s.Detach(); err == nil {
				err = derr
			}
			mark("detached")
		}
		if err != nil {
			fmt.Println("error", err)
			return 1
		}
		if i == 0 {
			fmt.Println("seized")
		}
		settle(pid)
	}
}

// settle gives a target just let go up to 10 ms to fall asleep again in a
// system call. Without it a session could begin while the thread is on
// its way back into a semop, so that it is blocked at the interrupt but
// was not yet at the sample; on arm64 that semop then ends with EINTR
// (package doc), a limit of the design and not what the kill tests probe.
func settle(pid int) {
	for i := 0; i < 10 && syscallNr(pid, pid) < 0; i++ {
		time.Sleep(time.Millisecond)
	}
}

const cPrelude = `
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sem.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
`

// target is a child process under test; its stdout is read line by line.
type target struct {
	cmd   *exec.Cmd
	pid   int
	stdin io.WriteCloser
	lines chan string
}

func buildC(tb testing.TB, name, src string, flags ...string) string {
	tb.Helper()
	testenv.RequireRoot(tb)
	return testenv.BuildC(tb, name, cPrelude+src, flags...)
}

// start runs path with args, killed and reaped when the test ends.
func start(tb testing.TB, path string, args ...string) *target {
	tb.Helper()
	return startEnv(tb, nil, path, args...)
}

func startEnv(tb testing.TB, env []string, path string, args ...string) *target {
	tb.Helper()
	cmd := exec.Command(path, args...)
	cmd.Env = env
	if env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tg := &target{cmd: cmd, pid: cmd.Process.Pid, stdin: stdin, lines: make(chan string, 64)}
	tb.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait() // an error is expected: killed, or reaped by a session
	})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			tg.lines <- sc.Text()
		}
		close(tg.lines)
	}()
	return tg
}

// line returns the target's next line of output.
func (tg *target) line(tb testing.TB) string {
	tb.Helper()
	select {
	case l, ok := <-tg.lines:
		if !ok {
			tb.Fatalf("pid %d closed its output", tg.pid)
		}
		return l
	case <-time.After(testenv.Patience):
		tb.Fatalf("pid %d printed nothing for %v", tg.pid, testenv.Patience)
	}
	return ""
}

// kill kills the target and reaps it, so that exit_sem has run.
func (tg *target) kill(tb testing.TB) {
	tb.Helper()
	_ = tg.cmd.Process.Kill()
	_ = tg.cmd.Wait()
}

// syscallNr returns the number of the syscall pid's thread tid is blocked
// in, or -1 when it runs or cannot be read.
func syscallNr(pid, tid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/syscall", pid, tid))
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return -1
	}
	n, err := strconv.Atoi(f[0])
	if err != nil {
		return -1
	}
	return n
}

// blockedIn waits until the target's main thread sleeps in one of nrs.
func (tg *target) blockedIn(tb testing.TB, nrs ...int) {
	tb.Helper()
	testenv.Eventually(tb, fmt.Sprintf("pid %d to block in syscall %v", tg.pid, nrs), func() bool {
		n := syscallNr(tg.pid, tg.pid)
		for _, want := range nrs {
			if n == want && state(tg.pid) == 'S' {
				return true
			}
		}
		return false
	})
}

func state(pid int) byte {
	st, err := proc.Stat(pid)
	if err != nil {
		return 0
	}
	return st.State
}

// tracerOf returns the process tracing pid (0 for none, -1 when pid is gone).
func tracerOf(pid int) int {
	st, err := proc.Status(pid)
	if err != nil {
		return -1
	}
	if st.TracerPid == 0 {
		return 0
	}
	// TracerPid is the tracer thread; report its process.
	if ts, err := proc.Status(st.TracerPid); err == nil {
		return ts.Tgid
	}
	return st.TracerPid
}

// Semaphore helpers (the test process never uses SEM_UNDO itself).

func newSet(tb testing.TB, nsems int) int {
	tb.Helper()
	id, _, e := unix.Syscall(unix.SYS_SEMGET, unix.IPC_PRIVATE, uintptr(nsems), unix.IPC_CREAT|0o600)
	if e != 0 {
		tb.Fatalf("semget: %v", e)
	}
	tb.Cleanup(func() { unix.Syscall6(unix.SYS_SEMCTL, id, 0, unix.IPC_RMID, 0, 0, 0) })
	return int(id)
}

func semctl(tb testing.TB, id, num, cmd int) int {
	tb.Helper()
	r, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), uintptr(num), uintptr(cmd), 0, 0, 0)
	if e != 0 {
		tb.Fatalf("semctl(%d, %d, %d): %v", id, num, cmd, e)
	}
	return int(r)
}

func sembuf(num uint16, op, flg int16) []byte {
	b := make([]byte, 6)
	b[0], b[1] = byte(num), byte(num>>8)
	b[2], b[3] = byte(uint16(op)), byte(uint16(op)>>8)
	b[4], b[5] = byte(uint16(flg)), byte(uint16(flg)>>8)
	return b
}

func semop(tb testing.TB, id int, ops []byte) {
	tb.Helper()
	_, _, e := unix.Syscall(unix.SYS_SEMOP, uintptr(id), uintptr(unsafe.Pointer(&ops[0])), uintptr(len(ops)/6))
	if e != 0 {
		tb.Fatalf("semop: %v", e)
	}
}

// readRemote reads the target's memory without the session, to check what
// the session wrote.
func readRemote(tb testing.TB, pid int, addr uintptr, n int) []byte {
	tb.Helper()
	b := make([]byte, n)
	got, err := unix.ProcessVMReadv(pid, []unix.Iovec{iovec(b)}, []unix.RemoteIovec{{Base: addr, Len: n}}, 0)
	if err != nil || got != n {
		tb.Fatalf("process_vm_readv pid %d at %#x: %d bytes, %v", pid, addr, got, err)
	}
	return b
}

// mappingAt returns the line of thread tid's /proc maps holding addr, if any.
func mappingAt(tb testing.TB, tid int, addr uintptr) (mapping, bool) {
	tb.Helper()
	ms, err := readMaps(fmt.Sprintf("/proc/%d/task/%d/maps", tid, tid))
	if err != nil {
		tb.Fatal(err)
	}
	for _, m := range ms {
		if addr >= m.start && addr < m.end {
			return m, true
		}
	}
	return mapping{}, false
}

// exercise runs the injections every target must survive: getpid, and a
// scratch page mapped, written, read back and unmapped.
func exercise(tb testing.TB, s *Session, pid int) {
	tb.Helper()
	tid := s.Tid() // the leader may be a zombie without memory
	got, err := s.Syscall(unix.SYS_GETPID)
	if err != nil {
		tb.Fatalf("injected getpid: %v", err)
	}
	if int(got) != pid {
		tb.Fatalf("injected getpid returned %d, want the target's pid %d", got, pid)
	}
	addr, err := s.Mmap(4096)
	if err != nil {
		tb.Fatalf("Mmap: %v", err)
	}
	m, ok := mappingAt(tb, tid, addr)
	if !ok || m.name != "" || m.perms != "rw-p" {
		tb.Fatalf("scratch page %#x: mapping %+v (found %v), want a private anonymous rw-p mapping", addr, m, ok)
	}
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(i*7 + pid)
	}
	if err := s.WriteMemory(addr, data); err != nil {
		tb.Fatalf("WriteMemory: %v", err)
	}
	if back := readRemote(tb, tid, addr, len(data)); !bytes.Equal(back, data) {
		tb.Fatalf("scratch page at %#x does not hold what was written", addr)
	}
	back := make([]byte, 100)
	if err := s.ReadMemory(addr+1000, back); err != nil || !bytes.Equal(back, data[1000:1100]) {
		tb.Fatalf("ReadMemory: %v (equal %v)", err, bytes.Equal(back, data[1000:1100]))
	}
	if err := s.Munmap(addr, 4096); err != nil {
		tb.Fatalf("Munmap: %v", err)
	}
	if m, ok := mappingAt(tb, tid, addr); ok {
		tb.Fatalf("after Munmap, %#x is still mapped: %+v", addr, m)
	}
}

// undoProbe is a semaphore the target was made to raise by 2 with SEM_UNDO,
// so the target's own semadj for it is -2.
type undoProbe struct {
	semid int
}

// injectSemUndo makes the target run semop({0, +2, SEM_UNDO|IPC_NOWAIT}) on
// a fresh set, the way semundo writes an adjustment.
func injectSemUndo(tb testing.TB, s *Session) undoProbe {
	tb.Helper()
	id := newSet(tb, 1)
	addr, err := s.Mmap(4096)
	if err != nil {
		tb.Fatalf("Mmap: %v", err)
	}
	if err := s.WriteMemory(addr, sembuf(0, 2, semUndo|unix.IPC_NOWAIT)); err != nil {
		tb.Fatalf("WriteMemory: %v", err)
	}
	ret, err := s.Syscall(unix.SYS_SEMOP, uintptr(id), addr, 1)
	if err != nil || ret != 0 {
		tb.Fatalf("injected semop: %d, %v", ret, err)
	}
	if err := s.Munmap(addr, 4096); err != nil {
		tb.Fatalf("Munmap: %v", err)
	}
	if v := semctl(tb, id, 0, semGetVal); v != 2 {
		tb.Fatalf("after the injected semop the value is %d, want 2", v)
	}
	if p := semctl(tb, id, 0, semGetPid); p != s.Pid() {
		tb.Fatalf("sempid is %d, want the target %d: the semop did not run in the target", p, s.Pid())
	}
	return undoProbe{id}
}

// check kills the target and verifies that its exit undid the +2: the
// adjustment belonged to the target's own undo list.
func (u undoProbe) check(tb testing.TB, tg *target) {
	tb.Helper()
	if v := semctl(tb, u.semid, 0, semGetVal); v != 2 {
		tb.Fatalf("before the target exits the value is %d, want 2", v)
	}
	tg.kill(tb)
	if v := semctl(tb, u.semid, 0, semGetVal); v != 0 {
		tb.Fatalf("after the target exited the value is %d, want 0 (its semadj of -2 applied)", v)
	}
}

func mustSeize(tb testing.TB, pid int) *Session {
	tb.Helper()
	return mustSeizeWith(tb, pid, hooks{})
}

// mustSeizeWith is mustSeize with test hooks.
func mustSeizeWith(tb testing.TB, pid int, h hooks) *Session {
	tb.Helper()
	s, err := seizeWith(pid, h, nil)
	if err != nil {
		tb.Fatalf("Seize(%d): %v", pid, err)
	}
	// A failed test must still let go of the target, or killing it would
	// leave its traced thread a zombie nobody reaps (cleanups run LIFO, on
	// the tracer's goroutine, before the target is killed).
	tb.Cleanup(func() { _ = s.Detach() })
	return s
}

func mustDetach(tb testing.TB, s *Session) {
	tb.Helper()
	if err := s.Detach(); err != nil {
		tb.Fatalf("Detach: %v", err)
	}
	if tr := tracerOf(s.Pid()); tr != 0 && tr != -1 {
		tb.Fatalf("after Detach pid %d is still traced by %d", s.Pid(), tr)
	}
}

// killTracer starts the tracer helper in mode on pid, waits for it to hold
// the target, kills it (a no-op when it killed itself at a stage) and
// waits for the kernel to detach the dead tracer.
func killTracer(t *testing.T, mode string, pid int) {
	t.Helper()
	helper := startTracer(t, mode, pid)
	if l := helper.line(t); l != "seized" {
		t.Fatalf("helper: %s", l)
	}
	helper.kill(t)
	if ws := helper.cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != unix.SIGKILL {
		t.Fatalf("helper ended with %v, want SIGKILL", helper.cmd.ProcessState)
	}
	testenv.Eventually(t, "the kernel to detach the dead tracer", func() bool { return tracerOf(pid) == 0 })
}

// runStub lets a thread resting in the stub run on, as it does when the
// tracer dies, to the next system call it makes, and returns its registers
// at that syscall-entry stop.
func runStub(t *testing.T, s *Session) unix.PtraceRegs {
	t.Helper()
	if err := toSyscall(s.tid); err != nil {
		t.Fatal(err)
	}
	ws, err := s.wait("test")
	if err != nil {
		t.Fatal(err)
	}
	if kind, _ := classify(ws); kind != stopSyscall {
		t.Fatalf("stopped with %#x, want a syscall-entry stop", uint32(ws))
	}
	var got unix.PtraceRegs
	if err := getRegs(s.tid, &got); err != nil {
		t.Fatal(err)
	}
	return got
}

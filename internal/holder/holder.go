// Package holder runs helper processes for tests: a re-exec of the test
// binary that performs a script of semops (with or without SEM_UNDO), says
// "ready", and waits for its stdin to close. A re-exec'd test binary needs no
// compiler, so tests built on it also run inside the kernel-matrix VMs.
// The helpers are testenv helpers (testenv.RunHelper), registered under
// the names "holder.MODE".
//
// A test package calls Main from its TestMain, then Start from its tests.
package holder

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/sysvsem"
	"golang.org/x/sys/unix"
)

// Environment variables that carry a helper's arguments.
const (
	envOps    = "SEMUNDO_HOLDER_OPS"
	envNextID = "SEMUNDO_HOLDER_NEXTID"
	envNSems  = "SEMUNDO_HOLDER_NSEMS"
	envKey    = "SEMUNDO_HOLDER_KEY"
)

// EnvLeaderUID, passed to Start's env as EnvLeaderUID+"=UID", makes the
// "leaderexit" helper's main thread take UID as its real, effective and
// saved uid, alone, before it exits.
const EnvLeaderUID = "SEMUNDO_HOLDER_LEADER_UID"

// modes are the helpers' modes; mode M runs as testenv helper "holder.M".
var modes = []string{"wait", "busy", "leaderexit", "fork", "exec", "ns", "churn"}

func helperName(mode string) string { return "holder." + mode }

func init() {
	// Package init runs on the main thread; only a locked goroutine is sure
	// to stay there, which the "leaderexit" helper needs.
	if testenv.HelperName() == helperName("leaderexit") {
		runtime.LockOSThread()
	}
	for _, mode := range modes {
		testenv.Register(helperName(mode), func([]string) int { return helperMain(mode) })
	}
}

// Main runs the tests, or the helper when this process is one. Call it as
// the whole body of TestMain.
func Main(m *testing.M) { MainWith(m, nil) }

// MainWith is Main with a setup that runs before the tests (not in
// helpers) and returns a teardown that runs after them.
func MainWith(m *testing.M, setup func() (teardown func())) {
	testenv.RunHelper(nil)
	// Orphans of helpers (their forked children) come back to this
	// process, which reaps them at cleanup instead of leaving zombies.
	unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
	teardown := func() {}
	if setup != nil {
		teardown = setup()
	}
	code := m.Run()
	teardown()
	if sharedDir != "" {
		os.RemoveAll(sharedDir)
	}
	if semwaitDir != "" {
		os.RemoveAll(semwaitDir)
	}
	os.Exit(code)
}

// Op is one scripted semop: on set Semid, semaphore Num, add Val, always
// with IPC_NOWAIT.
type Op struct {
	Semid int
	Num   uint16
	Val   int16
	Undo  bool
	// MayFail: the op is expected to fail; with Undo it still creates the
	// (all-zero) undo entry.
	MayFail bool
}

func encodeOps(ops []Op) string {
	var b strings.Builder
	for i, o := range ops {
		if i > 0 {
			b.WriteByte(';')
		}
		fmt.Fprintf(&b, "%d:%d:%d:", o.Semid, o.Num, o.Val)
		if o.Undo {
			b.WriteByte('u')
		}
		if o.MayFail {
			b.WriteByte('f')
		}
	}
	return b.String()
}

func decodeOps(s string) ([]Op, error) {
	var ops []Op
	if s == "" {
		return nil, nil
	}
	for _, f := range strings.Split(s, ";") {
		p := strings.Split(f, ":")
		if len(p) != 4 {
			return nil, fmt.Errorf("bad op %q", f)
		}
		semid, err1 := strconv.Atoi(p[0])
		num, err2 := strconv.ParseUint(p[1], 10, 16)
		val, err3 := strconv.ParseInt(p[2], 10, 16)
		if err1 != nil || err2 != nil || err3 != nil {
			return nil, fmt.Errorf("bad op %q", f)
		}
		ops = append(ops, Op{Semid: semid, Num: uint16(num), Val: int16(val),
			Undo: strings.Contains(p[3], "u"), MayFail: strings.Contains(p[3], "f")})
	}
	return ops, nil
}

// Expect computes the adjustments a script leaves: every successful
// SEM_UNDO op subtracts its value; a failed one leaves an all-zero entry.
func Expect(ops []Op, nsems map[int]int) map[int][]int16 {
	want := make(map[int][]int16)
	for _, o := range ops {
		if !o.Undo {
			continue
		}
		adj := want[o.Semid]
		if adj == nil {
			adj = make([]int16, nsems[o.Semid])
			want[o.Semid] = adj
		}
		if !o.MayFail {
			adj[o.Num] -= o.Val
		}
	}
	return want
}

func helperMain(mode string) int {
	ops, err := decodeOps(os.Getenv(envOps))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	child := 0
	if mode == "churn" {
		return churnMain()
	}
	if mode == "wait" || mode == "ns" {
		// Every Go program catches SIGWINCH and SIGURG, so writes into
		// it run between syscall stops; ignoring SIGWINCH lets the
		// injector's stub stop itself with it (x86-64). These modes
		// take that way, the others the first, so that the tests (on
		// the kernel matrix too, where the targets are Go) cover both.
		signal.Ignore(unix.SIGWINCH)
	}
	if mode == "ns" {
		// Started in a new IPC namespace: create the set the ops name as
		// semid -1, with the id asked for.
		if err := os.WriteFile("/proc/sys/kernel/sem_next_id", []byte(os.Getenv(envNextID)), 0); err != nil {
			fmt.Fprintf(os.Stderr, "helper: %v\n", err)
			return 2
		}
		n, _ := strconv.Atoi(os.Getenv(envNSems))
		id, err := sysvsem.Get(sysvsem.Private, n, unix.IPC_CREAT|0o600)
		if err != nil {
			fmt.Fprintf(os.Stderr, "helper: %v\n", err)
			return 2
		}
		child = id
		for i := range ops {
			if ops[i].Semid == -1 {
				ops[i].Semid = id
			}
		}
		mode = "wait"
	}
	for _, o := range ops {
		flg := int16(sysvsem.NoWait)
		if o.Undo {
			flg |= sysvsem.Undo
		}
		err := sysvsem.Op(o.Semid, []sysvsem.Sembuf{{Num: o.Num, Op: o.Val, Flg: flg}})
		if err != nil && !o.MayFail {
			fmt.Fprintf(os.Stderr, "helper: %v\n", err)
			return 2
		}
		if err == nil && o.MayFail {
			fmt.Fprintf(os.Stderr, "helper: op %+v should have failed\n", o)
			return 2
		}
	}
	switch mode {
	case "wait":
	case "busy":
		// Goroutines that compute while the process is written into:
		// each prints the sum of i*i for i < 2e8 when done.
		for g := 0; g < 4; g++ {
			go func() {
				var sum uint64
				for i := uint64(0); i < 2e8; i++ {
					sum += i * i
				}
				fmt.Printf("sum %d\n", sum)
			}()
		}
	case "leaderexit":
		// The main thread leaves (exit, not exit_group) and the process
		// goes on in its other threads, as a program whose main thread
		// called pthread_exit. The runtime never needs its first thread
		// back while the others wait on stdin.
		fmt.Printf("ready 0\n")
		go func() {
			io.Copy(io.Discard, os.Stdin)
			os.Exit(0)
		}()
		if v := os.Getenv(EnvLeaderUID); v != "" {
			// This thread alone (credentials are per thread): the zombie
			// leader then shows other ids than the threads that run on.
			uid, _ := strconv.Atoi(v)
			if _, _, errno := syscall.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); errno != 0 {
				fmt.Fprintf(os.Stderr, "setresuid(%d): %v\n", uid, errno)
				os.Exit(1)
			}
		}
		// init locked this goroutine to the main thread, so this is the
		// thread whose tid is the pid.
		syscall.RawSyscall(unix.SYS_EXIT, 0, 0, 0)
		select {}
	case "fork":
		// A child of fork (no CLONE_SYSVSEM) starts with no undo list. It
		// only sleeps in raw system calls, never back in the Go runtime.
		// clone(SIGCHLD) is fork on every architecture, arm64 included.
		pid, _, errno := syscall.RawSyscall6(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
		if errno != 0 {
			fmt.Fprintf(os.Stderr, "helper: fork: %v\n", errno)
			return 2
		}
		if pid == 0 {
			for {
				// ppoll on no fds and no timeout: pause(2) where arm64 has none.
				syscall.RawSyscall6(unix.SYS_PPOLL, 0, 0, 0, 0, 0, 0)
			}
		}
		child = int(pid)
	case "exec":
		// The list survives execve; the new image only waits, and must
		// not run the ops again: drop them.
		var env []string
		for _, kv := range testenv.HelperEnviron(helperName("wait")) {
			if !strings.HasPrefix(kv, envOps+"=") {
				env = append(env, kv)
			}
		}
		exe, _ := os.Executable()
		err := syscall.Exec(exe, []string{exe}, env)
		fmt.Fprintf(os.Stderr, "helper: exec: %v\n", err)
		return 2
	default:
		fmt.Fprintf(os.Stderr, "helper: unknown mode %q\n", mode)
		return 2
	}
	fmt.Printf("ready %d\n", child)
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// Helper is a running helper process.
type Helper struct {
	Cmd *exec.Cmd
	// PID is the helper's pid.
	PID int
	// Child is what the helper reported: the pid of its forked child
	// (mode "fork") or the id of the set it created ("ns").
	Child int
	// Out has the helper's output after its "ready" line.
	Out   *bufio.Reader
	stdin io.Closer
}

// Stop closes the helper's stdin so that it exits by itself, and waits.
func (h *Helper) Stop() error {
	h.stdin.Close()
	return h.Cmd.Wait()
}

// Start runs a helper with ops and waits until it is ready. mode is "wait"
// (run the ops and wait), "fork" (then fork a child that has no list and
// pauses), "exec" (then execve itself and wait: the list survives) or "ns"
// (see StartNS). The process (and a forked child) is killed and reaped at
// cleanup.
func Start(t testing.TB, mode string, ops []Op, attr *syscall.SysProcAttr, env ...string) *Helper {
	t.Helper()
	exe := os.Args[0]
	if attr != nil && (attr.Credential != nil && attr.Credential.Uid != 0 || len(attr.UidMappings) > 0) {
		exe = sharedExe(t)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = testenv.HelperEnviron(helperName(mode), append([]string{envOps + "=" + encodeOps(ops)}, env...)...)
	cmd.SysProcAttr = attr
	stdin, stdout := startPiped(t, cmd)
	h := &Helper{Cmd: cmd, PID: cmd.Process.Pid, stdin: stdin}
	t.Cleanup(func() {
		if h.Child > 0 && mode == "fork" {
			unix.Kill(h.Child, unix.SIGKILL)
		}
		stdin.Close()
		cmd.Process.Kill()
		cmd.Wait()
		if h.Child > 0 && mode == "fork" {
			// Reparented to this process (a subreaper): reap it.
			var ws unix.WaitStatus
			unix.Wait4(h.Child, &ws, 0, nil)
		}
	})
	h.Out = bufio.NewReader(stdout)
	type result struct {
		line string
		err  error
	}
	ready := make(chan result, 1)
	go func() {
		line, err := h.Out.ReadString('\n')
		ready <- result{line, err}
	}()
	var r result
	select {
	case r = <-ready:
	case <-time.After(testenv.Patience):
		// The kill ends the read above (EOF) as well.
		cmd.Process.Kill()
		t.Fatalf("holder helper %s (pid %d) did not say ready within %v (killed)", mode, h.PID, testenv.Patience)
	}
	if r.err != nil {
		t.Fatalf("holder helper %s (pid %d) did not get ready: %v", mode, h.PID, r.err)
	}
	if _, err := fmt.Sscanf(r.line, "ready %d", &h.Child); err != nil {
		t.Fatalf("holder helper %s (pid %d) said %q", mode, h.PID, r.line)
	}
	return h
}

// startPiped starts cmd with its stdin and stdout piped to the test, its
// stderr the test's.
func startPiped(t testing.TB, cmd *exec.Cmd) (io.WriteCloser, io.Reader) {
	t.Helper()
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return stdin, stdout
}

// NewSet creates a private set of n semaphores, removed at cleanup.
func NewSet(t testing.TB, n int) int {
	t.Helper()
	id, err := sysvsem.Get(sysvsem.Private, n, unix.IPC_CREAT|0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sysvsem.Remove(id) })
	return id
}

// StartNS starts a helper in a new IPC namespace, where it creates a
// set of nsems semaphores with id nextID (through sem_next_id) and runs ops
// (semid -1 names that set). h.Child is the set's id. The set dies with the
// namespace when the helper exits.
func StartNS(t testing.TB, nextID, nsems int, ops []Op) *Helper {
	t.Helper()
	return Start(t, "ns", ops, &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWIPC},
		fmt.Sprintf("%s=%d", envNextID, nextID), fmt.Sprintf("%s=%d", envNSems, nsems))
}

// churnMain creates a set with the key and size given, takes SEM_UNDO
// adjustments on it, removes it, says "removed" and exits after a short
// pause: the life of a short-lived lock user, for tests that read lists
// while such processes come and go.
func churnMain() int {
	key, _ := strconv.Atoi(os.Getenv(envKey))
	n, _ := strconv.Atoi(os.Getenv(envNSems))
	id, err := sysvsem.Get(key, n, unix.IPC_CREAT|unix.IPC_EXCL|0o600)
	if err != nil {
		fmt.Fprintf(os.Stderr, "helper: %v\n", err)
		return 2
	}
	for i := 0; i < n; i += 3 {
		sysvsem.Op(id, []sysvsem.Sembuf{{Num: uint16(i), Op: int16(i%5 + 1), Flg: sysvsem.Undo | sysvsem.NoWait}})
	}
	time.Sleep(time.Duration(key%7) * time.Millisecond)
	if err := sysvsem.Remove(id); err != nil {
		fmt.Fprintf(os.Stderr, "helper: %v\n", err)
		return 2
	}
	fmt.Println("removed")
	time.Sleep(time.Duration(key%5) * time.Millisecond)
	return 0
}

// ChurnKey is the IPC key a churn helper uses: it encodes the set's size
// (1..63) so that a reader can check nsems without asking the set.
func ChurnKey(base, seq, nsems int) int { return base + seq<<6 | nsems }

// StartChurn starts a churn helper (see churnMain) without waiting for it.
// removed gets the key once the helper has removed its set; the process is
// reaped by the returned wait function.
func StartChurn(key, nsems int, removed func(key int)) (wait func() error, err error) {
	return StartChurnPID(key, nsems, removed, nil)
}

// StartChurnPID is StartChurn that also hands the helper's pid to started.
func StartChurnPID(key, nsems int, removed func(key int), started func(pid int)) (wait func() error, err error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = testenv.HelperEnviron(helperName("churn"),
		fmt.Sprintf("%s=%d", envKey, key), fmt.Sprintf("%s=%d", envNSems, nsems))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	if started != nil {
		started(cmd.Process.Pid)
	}
	return func() error {
		line, _ := bufio.NewReader(out).ReadString('\n')
		if line == "removed\n" {
			removed(key)
		}
		return cmd.Wait()
	}, nil
}

var (
	sharedOnce sync.Once
	sharedDir  string
	sharedPath string
	sharedErr  error
)

// sharedExe returns a copy of the test binary that other users can run: go
// test builds it in a directory only its owner may enter. Main removes it.
func sharedExe(t testing.TB) string {
	sharedOnce.Do(func() {
		sharedDir, sharedErr = os.MkdirTemp("", "semundo-holder")
		if sharedErr != nil {
			return
		}
		os.Chmod(sharedDir, 0o755)
		var b []byte
		if b, sharedErr = os.ReadFile(os.Args[0]); sharedErr != nil {
			return
		}
		sharedPath = filepath.Join(sharedDir, "holder")
		sharedErr = os.WriteFile(sharedPath, b, 0o755)
	})
	if sharedErr != nil {
		t.Fatalf("copy the test binary for another user: %v", sharedErr)
	}
	return sharedPath
}

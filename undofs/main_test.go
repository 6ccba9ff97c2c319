package undofs

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/undo"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) {
	testenv.RunHelper(testenv.Helpers{"probe": probeMain, "secjudge": secJudgeMain, "sechold": secHoldMain, "secrecv": secRecvMain,
		"noinit": noInitMain, "echo": echoMain})
	// Mounts with the default injector run this binary as the helper.
	Init()
	holder.MainWith(m, func() func() {
		return func() {
			// No mount made by these tests may outlive them.
			mi, _ := os.ReadFile("/proc/self/mountinfo")
			mountsMu.Lock()
			defer mountsMu.Unlock()
			for _, d := range mounts {
				if _, _, ok := mountAt(mi, d); ok {
					fmt.Fprintf(os.Stderr, "undofs tests: %s is still mounted\n", d)
					unix.Unmount(d, unix.MNT_DETACH)
					os.Exit(1)
				}
			}
		}
	})
}

var (
	mountsMu sync.Mutex
	mounts   []string
)

// probe env: what the probe helper does after reading its request.
const (
	probeExitEnv = "SEMUNDO_PROBE_EXIT"  // exit with this status (after reporting)
	probeSleep   = "SEMUNDO_PROBE_SLEEP" // sleep this long first
	probePtrace  = "SEMUNDO_PROBE_PTRACE"
)

// probeReport is what the probe helper says on stderr, as one JSON line:
// the credentials it runs with and the request it was given.
type probeReport struct {
	Status  map[string]string
	Request InjectRequest
	Ptrace  string
	// FDs are the helper's open descriptors: "N -> what".
	FDs []string
}

// probeMain stands in for `semundo __inject`. It reports its credentials
// and request on stderr; with SEMUNDO_PROBE_PTRACE=1 it lets the kernel
// judge the caller's right to ptrace the target (PTRACE_SEIZE, then detach
// without touching it) and exits 0 or 3 as the real helper would.
func probeMain(args []string) int {
	var rep probeReport
	if err := json.NewDecoder(os.Stdin).Decode(&rep.Request); err != nil {
		fmt.Fprintln(os.Stderr, "probe: bad request:", err)
		return 5
	}
	b, _ := os.ReadFile("/proc/self/status")
	rep.Status = map[string]string{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			switch k {
			case "Uid", "Gid", "Groups", "CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb", "NoNewPrivs":
				rep.Status[k] = strings.Join(strings.Fields(v), " ")
			}
		}
	}
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		for _, e := range ents {
			l, _ := os.Readlink("/proc/self/fd/" + e.Name())
			rep.FDs = append(rep.FDs, e.Name()+" -> "+l)
		}
	}
	if d, err := time.ParseDuration(os.Getenv(probeSleep)); err == nil {
		time.Sleep(d)
	}
	code, _ := strconv.Atoi(os.Getenv(probeExitEnv))
	if os.Getenv(probePtrace) == "1" {
		err := unix.PtraceSeize(rep.Request.PID)
		if err == nil {
			unix.PtraceDetach(rep.Request.PID)
			rep.Ptrace = "ok"
		} else {
			rep.Ptrace = err.Error()
			code = HelperPermission
			if err == unix.ESRCH {
				code = HelperGone
			}
		}
	}
	j, _ := json.Marshal(rep)
	fmt.Fprintf(os.Stderr, "%s\n", j)
	return code
}

// probeInjector runs the probe as an ExecInjector would run __inject.
func probeInjector(t *testing.T, env ...string) *ExecInjector {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return &ExecInjector{Path: exe, Env: append([]string{testenv.HelperEnv + "=probe"}, env...)}
}

// requireFUSE stops the test unless it can mount FUSE file systems.
func requireFUSE(t testing.TB) {
	t.Helper()
	testenv.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Missing(t, "/dev/fuse", "load the fuse module (modprobe fuse)")
	}
}

// mountT mounts the file system on a new directory that every user can
// reach, and unmounts it at cleanup, checking that nothing is left mounted.
func mountT(t *testing.T, opts *Options) *FS {
	t.Helper()
	requireFUSE(t)
	dir := t.TempDir()
	// The unprivileged users of some tests must reach the mount point.
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	if opts == nil {
		opts = &Options{}
	}
	if opts.Log == nil {
		opts.Log = testLogger(t)
	}
	f, err := Mount(dir, opts)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	mountsMu.Lock()
	mounts = append(mounts, f.Dir())
	mountsMu.Unlock()
	t.Cleanup(func() {
		if err := f.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
		}
		mi, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			t.Fatal(err)
		}
		if fstype, _, ok := mountAt(mi, f.Dir()); ok {
			t.Errorf("%s still mounted (%s) after Unmount", f.Dir(), fstype)
			unix.Unmount(f.Dir(), unix.MNT_DETACH)
		}
	})
	return f
}

// run runs a command with a timeout (so a hang fails instead of blocking
// the suite) and returns its stdout, stderr and exit status.
func run(t *testing.T, cred *syscall.Credential, stdin string, name string, args ...string) (string, string, int) {
	t.Helper()
	return runEnv(t, cred, nil, stdin, name, args...)
}

// runEnv is run with env added to this process's environment.
func runEnv(t *testing.T, cred *syscall.Credential, env []string, stdin string, name string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Dir = "/"
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %q hung (killed after 30 s); stderr %q", name, args, errb.String())
	}
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return out.String(), errb.String(), code
}

// nobody is the unprivileged user of the tests.
var nobody = &syscall.Credential{Uid: 65534, Gid: 65534}

// testLogger sends the daemon's log to the test's output (and to buf,
// when given) while the test runs.
func testLogger(t *testing.T, buf ...*testenv.SyncBuffer) *log.Logger {
	w := &testWriter{t: t}
	if len(buf) > 0 {
		w.buf = buf[0]
	}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return log.New(w, "daemon: ", 0)
}

type testWriter struct {
	t    *testing.T
	buf  *testenv.SyncBuffer
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf != nil {
		w.buf.Write(p)
	}
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// listText is what the reader says pid's file must hold.
func listText(t *testing.T, f *FS, pid int) string {
	t.Helper()
	l, err := f.raw.scan.r.Read(pid)
	if err != nil {
		t.Fatal(err)
	}
	if l == nil {
		return ""
	}
	b, err := l.Undo().AppendText(nil)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fakeInjector records calls and answers with err; a call blocks on gate
// when gate is set.
type fakeInjector struct {
	mu    sync.Mutex
	calls []fakeCall
	err   error
	gate  chan struct{}
	seen  chan int // receives the caller's tgid of each call, when set
}

type fakeCall struct {
	Caller        Caller
	PID           int
	Current, Want undo.List
}

func (f *fakeInjector) Inject(ctx context.Context, c *Caller, pid int, current, want undo.List) error {
	f.mu.Lock()
	f.calls = append(f.calls, fakeCall{*c, pid, current, want})
	err, gate, seen := f.err, f.gate, f.seen
	f.mu.Unlock()
	if seen != nil {
		seen <- c.TGID
	}
	if gate != nil {
		<-gate
	}
	return err
}

func (f *fakeInjector) Calls() []fakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fakeCall(nil), f.calls...)
}

// readLines reads a helper's further output line by line.
func readLine(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	s, err := r.ReadString('\n')
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return strings.TrimSpace(s)
}

// exec1 starts a command in dir, killed and reaped at cleanup. A shell
// changes into dir, not the child os/exec forks: that child shares this
// process's memory until it executes, and if its chdir waits on this
// process's own file system while a garbage collection waits for the
// thread that forked it, neither ever goes on. exec1 returns once the
// shell is in dir.
func exec1(t *testing.T, dir, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", append([]string{"-c", `cd "$1" && echo in && shift && exec "$@"`, "sh", dir, name}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	if s, _ := bufio.NewReader(out).ReadString('\n'); s != "in\n" {
		t.Fatalf("sh could not enter %s: said %q", dir, s)
	}
	return cmd
}

// waitDone waits for f to stop serving; a file system that never stops
// fails the test rather than hang it.
func waitDone(t *testing.T, f *FS) {
	t.Helper()
	select {
	case <-f.Done():
	case <-time.After(testenv.Patience):
		t.Fatalf("%s still served %v after its last user went", f.Dir(), testenv.Patience)
	}
}

// noInitMain is a program that mounts without calling Init: Mount must
// refuse before it looks at the (missing) mount point.
func noInitMain([]string) int {
	_, err := Mount(filepath.Join(os.TempDir(), "semundo-no-such-dir"), nil)
	if !errors.Is(err, ErrNoHelper) {
		fmt.Fprintf(os.Stderr, "Mount in a program without Init: %v, want ErrNoHelper\n", err)
		return 1
	}
	return 0
}

// readConcurrent reads a file of the mount as os.ReadFile does, but into
// memory shared with this process's children, for tests whose reads run
// while the daemon, in this same process, forks its open checkers. The
// kernel reads a file opened with FOPEN_DIRECT_IO straight into the
// reader's pages. Debian's 6.1 kernels (amd64 and arm64, in kmatrix) then
// return, a few times in 2,000 reads, the right length of zero bytes; 6.12
// and later do not, nor do reads into shared memory. The explanation held
// (not traced in the kernel): 6.1's FUSE takes the pages without pinning
// them (FOLL_GET), so a fork(2) during the read makes
// them copy-on-write and this process's next write to the same page gives
// it a copy without the data (the caveat on O_DIRECT and fork in open(2)).
// A reader in another process than the daemon, as a real one is, does not
// meet it.
func readConcurrent(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	const size = 64 << 10
	buf, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	defer unix.Munmap(buf)
	n := 0
	for {
		k, err := f.Read(buf[n:])
		n += k
		if err == io.EOF {
			return bytes.Clone(buf[:n]), nil
		}
		if err != nil {
			return bytes.Clone(buf[:n]), err
		}
		if n == size {
			return nil, fmt.Errorf("read %s: longer than %d bytes", name, size)
		}
	}
}

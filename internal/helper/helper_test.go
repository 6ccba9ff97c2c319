package helper

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/errs"
	"github.com/semundo/semundo/internal/testenv"
	"golang.org/x/sys/unix"
)

// Environment of the test helpers.
const (
	envStatus  = "SEMUNDO_TEST_HELPER_STATUS"  // exitMain: the status to exit with
	envPidFile = "SEMUNDO_TEST_HELPER_PIDFILE" // sleepMain: where to write its pid
	envExecs   = "SEMUNDO_TEST_HELPER_EXECS"   // reexecMain: execs left
)

func TestMain(m *testing.M) {
	// The fake helpers run before Init: "unregistered" is a program that
	// never called it.
	testenv.RunHelper(testenv.Helpers{"exit": exitMain, "sleep": sleepMain, "unregistered": unregisteredMain, "reexec": reexecMain})
	Init()
	os.Exit(m.Run())
}

// exitMain is a helper that reads its request, says two lines (the
// first names its session and the request's pid) and exits with
// $SEMUNDO_TEST_HELPER_STATUS.
func exitMain(args []string) int {
	var r Request
	if err := json.NewDecoder(os.Stdin).Decode(&r); err != nil {
		fmt.Fprintf(os.Stderr, "%sbad request: %v\n", prefix, err)
		return ExitInvalid
	}
	sid, _ := unix.Getsid(0)
	fmt.Fprintf(os.Stderr, "\n%spid %d, args %q, own session %v\nsecond line\n", prefix, r.PID, args, sid == os.Getpid())
	code, _ := strconv.Atoi(os.Getenv(envStatus))
	return code
}

// reexecMain is a helper that executes itself again $SEMUNDO_TEST_HELPER_EXECS
// times, each time from a thread other than its leader, as a Go program's
// execve may run: the kernel then puts the executing thread in the
// leader's place.
func reexecMain([]string) int {
	n, _ := strconv.Atoi(os.Getenv(envExecs))
	if n <= 0 {
		return 0
	}
	exe, err := os.Executable()
	if err != nil {
		return 3
	}
	// exec takes the first of duplicate variables: drop the old count.
	var env []string
	for _, kv := range testenv.HelperEnviron("reexec") {
		if !strings.HasPrefix(kv, envExecs+"=") {
			env = append(env, kv)
		}
	}
	env = append(env, envExecs+"="+strconv.Itoa(n-1))
	failed := make(chan error)
	var run func()
	run = func() {
		runtime.LockOSThread() // never unlocked: a leader stays taken
		if unix.Gettid() == unix.Getpid() {
			go run()
			return
		}
		failed <- syscall.Exec(exe, []string{exe}, env)
	}
	go run()
	<-failed
	return 3
}

// sleepMain is a helper that never finishes: it writes its pid where
// $SEMUNDO_TEST_HELPER_PIDFILE says, says so, and sleeps.
func sleepMain([]string) int {
	os.WriteFile(os.Getenv(envPidFile), []byte(strconv.Itoa(os.Getpid())), 0o600)
	fmt.Fprintf(os.Stderr, "%ssleeping\n", prefix)
	time.Sleep(time.Hour)
	return 0
}

// unregisteredMain runs the helper as a program that did not call Init
// would, and exits 0 when Run refused with ErrNotRegistered.
func unregisteredMain([]string) int {
	// Were it started, it would be the real helper, refusing pid 0.
	err := Run(context.Background(), []Request{{PID: 0}}, Options{Env: helperEnv("")})
	if !errors.Is(err, ErrNotRegistered) {
		fmt.Fprintf(os.Stderr, "Run in a program without Init: %v, want ErrNotRegistered\n", err)
		return 1
	}
	return 0
}

// helperEnv is this process's environment, selecting test helper name
// ("" for none: the real helper) with extra settings.
func helperEnv(name string, extra ...string) []string {
	if name == "" {
		var env []string
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, testenv.HelperEnv+"=") {
				env = append(env, kv)
			}
		}
		return append(env, extra...)
	}
	return testenv.HelperEnviron(name, extra...)
}

// TestRequestRoundTrip: the request's JSON names (which older helpers and
// the tests' direct `semundo __inject` runs read), and one object or an
// array of them read back as written.
func TestRequestRoundTrip(t *testing.T) {
	r := Request{PID: 42, Current: "7 1 -2\n", Want: "3 4\n"}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"pid":42,"current":"7 1 -2\n","want":"3 4\n"}`; string(b) != want {
		t.Errorf("request JSON %s, want %s", b, want)
	}
	got, err := parseRequests(b)
	if err != nil || len(got) != 1 || got[0] != r {
		t.Errorf("parse of one request: %v, %v", got, err)
	}
	two := []Request{r, {PID: 43, Want: "1 0\n"}}
	b, err = json.Marshal(two)
	if err != nil {
		t.Fatal(err)
	}
	got, err = parseRequests(append([]byte("\n "), b...))
	if err != nil || len(got) != 2 || got[0] != two[0] || got[1] != two[1] {
		t.Errorf("parse of two requests: %v, %v", got, err)
	}
}

// TestStatusError is the table of statuses and the errors they stand for,
// with the shared sentinels they are.
func TestStatusError(t *testing.T) {
	for status, want := range map[int]error{
		ExitOK: nil, ExitError: ErrFailed, ExitUsage: ErrFailed, ExitPermission: ErrPermission,
		ExitUnsupported: ErrUnsupported, ExitInvalid: ErrInvalid, ExitGone: ErrNoProcess, 7: ErrFailed, 127: ErrFailed, -1: ErrFailed,
	} {
		if got := StatusError(status); got != want {
			t.Errorf("StatusError(%d) = %v, want %v", status, got, want)
		}
	}
	if ErrPermission != fs.ErrPermission || ErrNoProcess != errs.ErrNoProcess || ErrUnsupported != errs.ErrNotSupported {
		t.Error("the helper's errors are not the values every package shares")
	}
	e := &Error{Status: 5, Msg: "pid 7: set 3: no such set", Err: ErrInvalid}
	if !errors.Is(e, ErrInvalid) || e.Error() != "pid 7: set 3: no such set: invalid undo list for the target" {
		t.Errorf("Error %q does not read or unwrap as its parts", e)
	}
	if e := (&Error{Status: -1, Err: ErrTimeout}); e.Error() != ErrTimeout.Error() {
		t.Errorf("Error without a message: %q", e)
	}
}

// TestMainMalformed: a request the helper cannot read is ExitInvalid (bad
// arguments ExitUsage) with one line on stderr, before any write: none of
// these reaches writer.Inject, whose errors would be other statuses.
func TestMainMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		in   string
		want int
	}{
		{"empty", nil, "", ExitInvalid},
		{"not JSON", nil, "7 1 -2\n", ExitInvalid},
		{"cut short", nil, `{"pid": 1, "current": "`, ExitInvalid},
		{"array cut short", nil, `[{"pid": 1}, `, ExitInvalid},
		{"pid a string", nil, `{"pid": "1"}`, ExitInvalid},
		{"pid too large", nil, `{"pid": 99999999999999999999}`, ExitInvalid},
		{"no pid", nil, `{"want": "1 1\n"}`, ExitInvalid},
		{"negative pid", nil, `{"pid": -1, "want": "1 1\n"}`, ExitInvalid},
		{"a zero pid after a good one", nil, `[{"pid": 1, "want": "1 1\n"}, {"pid": 0}]`, ExitInvalid},
		{"array of numbers", nil, `[1, 2]`, ExitInvalid},
		{"null", nil, `null`, ExitInvalid},
		{"current not a list", nil, `{"pid": 1, "current": "x y z\n", "want": ""}`, ExitInvalid},
		{"want out of range", nil, `{"pid": 1, "current": "", "want": "1 40000\n"}`, ExitInvalid},
		{"want with a NUL", nil, "{\"pid\": 1, \"want\": \"1 1\\u0000\\n\"}", ExitInvalid},
		{"binary", nil, "\x00\xff\xfe[", ExitInvalid},
		{"arguments", []string{"--help"}, `{"pid": 1}`, ExitUsage},
	} {
		var stderr bytes.Buffer
		got := Main(tc.args, strings.NewReader(tc.in), &stderr)
		line := stderr.String()
		if got != tc.want || !strings.HasPrefix(line, prefix) || strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
			t.Errorf("%s: status %d, stderr %q; want status %d and one line starting %q", tc.name, got, line, tc.want, prefix)
		}
	}
	// Longer than any request can be: refused without reading it all.
	var stderr bytes.Buffer
	big := &repeatReader{n: maxRequest + 4096}
	if got := Main(nil, big, &stderr); got != ExitInvalid || big.n < 4096-1 || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("oversized request: status %d, %d bytes left unread, stderr %q", got, big.n, stderr.String())
	}
}

// repeatReader yields n spaces.
type repeatReader struct{ n int }

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, errors.New("EOF")
	}
	k := min(len(p), r.n)
	for i := range p[:k] {
		p[i] = ' '
	}
	r.n -= k
	return k, nil
}

// FuzzParseRequests: no input makes the request parser panic, and what it
// accepts names only real pids.
func FuzzParseRequests(f *testing.F) {
	for _, s := range []string{`{"pid":1,"current":"","want":"1 1\n"}`, `[{"pid":2}]`, `[`, `{"pid":-5}`, ``, `[null]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		reqs, err := parseRequests(b)
		if err != nil {
			return
		}
		for _, r := range reqs {
			if r.PID <= 0 {
				t.Errorf("accepted pid %d from %q", r.PID, b)
			}
		}
	})
}

// TestRunStatus: each helper status reaches the caller as its error, with
// the helper's first line, without its prefix, as the message; the helper
// runs in a session of its own and gets exactly the request.
func TestRunStatus(t *testing.T) {
	for _, status := range []int{ExitOK, ExitError, ExitUsage, ExitPermission, ExitUnsupported, ExitInvalid, ExitGone, 70} {
		err := Run(context.Background(), []Request{{PID: 4242, Want: "1 1\n"}},
			Options{Env: helperEnv("exit", envStatus+"="+strconv.Itoa(status))})
		if status == ExitOK {
			if err != nil {
				t.Errorf("status 0: %v", err)
			}
			continue
		}
		var he *Error
		if !errors.As(err, &he) || he.Status != status || !errors.Is(err, StatusError(status)) {
			t.Errorf("status %d: %v, want an *Error with the status, wrapping %v", status, err, StatusError(status))
			continue
		}
		if want := `pid 4242, args ["__inject"], own session true`; he.Msg != want {
			t.Errorf("status %d: message %q, want %q", status, he.Msg, want)
		}
	}
}

// TestRunRealHelper: this test binary is the real helper (TestMain calls
// Init), which refuses a request it cannot do before any write. (The first
// request, for the helper's parent, would be refused as well.)
func TestRunRealHelper(t *testing.T) {
	err := Run(context.Background(), []Request{{PID: os.Getpid(), Want: "1 1\n"}, {PID: 0}}, Options{Env: helperEnv("")})
	var he *Error
	if !errors.As(err, &he) || he.Status != ExitInvalid || !errors.Is(err, ErrInvalid) || he.Msg != "bad request: pid 0 is not a process id" {
		t.Errorf("Run of a request for pid 0: %v, want status %d and the helper's message", err, ExitInvalid)
	}
}

// TestRunNotRegistered: a program that did not call Init never starts
// itself as the helper.
func TestRunNotRegistered(t *testing.T) {
	cmd := testenv.HelperCommand(t, "unregistered")
	if out, err := testenv.CombinedOutput(t, cmd, "helper unregistered"); err != nil {
		t.Errorf("%v: %s", err, out)
	}
}

// TestRunMissingHelper: a helper that cannot be opened is an error before
// any child starts.
func TestRunMissingHelper(t *testing.T) {
	err := Run(context.Background(), []Request{{PID: 1}}, Options{Path: t.TempDir() + "/none"})
	var he *Error
	if !errors.As(err, &he) || he.Status != -1 || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Run of a missing helper: %v", err)
	}
	if err := Run(context.Background(), []Request{{PID: 1}}, Options{Creds: &Creds{}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("Run with credentials and no target: %v, want ErrInvalid", err)
	}
}

// TestRunDeadline: a helper still running at the deadline is killed and
// reaped, and the run leaves no descriptor of its own behind.
func TestRunDeadline(t *testing.T) {
	// A first run opens what the runtime keeps (the poller's descriptors).
	if err := Run(context.Background(), []Request{{PID: 1}}, Options{Env: helperEnv("exit")}); err != nil {
		t.Fatal(err)
	}
	before := strings.Join(testenv.OwnFDs(t), ", ")
	pidFile := t.TempDir() + "/pid"
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := Run(ctx, []Request{{PID: 1}}, Options{Env: helperEnv("sleep", envPidFile+"="+pidFile)})
	var he *Error
	if !errors.As(err, &he) || !errors.Is(err, ErrTimeout) || he.Msg != "sleeping" {
		t.Fatalf("Run of a helper that sleeps: %v, want ErrTimeout with its message", err)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the helper never started: %v", err)
	}
	pid, _ := strconv.Atoi(string(b))
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("helper %d is still there (alive or unreaped) after Run: %v", pid, err)
	}
	if IsChild(pid) {
		t.Errorf("helper %d is still recorded as a child", pid)
	}
	if after := strings.Join(testenv.OwnFDs(t), ", "); after != before {
		t.Errorf("descriptors before Run %q, after %q", before, after)
	}
}

// TestCheckAttachThroughExec: a process that executes itself again and
// again, each time from a thread other than its leader, is never "gone" to
// Check while it lives. For a moment of each such execve its exiting
// leader holds its pid, and pidfd_getfd answered ESRCH: the mount refused
// writes to such a process with ENOENT (seen under load, in
// TestMountUserNamespace).
func TestCheckAttachThroughExec(t *testing.T) {
	testenv.RequireRoot(t)
	cmd := testenv.HelperCommand(t, "reexec")
	cmd.Env = append(cmd.Env, envExecs+"=200")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(pidfd)
	exited := func() bool {
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err == nil && n == 1
	}
	checks, gone := 0, 0
	for !exited() {
		err := Check(context.Background(), nil, AccessAttach, pid)
		switch {
		case errors.Is(err, ErrNoProcess):
			if !exited() {
				gone++
			}
		case err != nil:
			t.Fatalf("check %d: %v", checks, err)
		}
		checks++
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the re-executing helper: %v", err)
	}
	if gone > 0 || checks == 0 {
		t.Errorf("%d of %d checks called the live process gone", gone, checks)
	}
	t.Logf("%d checks during 200 execs", checks)
}

func TestLimitedBuffer(t *testing.T) {
	var l limitedBuffer
	l.Write([]byte("\n  " + prefix + "first line  \nsecond\n"))
	big := make([]byte, 10000)
	if n, _ := l.Write(big); n != len(big) || len(l.b) != 4096 {
		t.Errorf("Write of 10000 bytes: n %d, kept %d", n, len(l.b))
	}
	if got := l.line(); got != "first line" {
		t.Errorf("line() = %q", got)
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/semundo/semundo/image"
	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/sysvsem"
)

// binary is the semundo command, built once for all tests.
var binary string

func TestMain(m *testing.M) {
	holder.MainWith(m, func() func() {
		dir, err := os.MkdirTemp("", "semundo-cmd-test")
		if err != nil {
			panic(err)
		}
		// Readable by the unprivileged user of TestUnprivileged.
		os.Chmod(dir, 0o755)
		binary = filepath.Join(dir, "semundo")
		cmd := exec.Command("go", "build", "-o", binary, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
			os.Exit(1)
		}
		return func() { os.RemoveAll(dir) }
	})
}

// semundo runs the built command and returns stdout, stderr and the exit
// status.
func semundo(t *testing.T, cred *syscall.Credential, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := testenv.Run(t, cmd, "semundo "+strings.Join(args, " "))
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestShow(t *testing.T) {
	testenv.RequireRoot(t)
	a, b := holder.NewSet(t, 3), holder.NewSet(t, 1)
	ops := []holder.Op{
		{Semid: b, Num: 0, Val: 2, Undo: true},
		{Semid: a, Num: 2, Val: 5, Undo: true},
		{Semid: a, Num: 0, Val: 1, Undo: true},
	}
	h := holder.Start(t, "wait", ops, nil)
	other := holder.Start(t, "fork", nil, nil)

	want := fmt.Sprintf("%d -1 0 -5\n%d -2\n", a, b)
	if a > b {
		want = fmt.Sprintf("%d -2\n%d -1 0 -5\n", b, a)
	}
	out, errs, code := semundo(t, nil, "show", fmt.Sprint(h.PID))
	if code != 0 || out != want {
		t.Fatalf("show: exit %d, stdout %q, stderr %q; want %q", code, out, errs, want)
	}
	// A process without a list prints nothing.
	out, errs, code = semundo(t, nil, "show", fmt.Sprint(other.Child))
	if code != 0 || out != "" || errs != "" {
		t.Fatalf("show of a process without a list: exit %d, %q, %q", code, out, errs)
	}
	out, _, code = semundo(t, nil, "show", fmt.Sprint(h.PID), fmt.Sprint(other.Child))
	wantBoth := fmt.Sprintf("%d:\n%s%d:\n", h.PID, want, other.Child)
	if code != 0 || out != wantBoth {
		t.Fatalf("show of two pids: exit %d, %q, want %q", code, out, wantBoth)
	}
}

func TestShowErrors(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"show", "4194304"}, 1, "pid 4194304: no such process"},
		{[]string{"show", "1", "4194304"}, 1, "no such process"},
		{[]string{"show"}, 2, "at least one PID"},
		{[]string{"show", "abc"}, 2, "not a pid"},
		{[]string{"frob"}, 2, "unknown command"},
		{[]string{"who"}, 2, "needs a SEMID"},
		{[]string{"ps", "extra"}, 2, "no arguments"},
		{[]string{"who", "1", "--ipcns", "8321499135"}, 2, "not an IPC namespace inode"},
		{[]string{"checkpoint", "2"}, 1, "kernel thread"},
	} {
		out, errs, code := semundo(t, nil, tc.args...)
		if code != tc.code || out != "" || !strings.Contains(errs, tc.msg) || strings.Count(errs, "\n") != 1 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit %d, one line with %q", tc.args, code, out, errs, tc.code, tc.msg)
		}
	}
}

func TestPsAndWho(t *testing.T) {
	testenv.RequireRoot(t)
	s := holder.NewSet(t, 20)
	ops := []holder.Op{{Semid: s, Num: 19, Val: 3, Undo: true}, {Semid: s, Num: 0, Val: 1, Undo: true}}
	h1 := holder.Start(t, "wait", ops, nil)
	h2 := holder.Start(t, "wait", ops[:1], nil)

	out, errs, code := semundo(t, nil, "ps", "--json")
	if code != 0 {
		t.Fatalf("ps --json: exit %d: %s", code, errs)
	}
	var lists []jsonList
	if err := json.Unmarshal([]byte(out), &lists); err != nil {
		t.Fatalf("ps --json output: %v", err)
	}
	found := map[int][]int16{}
	for _, l := range lists {
		for _, e := range l.Entries {
			if int(e.Semid) == s {
				if e.Nsems != 20 || len(e.Adj) != 20 {
					t.Errorf("set %d: nsems %d, %d values", s, e.Nsems, len(e.Adj))
				}
				found[l.PIDs[0]] = e.Adj
			}
		}
	}
	if len(found) != 2 || found[h1.PID][19] != -3 || found[h1.PID][0] != -1 || found[h2.PID][0] != 0 {
		t.Fatalf("ps --json for set %d: %v", s, found)
	}

	out, _, code = semundo(t, nil, "ps")
	if code != 0 || !strings.Contains(out, fmt.Sprintf(" %d ", s)) || !strings.Contains(out, "...(+12)") {
		t.Fatalf("ps table: exit %d:\n%s", code, out)
	}

	out, _, code = semundo(t, nil, "who", fmt.Sprint(s))
	if code != 0 || !strings.Contains(out, fmt.Sprintf("%d ", h1.PID)) || !strings.Contains(out, "0:-1 19:-3") ||
		!strings.Contains(out, "19:-3") || !strings.Contains(out, fmt.Sprintf("%d ", h2.PID)) {
		t.Fatalf("who %d: exit %d:\n%s", s, code, out)
	}
}

// TestUnprivileged: without root, every reading command fails with one
// line, exit 3, and prints nothing on stdout.
func TestUnprivileged(t *testing.T) {
	testenv.RequireRoot(t)
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	for _, args := range [][]string{{"show", "1"}, {"ps"}, {"ps", "--json"}} {
		out, errs, code := semundo(t, nobody, args...)
		if code != 3 || out != "" || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, "root") {
			t.Errorf("%v as nobody: exit %d, stdout %q, stderr %q; want exit 3 and one line naming root", args, code, out, errs)
		}
	}
}

func TestSetCommand(t *testing.T) {
	testenv.RequireRoot(t)
	s := holder.NewSet(t, 3)
	h := holder.Start(t, "wait", nil, nil)
	file := filepath.Join(t.TempDir(), "list")
	want := fmt.Sprintf("%d 5 0 -7\n", s)
	os.WriteFile(file, []byte(want), 0o600)
	if out, errs, code := semundo(t, nil, "set", fmt.Sprint(h.PID), file); code != 0 || out != "" {
		t.Fatalf("set: exit %d, %q, %q", code, out, errs)
	}
	if out, _, _ := semundo(t, nil, "show", fmt.Sprint(h.PID)); out != want {
		t.Fatalf("show after set: %q, want %q", out, want)
	}
	for _, tc := range []struct {
		input string
		code  int
		msg   string
	}{
		{fmt.Sprintf("%d 1 2\n", s), 1, "has 3 semaphores, 2 values given"},
		{"2147483000 1\n", 1, "does not exist in the IPC namespace"},
		{fmt.Sprintf("%d 1 2 40000\n", s), 1, "out of range"},
		{"x\n", 1, "line 1"},
	} {
		cmd := exec.Command(binary, "set", fmt.Sprint(h.PID), "-")
		cmd.Stdin = strings.NewReader(tc.input)
		var errb bytes.Buffer
		cmd.Stderr = &errb
		err := testenv.Run(t, cmd, "semundo set")
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if code != tc.code || !strings.Contains(errb.String(), tc.msg) || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("set with %q: exit %d, stderr %q; want exit %d and one line with %q", tc.input, code, errb.String(), tc.code, tc.msg)
		}
		if out, _, _ := semundo(t, nil, "show", fmt.Sprint(h.PID)); out != want {
			t.Errorf("after refused %q: show %q, want unchanged %q", tc.input, out, want)
		}
	}
	if _, errs, code := semundo(t, nil, "set", "4194304", file); code != 1 || !strings.Contains(errs, "no such process") {
		t.Errorf("set of a missing pid: exit %d, %q", code, errs)
	}
	// A target whose user may not alter the set (mode 0600, root's): exit
	// 3, one line that says so once, nothing written.
	nobody := holder.Start(t, "wait", nil, &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}})
	_, errs, code := semundo(t, nil, "set", fmt.Sprint(nobody.PID), file)
	if code != exitPermission || strings.Count(errs, "\n") != 1 || strings.Count(errs, "permission denied") != 1 || !strings.Contains(errs, "may not alter set") {
		t.Errorf("set into uid 65534's process on root's 0600 set: exit %d, %q; want exit 3 and one line saying permission denied once", code, errs)
	}
	if out, _, _ := semundo(t, nil, "show", fmt.Sprint(nobody.PID)); out != "" {
		t.Errorf("after the refused set, pid %d holds %q", nobody.PID, out)
	}
	// A confined root (no CAP_SYS_PTRACE, and without CAP_KILL, which
	// the target holds) is refused by ptrace: the message must not tell
	// root to run as root.
	setpriv := testenv.RequireTool(t, "setpriv")
	cmd := exec.Command(setpriv, "--bounding-set=-sys_ptrace,-kill", binary, "set", fmt.Sprint(h.PID), "-")
	cmd.Stdin = strings.NewReader(fmt.Sprintf("%d 1 1 1\n", s))
	var errb bytes.Buffer
	cmd.Stderr = &errb
	err := testenv.Run(t, cmd, "semundo set under setpriv")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitPermission || !strings.Contains(errb.String(), "ptrace refused to root") || strings.Count(errb.String(), "\n") != 1 {
		t.Errorf("set by a root without CAP_SYS_PTRACE and CAP_KILL: %v, %q; want exit 3 and one line saying ptrace refused root", err, errb.String())
	}
	if out, _, _ := semundo(t, nil, "show", fmt.Sprint(h.PID)); out != want {
		t.Errorf("after the refused set: show %q, want unchanged %q", out, want)
	}
}

// TestExecUndo: the exec'd program holds the file's adjustments; when it is
// killed, the values change as the file said. It runs with the
// RLIMIT_MEMLOCK semundo was given, which opening the reader lifts on
// kernels before 5.11.
func TestExecUndo(t *testing.T) {
	testenv.RequireRoot(t)
	s := holder.NewSet(t, 2)
	if err := sysvsem.SetAll(s, []uint16{10, 10}); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "list")
	want := fmt.Sprintf("%d -3 4\n", s)
	os.WriteFile(file, []byte(want), 0o600)
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		testenv.Missing(t, "prlimit (util-linux)", err.Error())
	}
	cmd := exec.Command(prlimit, "--memlock=65536:131072", binary, "exec", "--undo", file, "--", "sleep", "1000")
	var errb testenv.SyncBuffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("semundo exec's stderr: %q", errb.String())
		}
	})
	testenv.Eventually(t, fmt.Sprintf("semundo exec (pid %d) to become sleep", cmd.Process.Pid), func() bool {
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid))
		return strings.TrimSpace(string(comm)) == "sleep"
	})
	if out, _, _ := semundo(t, nil, "show", fmt.Sprint(cmd.Process.Pid)); out != want {
		t.Fatalf("show of the exec'd program: %q, want %q", out, want)
	}
	limits, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^Max locked memory +65536 +131072 +bytes`).Match(limits) {
		t.Errorf("the exec'd program's limits, after prlimit --memlock=65536:131072:\n%s", limits)
	}
	cmd.Process.Kill()
	cmd.Wait()
	vals, err := sysvsem.GetAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if vals[0] != 7 || vals[1] != 14 {
		t.Fatalf("values after the program died: %v, want [7 14]", vals)
	}
}

// TestRestoreSetsUnprivileged: without the right to write sem_next_id,
// restore --sets fails with one line, exit 3, and creates nothing.
func TestRestoreSetsUnprivileged(t *testing.T) {
	testenv.RequireRoot(t)
	key := int32(0x5e770000 + time.Now().Nanosecond()%0xffff)
	img := &image.Image{
		Created: time.Now().UTC(), KernelRelease: "test", SemundoVersion: "test", IPCNamespace: 1,
		Sets: []image.Set{{ID: 31000, Key: key, Mode: 0o666, Nsems: 2, Values: []uint16{1, 2}}},
	}
	dir := t.TempDir()
	// t.TempDir makes two levels, both private to root.
	os.Chmod(dir, 0o755)
	os.Chmod(filepath.Dir(dir), 0o755)
	file := filepath.Join(dir, "img.json")
	if err := image.WriteFile(file, img); err != nil {
		t.Fatal(err)
	}
	os.Chmod(file, 0o644)
	before, err := sysvsem.Enumerate()
	if err != nil {
		t.Fatal(err)
	}
	out, errs, code := semundo(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "restore", file, "--sets")
	if code != 3 || out != "" || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, "needs root") {
		t.Fatalf("restore --sets as nobody: exit %d, stdout %q, stderr %q; want exit 3, one line saying it needs root", code, out, errs)
	}
	after, err := sysvsem.Enumerate()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range after {
		if e.Stat.Perm.Key == key {
			sysvsem.Remove(e.ID)
			t.Fatalf("set with key %#x was created", key)
		}
	}
	t.Logf("sets before %d, after %d", len(before), len(after))
}

// TestRestoreStdin: `checkpoint` without -o writes the image to stdout and
// `restore -` reads it from stdin, so a restorer can pipe it; a damaged
// image on stdin is one line naming stdin.
func TestRestoreStdin(t *testing.T) {
	testenv.RequireRoot(t)
	s := holder.NewSet(t, 2)
	h := holder.Start(t, "wait", []holder.Op{{Semid: s, Num: 1, Val: 3, Undo: true}}, nil)
	img, errs, code := semundo(t, nil, "checkpoint", fmt.Sprint(h.PID))
	if code != 0 {
		t.Fatalf("checkpoint: exit %d, %s", code, errs)
	}
	want := fmt.Sprintf("%d 0 -3\n", s)
	// Change the list, then put the checkpointed one back from stdin.
	if _, errs, code := semundoIn(t, fmt.Sprintf("%d 9 9\n", s), "set", fmt.Sprint(h.PID), "-"); code != 0 {
		t.Fatalf("set: exit %d, %s", code, errs)
	}
	if _, errs, code := semundoIn(t, img, "restore", "-", "--undo"); code != 0 {
		t.Fatalf("restore - --undo: exit %d, %s", code, errs)
	}
	if out, _, _ := semundo(t, nil, "show", fmt.Sprint(h.PID)); out != want {
		t.Errorf("after restore from stdin: %q, want %q", out, want)
	}
	out, errs, code := semundoIn(t, img[:len(img)/2], "restore", "-", "--undo")
	if code != 1 || out != "" || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, "stdin") {
		t.Errorf("restore of half an image on stdin: exit %d, %q, %q; want exit 1, one line naming stdin", code, out, errs)
	}
}

// semundoIn runs semundo with stdin.
func semundoIn(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := testenv.Run(t, cmd, "semundo "+strings.Join(args, " "))
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

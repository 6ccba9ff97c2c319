package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/helper"
	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/sysvsem"
	"github.com/semundo/semundo/undo"
	"github.com/semundo/semundo/writer"
	"golang.org/x/sys/unix"
)

// Issue 11, sections 2, 3 and 6: semundo never writes into itself, a
// failed exec --undo changes no value, and the smaller defects.

// fakeInjectExit makes this test binary, when childInjector runs it as
// `/proc/self/exe __inject`, fail as a helper would with the status in
// SEMUNDO_TEST_INJECT_EXIT (set only by TestInjectorExitStatus). Without
// it, the test binary is the real helper, as semundo's main makes it.
const fakeInjectExit = "SEMUNDO_TEST_INJECT_EXIT"

func init() {
	if len(os.Args) > 1 && os.Args[1] == "__inject" {
		if v := os.Getenv(fakeInjectExit); v != "" {
			code, _ := strconv.Atoi(v)
			fmt.Fprintf(os.Stderr, "semundo __inject: pid 1: failed as asked (status %d)\n", code)
			os.Exit(code)
		}
	}
	helper.Init()
}

// valueSet creates a one-semaphore set holding value, removed at cleanup.
func valueSet(t *testing.T, value int) int {
	t.Helper()
	s := holder.NewSet(t, 1)
	if err := sysvsem.SetVal(s, 0, value); err != nil {
		t.Fatal(err)
	}
	return s
}

func semval(t *testing.T, s int) int {
	t.Helper()
	v, err := sysvsem.GetVal(s, 0)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// listFile writes text into a file of the test's and returns its path.
func listFile(t *testing.T, text string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "list")
	if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// runCmd runs cmd with a deadline of two minutes, killing it on expiry,
// and returns its stdout, stderr and exit status.
func runCmd(t *testing.T, what string, cmd *exec.Cmd) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	// A descendant left holding the output must not hold the test.
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s did not exit within 2 minutes (killed)", what)
	}
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

// oneLine reports whether s is exactly one line, and a short one.
func oneLine(s string) bool {
	return strings.Count(s, "\n") == 1 && strings.HasSuffix(s, "\n") && len(s) < 400
}

// TestSetRefusesItself: `sh -c 'exec semundo set $$ FILE'` names
// semundo's own pid. It must exit 1 with one line pointing to exec
// --undo, and the value must not move when semundo exits.
func TestSetRefusesItself(t *testing.T) {
	testenv.RequireRoot(t)
	s := valueSet(t, 100)
	f := listFile(t, fmt.Sprintf("%d 5\n", s))
	out, errs, code := runCmd(t, "semundo set $$", exec.Command("sh", "-c", `exec "$0" set $$ "$1"`, binary, f))
	if code != 1 || out != "" || !oneLine(errs) || !strings.Contains(errs, "is semundo itself") || !strings.Contains(errs, "semundo exec --undo") {
		t.Errorf("set of its own pid: exit %d, stdout %q, stderr %q; want exit 1 and one line pointing to semundo exec --undo", code, out, errs)
	}
	if v := semval(t, s); v != 100 {
		t.Errorf("value after semundo exited: %d, want 100", v)
	}
}

// shareSrc clones a child with CLONE_SYSVSEM (so both share one undo
// list), prints its pid, then becomes `semundo set CHILD FILE`: semundo
// then shares its undo list with its target.
const shareSrc = `
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

static char stack[65536];
static int child(void *arg) {
	/* The test reads semundo's output to its end: do not hold it open. */
	close(1);
	close(2);
	for (;;) pause();
	return 0;
}

int main(int argc, char **argv) {
	if (argc != 3) return 2;
	pid_t q = clone(child, stack + sizeof stack, CLONE_SYSVSEM | SIGCHLD, NULL);
	if (q < 0) { perror("clone"); return 2; }
	char pid[32];
	snprintf(pid, sizeof pid, "%d", q);
	printf("%d\n", q);
	fflush(stdout);
	execl(argv[1], argv[1], "set", pid, argv[2], (char *)0);
	perror("execl");
	return 2;
}
`

// TestSetRefusesSharedList: a target that shares semundo's undo list (a
// CLONE_SYSVSEM sibling, compared with kcmp) is refused like semundo
// itself; killing the sibling afterwards leaves the value as it was.
func TestSetRefusesSharedList(t *testing.T) {
	testenv.RequireRoot(t)
	bin := testenv.BuildC(t, "share", shareSrc)
	s := valueSet(t, 100)
	f := listFile(t, fmt.Sprintf("%d 5\n", s))
	cmd := exec.Command(bin, binary, f)
	out, errs, code := runCmd(t, "share (semundo set of a CLONE_SYSVSEM sibling)", cmd)
	sib, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("share printed %q, stderr %q", out, errs)
	}
	// The sibling, orphaned, is this process's (a subreaper's) child now.
	defer func() {
		unix.Kill(sib, unix.SIGKILL)
		var ws unix.WaitStatus
		unix.Wait4(sib, &ws, 0, nil)
		if v := semval(t, s); v != 100 {
			t.Errorf("value after the sibling holding the shared list died: %d, want 100", v)
		}
	}()
	if code != 1 || !oneLine(errs) || !strings.Contains(errs, "shares the undo list of semundo") || !strings.Contains(errs, "semundo exec --undo") {
		t.Errorf("set of a process sharing semundo's list: exit %d, stderr %q; want exit 1 and one line saying it shares semundo's list", code, errs)
	}
}

// checkpointOf writes an image of pid's list and returns its path.
func checkpointOf(t *testing.T, pid int) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "img.json")
	if _, errs, code := semundo(t, nil, "checkpoint", "-o", img, strconv.Itoa(pid)); code != 0 {
		t.Fatalf("checkpoint %d: exit %d, %s", pid, code, errs)
	}
	return img
}

// TestRestoreUndoRefusesItself: `restore --undo --pid OLD=$$` where $$ is
// semundo is refused before anything changes: exit 1, one line, the value
// unchanged after semundo exits; with --sets as well (no flag), in a fresh
// IPC namespace, no set is created either.
func TestRestoreUndoRefusesItself(t *testing.T) {
	testenv.RequireRoot(t)
	s := valueSet(t, 100)
	h := holder.Start(t, "wait", []holder.Op{{Semid: s, Num: 0, Val: -5, Undo: true}}, nil)
	img := checkpointOf(t, h.PID)
	h.Stop() // its exit gives the 5 back: the value is 100 again
	if v := semval(t, s); v != 100 {
		t.Fatalf("value after the holder exited: %d, want 100", v)
	}
	old := strconv.Itoa(h.PID)
	out, errs, code := runCmd(t, "semundo restore --undo", exec.Command("sh", "-c", `exec "$0" restore "$1" --undo --pid "$2"=$$`, binary, img, old))
	if code != 1 || out != "" || !oneLine(errs) || !strings.Contains(errs, "is semundo itself") || !strings.Contains(errs, "semundo exec --undo") {
		t.Errorf("restore --undo into itself: exit %d, stdout %q, stderr %q; want exit 1 and one line pointing to exec --undo", code, out, errs)
	}
	if v := semval(t, s); v != 100 {
		t.Errorf("value after semundo exited: %d, want 100", v)
	}
	// Both steps, in a fresh namespace: the refusal comes before the
	// sets are created. The outer shell lists the namespace's sets after.
	unshare := testenv.RequireTool(t, "unshare")
	script := `sh -c 'exec "$0" restore "$1" --pid "$2"=$$' "$0" "$1" "$2"; echo "status $?"; cat /proc/sysvipc/sem`
	out, errs, _ = runCmd(t, "unshare --ipc semundo restore", exec.Command(unshare, "--ipc", "sh", "-c", script, binary, img, old))
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || lines[0] != "status 1" || !strings.HasPrefix(strings.TrimSpace(lines[1]), "key") || !oneLine(errs) || !strings.Contains(errs, "is semundo itself") {
		t.Errorf("restore (sets and lists) into itself in a fresh namespace: stdout %q, stderr %q; want status 1, one line, and no set in the namespace", out, errs)
	}
}

// badELF is an ELF header with nothing valid behind it.
var badELF = append([]byte("\x7fELF\x02\x01\x01"), bytes.Repeat([]byte{0xff}, 120)...)

// TestExecUndoGivesBack: when execve fails after semundo took the list,
// semundo gives the adjustments back before it exits: exit 1, one line,
// and the value (checked with GETVAL) is what it was before. Each failure
// here passes the pre-check (LookPath) but execve refuses it, except the
// noexec mount, which the pre-check already refuses (also tested).
func TestExecUndoGivesBack(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	noexec := filepath.Join(dir, "noexec")
	if err := os.Mkdir(noexec, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", noexec, "tmpfs", unix.MS_NOEXEC, "size=1m"); err != nil {
		t.Fatalf("mount a noexec tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(noexec, unix.MNT_DETACH) })
	trueBin, err := os.ReadFile("/bin/true")
	if err != nil {
		t.Fatal(err)
	}
	huge := make([]string, 64)
	for i := range huge {
		huge[i] = strings.Repeat("x", 8192) // 512 KiB in all
	}
	for _, tc := range []struct {
		name  string
		cmd   []string
		stack uint64 // RLIMIT_STACK to give semundo once it runs (0: as is)
		say   string
	}{
		{"garbage ELF", []string{write("garbage", badELF)}, 0, "exec format error"},
		{"bad #! line", []string{write("badline", []byte("#!\n"))}, 0, "exec format error"},
		{"missing interpreter", []string{write("nointerp", []byte("#!/nonexistent\n"))}, 0, "no such file or directory"},
		{"noexec mount", []string{filepath.Join(noexec, "true")}, 0, "permission denied"},
		// semundo starts with 512 KiB of arguments (the default 8 MiB
		// stack allows 2 MiB); then its stack limit drops to 1 MiB, which
		// allows 256 KiB at its own execve.
		{"E2BIG", append([]string{"/bin/true"}, huge...), 1 << 20, "argument list too long"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "noexec mount" {
				if err := os.WriteFile(tc.cmd[0], trueBin, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			s := valueSet(t, 100)
			cmd := exec.Command(binary, append([]string{"exec", "--undo", "-", "--"}, tc.cmd...)...)
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			var out, errb bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
			// semundo reads the whole list before it takes it. The kernel
			// stores the stack limit of an execve late in the exec, after
			// Start returns: change it once semundo waits for its stdin.
			if tc.stack != 0 {
				waitReadingStdin(t, cmd.Process.Pid)
				var lim unix.Rlimit
				if err := unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_STACK, nil, &lim); err != nil {
					t.Fatal(err)
				}
				lim.Cur = tc.stack
				if err := unix.Prlimit(cmd.Process.Pid, unix.RLIMIT_STACK, &lim, nil); err != nil {
					t.Fatal(err)
				}
			}
			fmt.Fprintf(stdin, "%d 5\n", s)
			stdin.Close()
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err = <-done:
			case <-time.After(2 * time.Minute):
				cmd.Process.Kill()
				t.Fatalf("semundo exec --undo of %s did not exit within 2 minutes (killed)", tc.name)
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 || out.Len() != 0 || !oneLine(errb.String()) || !strings.Contains(errb.String(), tc.say) {
				t.Errorf("exec --undo of %s: %v, stdout %q, stderr %q; want exit 1 and one line saying %q", tc.name, err, out.String(), errb.String(), tc.say)
			}
			if v := semval(t, s); v != 100 {
				t.Errorf("exec --undo of %s: value %d after semundo exited, want 100 (stderr %q)", tc.name, v, errb.String())
			}
		})
	}
}

// waitReadingStdin waits until a thread of pid is blocked in read(0, ...).
func waitReadingStdin(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/syscall", pid))
		for _, f := range tasks {
			if b, err := os.ReadFile(f); err == nil && strings.HasPrefix(string(b), "0 0x0 ") {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("semundo (pid %d) did not read its stdin within 2 minutes", pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestZeroEntries: a list holding an all-zero entry is written as one,
// by set and by restore --undo: show prints it back, and no value moves,
// also for a semaphore at its ceiling (32767), where the +1 first would
// fail.
func TestZeroEntries(t *testing.T) {
	testenv.RequireRoot(t)
	for _, value := range []int{0, 7, 32767} {
		s := holder.NewSet(t, 2)
		if err := sysvsem.SetAll(s, []uint16{uint16(value), 3}); err != nil {
			t.Fatal(err)
		}
		h := holder.Start(t, "wait", nil, nil)
		want := fmt.Sprintf("%d 0 0\n", s)
		if _, errs, code := semundoIn(t, want, "set", strconv.Itoa(h.PID), "-"); code != 0 {
			t.Fatalf("set %q (value %d): exit %d, %s", want, value, code, errs)
		}
		if out, errs, _ := semundo(t, nil, "show", strconv.Itoa(h.PID)); out != want {
			t.Errorf("show after set %q (value %d): %q, %q", want, value, out, errs)
		}
		// The image of that list, restored into a process without one.
		img := checkpointOf(t, h.PID)
		h2 := holder.Start(t, "wait", nil, nil)
		if _, errs, code := semundo(t, nil, "restore", img, "--undo", "--pid", fmt.Sprintf("%d=%d", h.PID, h2.PID)); code != 0 {
			t.Fatalf("restore --undo of %q (value %d): exit %d, %s", want, value, code, errs)
		}
		if out, errs, _ := semundo(t, nil, "show", strconv.Itoa(h2.PID)); out != want {
			t.Errorf("show after restore --undo of %q (value %d): %q, %q", want, value, out, errs)
		}
		vals, err := sysvsem.GetAll(s)
		if err != nil {
			t.Fatal(err)
		}
		if int(vals[0]) != value || vals[1] != 3 {
			t.Errorf("values after the writes: %v, want [%d 3]", vals, value)
		}
	}
}

// TestInjectorExitStatus: the command exits with the injection child's
// status when it is one of the documented ones (1 to 4); the child's codes
// for the file system daemon (5 invalid, 6 gone) and others are errors
// (1). The child here is this test binary, failing as asked (see init).
func TestInjectorExitStatus(t *testing.T) {
	for child, want := range map[int]int{1: 1, 2: 2, 3: 3, 4: 4, 5: 1, 6: 1, 7: 1, 70: 1} {
		t.Setenv(fakeInjectExit, strconv.Itoa(child))
		err := childInjector([]writer.Job{{PID: 1, Current: nil, Want: undo.List{{Semid: 1, Adj: []int16{1}}}}})
		if err == nil {
			t.Fatalf("helper exiting %d: no error", child)
		}
		if got := exitCode(err); got != want || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), fmt.Sprintf("status %d", child)) {
			t.Errorf("helper exiting %d: command status %d, error %q; want %d and the helper's line", child, got, err, want)
		}
	}
}

// tracerSrc seizes the pid it is given (ptrace, without stopping it),
// says so, and waits; its death detaches it.
const tracerSrc = `
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/ptrace.h>

int main(int argc, char **argv) {
	if (ptrace(PTRACE_SEIZE, atoi(argv[1]), 0, 0) != 0) { perror("seize"); return 2; }
	printf("traced\n");
	fflush(stdout);
	for (;;) pause();
}
`

// TestSetTraced: a target another process traces (TracerPid) is refused
// with exit 1 (root would not help, so not 3), naming the tracer's pid,
// and nothing is written.
func TestSetTraced(t *testing.T) {
	testenv.RequireRoot(t)
	bin := testenv.BuildC(t, "tracer", tracerSrc)
	s := holder.NewSet(t, 1)
	h := holder.Start(t, "wait", nil, nil)
	tracer := exec.Command(bin, strconv.Itoa(h.PID))
	stdout, err := tracer.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	tracer.Stderr = os.Stderr
	if err := tracer.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tracer.Process.Kill(); tracer.Wait() })
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
	}()
	select {
	case line := <-ready:
		if line != "traced\n" {
			t.Fatalf("tracer said %q", line)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("the tracer did not seize the target within 2 minutes")
	}
	out, errs, code := semundoIn(t, fmt.Sprintf("%d 4\n", s), "set", strconv.Itoa(h.PID), "-")
	if code != 1 || out != "" || !oneLine(errs) || !strings.Contains(errs, fmt.Sprintf("traced by pid %d", tracer.Process.Pid)) {
		t.Errorf("set of a traced process: exit %d, stdout %q, stderr %q; want exit 1 and one line naming tracer %d", code, out, errs, tracer.Process.Pid)
	}
	if out, _, _ := semundo(t, nil, "show", strconv.Itoa(h.PID)); out != "" {
		t.Errorf("after the refused set, pid %d holds %q", h.PID, out)
	}
}

// TestWhoNoNamespace: who in an IPC namespace no process is in exits 1,
// one line on stderr naming the namespace and how to list them, nothing on
// stdout.
func TestWhoNoNamespace(t *testing.T) {
	testenv.RequireRoot(t)
	out, errs, code := semundo(t, nil, "who", "3", "--ipcns", "123")
	if code != 1 || out != "" || !oneLine(errs) || !strings.Contains(errs, "IPC namespace 123") || !strings.Contains(errs, "ls -l /proc/*/ns/ipc") {
		t.Errorf("who 3 --ipcns 123: exit %d, stdout %q, stderr %q; want exit 1 and one line on stderr", code, out, errs)
	}
}

// TestRestoreMessages: an image of format semundo/0 is not "for a newer
// semundo"; a key or size mismatch names both sets without a stray "no
// such set", and a set of one semaphore is "1 semaphore".
func TestRestoreMessages(t *testing.T) {
	testenv.RequireRoot(t)
	s := holder.NewSet(t, 1)
	h := holder.Start(t, "wait", []holder.Op{{Semid: s, Num: 0, Val: 2, Undo: true}}, nil)
	b, err := os.ReadFile(checkpointOf(t, h.PID))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	v0 := filepath.Join(dir, "v0.json")
	os.WriteFile(v0, bytes.Replace(b, []byte(`"semundo/1"`), []byte(`"semundo/0"`), 1), 0o600)
	out, errs, code := semundo(t, nil, "restore", v0, "--undo")
	if code != 1 || out != "" || !oneLine(errs) || strings.Contains(errs, "newer") || !strings.Contains(errs, `"semundo/0"`) || !strings.Contains(errs, `"semundo/1"`) {
		t.Errorf("restore of a semundo/0 image: exit %d, stdout %q, stderr %q; want exit 1, one line naming both versions and no advice to upgrade", code, out, errs)
	}
	// The image's set had another key: the live one is another set.
	var img map[string]any
	if err := json.Unmarshal(b, &img); err != nil {
		t.Fatal(err)
	}
	for _, set := range img["sets"].([]any) {
		if m := set.(map[string]any); m["id"] == float64(s) {
			m["key"] = 0x5e3a0001
		}
	}
	other, _ := json.Marshal(img)
	otherFile := filepath.Join(dir, "other.json")
	os.WriteFile(otherFile, other, 0o600)
	out, errs, code = semundo(t, nil, "restore", otherFile, "--undo")
	if code != 1 || out != "" || !oneLine(errs) || strings.HasSuffix(errs, "no such set\n") ||
		!strings.Contains(errs, "has key 0x0 and 1 semaphore, the image's had key 0x5e3a0001 and 1 semaphore") {
		t.Errorf("restore into a set of another key: exit %d, stdout %q, stderr %q; want exit 1, one line naming both keys, \"1 semaphore\", no \"no such set\"", code, out, errs)
	}
	// A list of two values for that one-semaphore set.
	_, errs, code = semundoIn(t, fmt.Sprintf("%d 1 2\n", s), "set", strconv.Itoa(h.PID), "-")
	if code != 1 || !oneLine(errs) || !strings.Contains(errs, "has 1 semaphore, 2 values given") {
		t.Errorf("set of 2 values into a 1-semaphore set: exit %d, %q; want \"has 1 semaphore, 2 values given\"", code, errs)
	}
}

// TestPidArguments: every command reads pids by the mount's rules: "+1"
// and "01" are not pids, nor is a number above PID_MAX_LIMIT (exit 2,
// "not a pid", before any process is looked up).
func TestPidArguments(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct {
		args []string
		say  string
	}{
		{[]string{"show", "+10511"}, `"+10511" is not a pid`},
		{[]string{"show", "010511"}, `"010511" is not a pid`},
		{[]string{"show", "2147483648"}, "out of range"},
		{[]string{"show", "1", "4194305"}, "out of range"},
		{[]string{"set", "+1", "/dev/null"}, "not a pid"},
		{[]string{"checkpoint", "01"}, "not a pid"},
		{[]string{"restore", "x", "--undo", "--pid", "1=+2"}, "not a pid"},
		{[]string{"restore", "x", "--undo", "--pid", "01=2"}, "not a pid"},
	} {
		out, errs, code := semundo(t, nil, tc.args...)
		if code != 2 || out != "" || !oneLine(errs) || !strings.Contains(errs, tc.say) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and one line with %q", tc.args, code, out, errs, tc.say)
		}
	}
}

// TestCriuScriptByHand: criu-script without CRIU's environment says what
// it is and how to use it, exit 2.
func TestCriuScriptByHand(t *testing.T) {
	cmd := exec.Command(binary, "criu-script")
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CRTOOLS_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	out, errs, code := runCmd(t, "semundo criu-script", cmd)
	if code != 2 || out != "" || !oneLine(errs) || !strings.Contains(errs, "CRIU's action script") || !strings.Contains(errs, "--action-script") {
		t.Errorf("criu-script by hand: exit %d, stdout %q, stderr %q; want exit 2 and one line saying it is CRIU's action script", code, out, errs)
	}
}

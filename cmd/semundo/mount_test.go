package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/sysvsem"
	"golang.org/x/sys/unix"
)

func TestMountUsage(t *testing.T) {
	for _, args := range [][]string{{"mount"}, {"mount", "--bogus", "/tmp"}, {"mount", "/a", "/b"}} {
		out, errs, code := semundo(t, nil, args...)
		if code != exitUsage || out != "" || strings.Count(errs, "\n") != 1 {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want exit 2 and one line", args, code, out, errs)
		}
	}
	out, _, code := semundo(t, nil, "mount", "--help")
	if code != 0 || !strings.Contains(out, "semundo exec --undo FILE -- CMD") || !strings.Contains(out, "EDEADLK") {
		t.Errorf("mount --help: exit %d, %q", code, out)
	}
	// A missing directory or a file: one line naming it, nothing mounted.
	missing := filepath.Join(t.TempDir(), "none")
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for dir, say := range map[string]string{missing: "create the directory first", file: "is not a directory"} {
		out, errs, code := semundo(t, nil, "mount", dir)
		if code != exitError || out != "" || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, dir) || !strings.Contains(errs, say) {
			t.Errorf("mount %s: exit %d, %q, %q; want exit 1 and one line naming it, saying %q", dir, code, out, errs, say)
		}
	}
	nobody := &syscall.Credential{Uid: 65534, Gid: 65534}
	out, errs, code := semundo(t, nobody, "mount", t.TempDir())
	if code != exitPermission || out != "" || !strings.Contains(errs, "root") {
		t.Errorf("mount as nobody: exit %d, %q, %q; want exit 3 naming root", code, out, errs)
	}
}

// mounted reports whether dir has a mount on it.
func mounted(t *testing.T, dir string) bool {
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(mi), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// daemon is a `semundo mount` running in the background.
type daemon struct {
	cmd    *exec.Cmd
	dir    string
	stderr *testenv.SyncBuffer
}

// startMount runs `semundo mount ARGS DIR` on a new directory every user can
// reach and waits until it is mounted. Cleanup stops it and makes sure
// nothing stays mounted.
func startMount(t *testing.T, args ...string) *daemon {
	t.Helper()
	testenv.RequireRoot(t)
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Missing(t, "/dev/fuse", "load the fuse module (modprobe fuse)")
	}
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	d := &daemon{dir: dir, stderr: &testenv.SyncBuffer{}}
	d.cmd = exec.Command(binary, append(append([]string{"mount"}, args...), dir)...)
	d.cmd.Stderr = d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			d.cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { d.cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				d.cmd.Process.Kill()
				<-done
			}
		}
		if mounted(t, dir) {
			t.Errorf("%s still mounted after the daemon ended", dir)
			unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("semundo mount %s: stderr:\n%s", dir, d.stderr.String())
		}
	})
	pid := d.cmd.Process.Pid
	testenv.EventuallyErr(t, fmt.Sprintf("semundo mount (pid %d) to mount %s", pid, dir), func() (bool, error) {
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); strings.Contains(string(b), ") Z ") {
			return false, errors.New("semundo mount exited")
		}
		return mounted(t, dir), nil
	})
	return d
}

// stop sends sig and returns the exit status.
func (d *daemon) stop(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	d.cmd.Process.Signal(sig)
	err := testenv.Wait(t, d.cmd, "semundo mount "+d.dir)
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0
}

func TestMountCommand(t *testing.T) {
	d := startMount(t, "--allow-other")
	a := holder.NewSet(t, 2)
	h := holder.Start(t, "wait", []holder.Op{{Semid: a, Num: 1, Val: 3, Undo: true}}, nil)
	file := filepath.Join(d.dir, strconv.Itoa(h.PID), "semundo")

	got, err := os.ReadFile(file)
	show, errs, code := semundo(t, nil, "show", strconv.Itoa(h.PID))
	if err != nil || code != 0 || string(got) != show || show != fmt.Sprintf("%d 0 -3\n", a) {
		t.Errorf("cat %s = %q, %v; semundo show = %q (exit %d, %s)", file, got, err, show, code, errs)
	}

	// Writes go through `semundo __inject` with the writer's credentials.
	bash := testenv.RequireTool(t, "bash")
	write := func(cred *syscall.Credential, line string) (string, error) {
		cmd := exec.Command(bash, "-c", fmt.Sprintf("echo %q > %s", line, file))
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = "/"
		out, err := testenv.CombinedOutput(t, cmd, "a write to "+file)
		return string(out), err
	}
	if out, err := write(&syscall.Credential{Uid: 65534, Gid: 65534}, fmt.Sprintf("%d 1 1", a)); err == nil || !strings.Contains(out, "Permission denied") {
		t.Errorf("write as nobody: %v, %q; want Permission denied", err, out)
	}
	if out, err := write(nil, fmt.Sprintf("%d 4 -2", a)); err != nil {
		t.Errorf("write as root: %v, %s", err, out)
	}
	show, _, _ = semundo(t, nil, "show", strconv.Itoa(h.PID))
	if want := fmt.Sprintf("%d 4 -2\n", a); show != want {
		t.Errorf("after the write, show says %q, want %q; daemon log:\n%s", show, want, d.stderr.String())
	}

	// A second daemon on the same directory fails clearly.
	out, errs, code := semundo(t, nil, "mount", d.dir)
	if code != exitError || out != "" || !strings.Contains(errs, d.dir) || !strings.Contains(errs, "already") || strings.Count(errs, "\n") != 1 {
		t.Errorf("second mount: exit %d, %q, %q; want exit 1 and one line naming %s", code, out, errs, d.dir)
	}

	if code := d.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("SIGTERM: exit %d; stderr:\n%s", code, d.stderr.String())
	}
	if mounted(t, d.dir) {
		t.Errorf("%s still mounted after SIGTERM", d.dir)
	}
	t.Logf("daemon stderr:\n%s", d.stderr.String())
}

func TestMountSIGINT(t *testing.T) {
	d := startMount(t)
	if _, err := os.ReadDir(d.dir); err != nil {
		t.Fatal(err)
	}
	if code := d.stop(t, syscall.SIGINT); code != 0 {
		t.Errorf("SIGINT: exit %d; stderr:\n%s", code, d.stderr.String())
	}
	if mounted(t, d.dir) {
		t.Errorf("%s still mounted after SIGINT", d.dir)
	}
}

// A shell inside the mount keeps it busy: SIGTERM detaches it lazily, says
// so, and exits 0.
func TestMountBusySIGTERM(t *testing.T) {
	d := startMount(t)
	sh := exec.Command("sleep", "1000")
	sh.Dir = d.dir
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sh.Process.Kill()
		sh.Wait()
	})
	if code := d.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("SIGTERM while busy: exit %d; stderr:\n%s", code, d.stderr.String())
	}
	if mounted(t, d.dir) {
		t.Errorf("%s still mounted after SIGTERM", d.dir)
	}
	if !strings.Contains(d.stderr.String(), "detached lazily") {
		t.Errorf("the daemon did not report the lazy unmount; stderr:\n%s", d.stderr.String())
	}
}

// runFor runs a command with a 2-minute deadline and returns its stdout,
// stderr and exit status.
func runFor(t *testing.T, name string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = "/"
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %q still running after 2 minutes, killed; stderr %q", name, args, errb.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

// The reproducer, through the command: root of a user namespace of
// its own (a user's `unshare -r`) cannot write a root process's list, which
// it cannot ptrace; it can write the list of its own child, which it can.
func TestMountUserNamespace(t *testing.T) {
	runuser := testenv.RequireTool(t, "runuser")
	testenv.RequireTool(t, "unshare")
	d := startMount(t, "--allow-other")
	a := holder.NewSet(t, 1)
	h := holder.Start(t, "wait", []holder.Op{{Semid: a, Num: 0, Val: 3, Undo: true}}, nil)
	before, _, _ := semundo(t, nil, "show", strconv.Itoa(h.PID))
	file := filepath.Join(d.dir, strconv.Itoa(h.PID), "semundo")
	_, errs, code := runFor(t, runuser, "-u", "nobody", "--", "unshare", "-r", "sh", "-c", fmt.Sprintf(`echo "%d 7" > %s`, a, file))
	if code == 0 || !strings.Contains(errs, "Permission denied") {
		t.Errorf("user-namespace root writing root's process: exit %d, %q; want Permission denied", code, errs)
	}
	if after, _, _ := semundo(t, nil, "show", strconv.Itoa(h.PID)); after != before || before != fmt.Sprintf("%d -3\n", a) {
		t.Errorf("root's process's list: %q before, %q after; want %q both", before, after, fmt.Sprintf("%d -3\n", a))
	}

	// Its own child: a process of the namespace that took -1 with exec
	// --undo (on a set it may alter) and sleeps.
	b := holder.NewSet(t, 1)
	if err := sysvsem.SetPerm(b, 0, 0, 0o666); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	undoFile := filepath.Join(dir, "undo")
	if err := os.WriteFile(undoFile, []byte(fmt.Sprintf("%d -1\n", b)), 0o644); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`%[1]s exec --undo %[2]s -- sleep 1000 & p=$!
trap 'kill $p' EXIT
f=%[3]s/$p/semundo
i=0
until [ -n "$(cat $f 2>/dev/null)" ]; do
	i=$((i+1)); [ $i -lt 2000 ] || { echo "pid $p: no list after 2000 reads" >&2; exit 9; }
done
echo "%[4]d -4" > $f || exit 8
cat $f`, binary, undoFile, d.dir, b)
	out, errs, code := runFor(t, runuser, "-u", "nobody", "--", "unshare", "-r", "sh", "-c", script)
	if code != 0 || out != fmt.Sprintf("%d -4\n", b) {
		t.Errorf("user-namespace root writing its own child: exit %d, %q, %q; want %q; daemon log:\n%s", code, out, errs, fmt.Sprintf("%d -4\n", b), d.stderr.String())
	}
}

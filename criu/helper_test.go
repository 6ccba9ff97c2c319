package criu

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/criuaction"
	"github.com/semundo/semundo/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestHelper: with the helper, post-dump and post-resume hand their work
// to the helper started at pre-dump and pre-restore, the lists come back,
// and no helper is left once CRIU is done. With SEMUNDO_CRIU_HELPER=0
// the actions do the work themselves, as without a helper.
func TestHelper(t *testing.T) {
	rg := newRig(t)
	r := openReader(t)
	spec := treeSpec{sizes: "3", kids: []string{"1/0.0+1,0.2+2", "1/0.1+1", "1/-"}}
	for _, helper := range []bool{true, false} {
		name := "helper"
		var env []string
		if !helper {
			name, env = "no helper", []string{EnvHelper + "=0"}
		}
		t.Run(name, func(t *testing.T) {
			lt := rg.startTree(t, spec)
			want := map[int]string{}
			for _, k := range lt.kids {
				want[lt.vpid[k]] = listOf(t, r, k)
			}
			rg.dumpEnv = env
			dir, run := rg.dump(t, lt.root, true)
			if run.status != 0 {
				t.Fatalf("criu dump: %s", run)
			}
			checkHelperLog(t, run.log, "post-dump", helper)
			rg.noHelpersLeft(t)
			lt.kill(t)
			rs := rg.restore(t, dir, true, true, env...)
			if rs.run.status != 0 {
				t.Fatalf("criu restore: %s", rs.run)
			}
			checkHelperLog(t, rs.run.log, "post-resume", helper)
			rg.noHelpersLeft(t)
			for vpid, l := range want {
				if got := listOf(t, r, rs.pidOf(t, vpid)); got != l {
					t.Errorf("restored pid %d (%d in the tree) holds %q, want %q", rs.pidOf(t, vpid), vpid, got, l)
				}
			}
		})
	}
}

// checkHelperLog checks that CRIU's log says action's work was done by the
// helper (helper) or by the action itself, and not both.
func checkHelperLog(t *testing.T, log, action string, helper bool) {
	t.Helper()
	byHelper := strings.Contains(log, "semundo: "+action+": done by the helper")
	fellBack := strings.Contains(log, "semundo: "+action+": not through the helper")
	switch {
	case helper && (!byHelper || fellBack):
		t.Errorf("%s: the log does not say the helper did the work:\n%s", action, tail(log, 30))
	case !helper && (byHelper || fellBack):
		t.Errorf("%s without a helper: the log mentions one:\n%s", action, tail(log, 30))
	}
}

// TestHelperFallback: a helper killed before post-dump, or before
// post-resume, leaves the action to do the work itself, saying so in
// CRIU's log; the lists still come back.
func TestHelperFallback(t *testing.T) {
	rg := newRig(t)
	r := openReader(t)
	// At the action named by KILL_HELPER_AT, the wrapper waits for the
	// test to kill this rig's helpers.
	wrapped := rg.script + "-killing"
	at, done := filepath.Join(rg.dir, "at-action"), filepath.Join(rg.dir, "helpers-killed")
	for _, f := range []string{at, done} {
		if err := unix.Mkfifo(f, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	script := "#!/bin/sh\n" +
		"if [ \"$CRTOOLS_SCRIPT_ACTION\" = \"$KILL_HELPER_AT\" ]; then echo >" + at + "; read x <" + done + "; fi\n" +
		"exec " + rg.script + "\n"
	if err := os.WriteFile(wrapped, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	rg.script = wrapped
	// killer kills the helpers when the wrapper says so, and reports on
	// the channel it returns.
	killer := func() chan error {
		ch := make(chan error, 1)
		go func() {
			// The open waits for the wrapper to open the other end.
			if b, err := os.ReadFile(at); err != nil || len(b) == 0 {
				ch <- fmt.Errorf("no word from the wrapper (%v)", err)
				return
			}
			for _, pid := range rg.helpers() {
				unix.Kill(pid, unix.SIGKILL)
			}
			// The open waits for the wrapper's read, which follows its echo.
			ch <- os.WriteFile(done, []byte("\n"), 0)
		}()
		return ch
	}
	// A test that fails before the wrapper spoke releases the killer.
	t.Cleanup(func() {
		if f, err := os.OpenFile(at, os.O_RDWR, 0); err == nil {
			f.Close()
		}
	})
	lt := rg.startTree(t, treeSpec{sizes: "2", kids: []string{"1/0.0+1", "1/-"}})
	want := listOf(t, r, lt.kids[0])
	rg.dumpEnv = []string{"KILL_HELPER_AT=post-dump"}
	killed := killer()
	dir, run := rg.dump(t, lt.root, true)
	if run.status != 0 {
		t.Fatalf("criu dump: %s", run)
	}
	if err := <-killed; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(run.log, "semundo: post-dump: not through the helper: the helper is gone") ||
		!strings.Contains(run.log, "semundo: post-dump: saved 1 undo lists") {
		t.Errorf("post-dump with its helper killed does not say it did the work itself:\n%s", tail(run.log, 30))
	}
	rg.noHelpersLeft(t)
	lt.kill(t)
	killed = killer()
	rs := rg.restore(t, dir, true, true, "KILL_HELPER_AT=post-resume")
	if rs.run.status != 0 {
		t.Fatalf("criu restore: %s", rs.run)
	}
	if err := <-killed; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rs.run.log, "semundo: post-resume: not through the helper: the helper is gone") ||
		!strings.Contains(rs.run.log, "semundo: post-resume: wrote 1 undo lists") {
		t.Errorf("post-resume with its helper killed does not say it did the work itself:\n%s", tail(rs.run.log, 30))
	}
	rg.noHelpersLeft(t)
	if got := listOf(t, r, rs.pidOf(t, lt.vpid[lt.kids[0]])); got != want {
		t.Errorf("restored child holds %q, want %q", got, want)
	}
}

// TestHelperOutlivesNoCRIU: CRIU killed after pre-dump or pre-restore
// started the helper (at post-dump, at post-restore) takes the helper
// with it: none is left running, and the state directory is emptied.
func TestHelperOutlivesNoCRIU(t *testing.T) {
	rg := newRig(t)
	wrapped := rg.script + "-killing-criu"
	script := "#!/bin/sh\n" +
		"if [ \"$CRTOOLS_SCRIPT_ACTION\" = \"$KILL_CRIU_AT\" ]; then kill -9 $PPID; exit 1; fi\n" +
		"exec " + rg.script + "\n"
	if err := os.WriteFile(wrapped, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// A dump that succeeds, to restore from.
	lt := rg.startTree(t, treeSpec{sizes: "1", kids: []string{"1/0.0+1"}})
	dir, run := rg.dump(t, lt.root, true)
	if run.status != 0 {
		t.Fatalf("criu dump: %s", run)
	}
	lt.kill(t)
	rg.noHelpersLeft(t)
	rg.script = wrapped

	lt = rg.startTree(t, treeSpec{sizes: "1", kids: []string{"1/0.0+1"}})
	rg.dumpEnv = []string{"KILL_CRIU_AT=post-dump"}
	_, run = rg.dump(t, lt.root, true)
	if run.status == 0 {
		t.Fatalf("criu dump went on after it was killed: %s", run)
	}
	rg.noHelpersLeft(t)
	lt.kill(t)

	rs := rg.restore(t, dir, true, true, "KILL_CRIU_AT=post-restore")
	if rs.run.status == 0 {
		t.Fatalf("criu restore went on after it was killed: %s", rs.run)
	}
	rg.noHelpersLeft(t)
	if _, err := os.Stat(filepath.Join(rg.state)); err != nil {
		t.Fatalf("the state directory is gone: %v", err)
	}
}

// TestHelperRefusesOtherUsers: the helper's directories are closed to
// other users, and even a connection that gets through (here the
// directories are opened up on purpose) from another uid is dropped
// without a word, while the helper goes on to serve its own user. A
// stale socket (no helper behind it) sends the action back to doing the
// work itself. This process stands in for CRIU.
func TestHelperRefusesOtherUsers(t *testing.T) {
	testenv.RequireRoot(t)
	semundo := testenv.BuildGo(t, "github.com/semundo/semundo/cmd/semundo")
	rg := &rig{semundo: semundo}
	t.Cleanup(func() {
		for _, pid := range rg.helpers() {
			unix.Kill(pid, unix.SIGKILL)
		}
	})
	base := t.TempDir()
	state := filepath.Join(base, "state")
	env := Env{Action: ActionPreDump, ImageDir: "/proc/" + strconv.Itoa(os.Getpid()) + "/cwd", StateDir: state}
	var log strings.Builder
	opts := &Options{Log: &log, Helper: func() *exec.Cmd { return exec.Command(semundo, HelperArg) }}
	if err := Run(env, opts); err != nil {
		t.Fatal(err)
	}
	if log.Len() > 0 {
		t.Fatalf("pre-dump: %s", log.String())
	}
	hd, err := handoffDir(env)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{state, hd} {
		if err := criuaction.PrivateDir(d); err != nil {
			t.Errorf("%v", err)
		}
	}
	sock := filepath.Join(hd, helperSocket)
	// Start returns once the helper's exec has passed the point where
	// close-on-exec descriptors close, which can be before the kernel has
	// set up the new command line that helpers reads: in an arm64 TCG
	// guest one read found a count other than 1 and the next found 1.
	if !testenv.Until(testenv.Patience, func() bool { return len(rg.helpers()) == 1 }) {
		t.Fatalf("%d helpers run %v after pre-dump, want 1", len(rg.helpers()), testenv.Patience)
	}

	// Open the way to the socket, and connect as uid 65534 from a thread
	// of its own (setresuid on one thread only; the thread ends with its
	// goroutine, locked).
	for _, p := range []string{filepath.Dir(base), base, state, hd, sock} {
		if err := os.Chmod(p, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	type result struct {
		msg string
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if _, _, errno := unix.RawSyscall(unix.SYS_SETRESUID, ^uintptr(0), 65534, ^uintptr(0)); errno != 0 {
			ch <- result{err: fmt.Errorf("setresuid: %w", errno)}
			return
		}
		c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: sock, Net: "unix"})
		if err != nil {
			ch <- result{err: fmt.Errorf("connect as uid 65534: %w", err)}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(testenv.Patience))
		b, err := io.ReadAll(c)
		ch <- result{msg: string(b), err: err}
	}()
	res := <-ch
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.msg != "" {
		t.Errorf("the helper said %q to uid 65534", res.msg)
	}
	for _, p := range []string{filepath.Dir(base), base, state, hd} {
		os.Chmod(p, 0o700)
	}
	if err := criuaction.PrivateDir(hd); err != nil {
		t.Fatal(err)
	}

	// Its own user gets the work done: a post-dump for a tree (a child of
	// this process) whose core images are not there fails in the helper.
	child := exec.Command("sleep", "60")
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	post := env
	post.Action, post.InitPID = ActionPostDump, child.Process.Pid
	done, why, err := criuaction.CallHelper(post, hd, opts.logf)
	if !done {
		t.Fatalf("the helper did not take the work: %s", why)
	}
	if err == nil || !strings.Contains(err.Error(), "core image") {
		t.Errorf("post-dump through the helper: %v, want the error about CRIU's core image", err)
	}
	rg.state = state
	rg.noHelpersLeft(t)

	// A stale socket, with no helper behind it.
	if err := os.Mkdir(hd, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	done, why, err = criuaction.CallHelper(post, hd, opts.logf)
	if done || err != nil || !strings.Contains(why, "the helper is gone") {
		t.Errorf("a stale socket: done %v, %q, %v; want the action to do the work itself", done, why, err)
	}
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stale socket is still there (%v)", err)
	}
}

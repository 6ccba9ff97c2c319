package criuaction

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// privateTemp is a temporary directory closed to other users, as the
// helper's directory is (t.TempDir's is not).
func privateTemp(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir
}

// serveOnce listens on dir's socket and answers one action with hello,
// then, if it hands over a job, with res.
func serveOnce(t *testing.T, dir string, hello Hello, res Result) <-chan Job {
	t.Helper()
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(dir, SocketName), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	jobs := make(chan Job, 1)
	go func() {
		defer close(jobs)
		c, err := ln.AcceptUnix()
		if err != nil {
			return
		}
		defer c.Close()
		if WriteMsg(c, hello) != nil {
			return
		}
		var job Job
		if ReadMsg(bufio.NewReader(c), &job) != nil {
			return
		}
		jobs <- job
		WriteMsg(c, res)
	}()
	return jobs
}

// TestCallHelper: a helper of this protocol takes the job and its log and
// error come back; one of another protocol (or none: an older semundo's)
// is left alone, and the action does the work itself.
func TestCallHelper(t *testing.T) {
	env := Env{Action: ActionPostDump, ImageDir: "/proc/1/fd/3", InitPID: 42}
	var logged []string
	logf := func(format string, a ...any) { logged = append(logged, fmt.Sprintf(format, a...)) }

	dir := privateTemp(t)
	jobs := serveOnce(t, dir, Hello{Ready: true, Protocol: Protocol}, Result{Log: []string{"post-dump: done"}, Error: "it failed"})
	done, why, err := CallHelper(env, dir, logf)
	if !done || err == nil || err.Error() != "it failed" {
		t.Fatalf("this protocol: done %v, %q, %v; want done with the helper's error", done, why, err)
	}
	if job := <-jobs; job.Env != env {
		t.Errorf("the helper got %+v, want %+v", job.Env, env)
	}
	if len(logged) != 1 || logged[0] != "post-dump: done" {
		t.Errorf("logged %q, want the helper's line", logged)
	}

	for _, p := range []int{0, Protocol + 1} {
		dir := privateTemp(t)
		jobs := serveOnce(t, dir, Hello{Ready: true, Protocol: p}, Result{})
		done, why, err := CallHelper(env, dir, logf)
		if done || err != nil || !strings.Contains(why, "protocol") {
			t.Errorf("protocol %d: done %v, %q, %v; want the work left to the action, saying why", p, done, why, err)
			continue
		}
		// It connected, and closed without a job: the helper's read ends.
		if _, ok := <-jobs; ok {
			t.Errorf("protocol %d: the job was handed over", p)
		}
	}

	// Not ready: the helper says why.
	dir = privateTemp(t)
	serveOnce(t, dir, Hello{Why: "no BTF", Protocol: Protocol}, Result{})
	if done, why, err := CallHelper(env, dir, logf); done || err != nil || !strings.Contains(why, "no BTF") {
		t.Errorf("not ready: done %v, %q, %v; want the helper's reason", done, why, err)
	}
	// No socket: no helper was started.
	if done, why, err := CallHelper(env, privateTemp(t), logf); done || err != nil || why != "no helper was started" {
		t.Errorf("no socket: done %v, %q, %v", done, why, err)
	}
	// A directory other users may enter: the socket is not trusted.
	dir = t.TempDir()
	os.Chmod(dir, 0o755)
	serveOnce(t, dir, Hello{Ready: true, Protocol: Protocol}, Result{})
	if done, why, err := CallHelper(env, dir, logf); done || err != nil || !strings.Contains(why, "closed to other users") {
		t.Errorf("an open directory: done %v, %q, %v; want it refused", done, why, err)
	}
}

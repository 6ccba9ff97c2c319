package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/semundo/semundo/internal/criuaction"
)

// execCall records what run asked execve to run.
type execCall struct {
	path string
	argv []string
	env  []string
}

// runWith runs the command with env set (and every other CRIU and semundo
// variable unset), an execve that records its call and fails with
// execErr, and returns the exit status, the outputs and the call.
func runWith(t *testing.T, env map[string]string, execErr error, args ...string) (int, string, string, *execCall) {
	t.Helper()
	for _, k := range []string{criuaction.EnvAction, criuaction.EnvImageDir, criuaction.EnvInitPID,
		criuaction.EnvAllowRunning, criuaction.EnvStateDir, criuaction.EnvHelper} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	for k, v := range env {
		t.Setenv(k, v)
	}
	var out, errs bytes.Buffer
	var call *execCall
	code := run(args, &out, &errs, func(path string, argv, env []string) error {
		call = &execCall{path, argv, env}
		return execErr
	})
	return code, out.String(), errs.String(), call
}

// criuEnv is an action's environment as CRIU would set it, with this
// process standing in for CRIU and state as the state directory.
func criuEnv(action, state string) map[string]string {
	return map[string]string{
		criuaction.EnvAction:   action,
		criuaction.EnvImageDir: "/proc/" + strconv.Itoa(os.Getpid()) + "/fd/0",
		criuaction.EnvInitPID:  strconv.Itoa(os.Getpid()),
		criuaction.EnvStateDir: state,
	}
}

var errExec = errors.New("exec made to fail")

func TestUsage(t *testing.T) {
	code, out, errs, call := runWith(t, nil, errExec)
	if code != exitUsage || out != "" || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, criuaction.EnvAction) || call != nil {
		t.Errorf("without CRIU's environment: exit %d, stdout %q, stderr %q, exec %v; want exit 2 and one line naming %s", code, out, errs, call, criuaction.EnvAction)
	}
	code, out, errs, call = runWith(t, nil, errExec, "--help")
	if code != 0 || out != "" || !strings.Contains(errs, "CRIU's post-dump and post-resume actions") || !strings.Contains(errs, "-semundo") || call != nil {
		t.Errorf("--help: exit %d, stdout %q, stderr %q, exec %v; want exit 0 and what the program is, its flags", code, out, errs, call)
	}
	code, _, errs, call = runWith(t, criuEnv("post-dump", t.TempDir()), errExec, "extra")
	if code != exitUsage || !strings.Contains(errs, "takes no arguments") || call != nil {
		t.Errorf("with an argument: exit %d, stderr %q, exec %v; want exit 2", code, errs, call)
	}
	env := criuEnv("post-dump", t.TempDir())
	env[criuaction.EnvInitPID] = "x"
	code, _, errs, call = runWith(t, env, errExec)
	if code != 1 || !strings.Contains(errs, "is not a pid") || call != nil {
		t.Errorf("a malformed %s: exit %d, stderr %q, exec %v; want exit 1 saying so", criuaction.EnvInitPID, code, errs, call)
	}
}

// TestNoHelper: with no helper to take the work, post-dump says why and
// runs semundo criu-script (beside this program, or --semundo's) with the
// helper off and the settings of its flags; any other action runs it at
// once.
func TestNoHelper(t *testing.T) {
	state := t.TempDir()
	env := criuEnv("post-dump", state)
	// What the flags and the failed handover must override.
	env[criuaction.EnvHelper], env[criuaction.EnvAllowRunning] = "1", "0"
	code, out, errs, call := runWith(t, env, errExec, "--semundo", "/opt/semundo", "--allow-running", "--state-dir", state)
	if code != 1 || call == nil {
		t.Fatalf("exit %d, stderr %q, exec %v; want the exec tried (and its failure, exit 1)", code, errs, call)
	}
	if !strings.Contains(out, "semundo: post-dump: not through the helper: no helper was started") {
		t.Errorf("stdout %q does not say why the helper did not take the work", out)
	}
	if !strings.Contains(errs, "--semundo PATH") || strings.Count(errs, "\n") != 1 {
		t.Errorf("a failed exec: stderr %q, want one line saying to pass --semundo", errs)
	}
	if call.path != "/opt/semundo" || !slices.Equal(call.argv, []string{"/opt/semundo", "criu-script"}) {
		t.Errorf("exec %s %q, want /opt/semundo criu-script", call.path, call.argv)
	}
	// Each once: the first of a name given twice is the one getenv takes.
	for _, kv := range []string{criuaction.EnvHelper + "=0", criuaction.EnvAllowRunning + "=1", criuaction.EnvStateDir + "=" + state} {
		name, _, _ := strings.Cut(kv, "=")
		var got []string
		for _, e := range call.env {
			if strings.HasPrefix(e, name+"=") {
				got = append(got, e)
			}
		}
		if len(got) != 1 || got[0] != kv {
			t.Errorf("semundo's environment has %q, want %s once", got, kv)
		}
	}

	// Beside this program by default; other actions go to semundo as they
	// are, the helper not turned off (pre-dump starts it).
	code, out, _, call = runWith(t, criuEnv("pre-dump", state), nil)
	self, _ := os.Executable()
	if call == nil || call.path != filepath.Join(filepath.Dir(self), "semundo") || out != "" {
		t.Fatalf("pre-dump: exit %d, stdout %q, exec %v; want semundo beside %s run at once", code, out, call, self)
	}
	if slices.ContainsFunc(call.env, func(e string) bool { return strings.HasPrefix(e, criuaction.EnvHelper+"=") }) {
		t.Errorf("pre-dump: semundo runs with the helper turned off: %q", call.env)
	}
}

// TestPostResumeWithoutImage: a post-resume whose pre-restore found no
// semundo image (no handoff directory) has nothing to do, and runs
// nothing.
func TestPostResumeWithoutImage(t *testing.T) {
	code, out, errs, call := runWith(t, criuEnv("post-resume", t.TempDir()), errExec)
	if code != 0 || out != "" || errs != "" || call != nil {
		t.Errorf("exit %d, stdout %q, stderr %q, exec %v; want exit 0 and nothing run", code, out, errs, call)
	}
}

// TestPostDumpMissingEnv: post-dump without the root's pid fails at once,
// as semundo criu-script would, without running it.
func TestPostDumpMissingEnv(t *testing.T) {
	env := criuEnv("post-dump", t.TempDir())
	delete(env, criuaction.EnvInitPID)
	code, _, errs, call := runWith(t, env, errExec)
	if code != 1 || !strings.Contains(errs, criuaction.EnvInitPID+" is not set") || call != nil {
		t.Errorf("exit %d, stderr %q, exec %v; want exit 1 naming %s", code, errs, call, criuaction.EnvInitPID)
	}
}

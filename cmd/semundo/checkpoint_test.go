package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
)

// selfDeadline bounds each refusal below: a checkpoint that froze itself
// would never end.
const selfDeadline = 2 * time.Minute

// shell runs script with sh (semundo's path in $SEMUNDO), with a deadline
// on expiry of which it continues and kills the whole process group (and
// thaws thaw, a cgroup, if given), and returns stdout, stderr and sh's
// exit status.
func shell(t *testing.T, thaw, script string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), selfDeadline)
	defer cancel()
	cmd := exec.Command("sh", "-c", script)
	cmd.Env = append(os.Environ(), "SEMUNDO="+binary)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		if thaw != "" {
			os.WriteFile(filepath.Join(thaw, "cgroup.freeze"), []byte("0"), 0)
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGCONT)
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatalf("sh -c %q did not end within %v (semundo froze itself?); stderr: %s", script, selfDeadline, errb.String())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), 0
}

// TestCheckpointRefusesSelf: checkpoint refuses, with exit 2 and before
// it stops anything, a freeze that would hold semundo itself or the shell
// that runs it.
func TestCheckpointRefusesSelf(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tc := range []struct {
		name, script, want string
	}{
		{"own pid", `exec "$SEMUNDO" checkpoint $$ -o "$IMG"`, "semundo itself"},
		{"tree of the shell", `"$SEMUNDO" checkpoint --tree $$ -o "$IMG"; echo "rc=$?"`, "semundo itself"},
		{"parent shell", `"$SEMUNDO" checkpoint $$ -o "$IMG"; echo "rc=$?"`, "semundo's parent"},
		{"grandparent", `sh -c '"$SEMUNDO" checkpoint $PPID -o "$IMG"; echo "rc=$?"'`, "an ancestor of semundo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "x")
			out, errs, code := shell(t, "", "export IMG="+img+"; "+tc.script)
			if strings.Contains(tc.script, "rc=") {
				// The shell went on after semundo: it was not left stopped.
				if code != 0 || strings.TrimSpace(out) != "rc=2" {
					t.Fatalf("sh: exit %d, stdout %q, stderr %q; want semundo's exit status 2 echoed", code, out, errs)
				}
			} else if code != 2 {
				t.Fatalf("exit %d, want 2; stderr %q", code, errs)
			}
			if !strings.Contains(errs, tc.want) || strings.Count(errs, "\n") != 1 {
				t.Errorf("stderr %q, want one line naming %q", errs, tc.want)
			}
			if _, err := os.Stat(img); err == nil {
				t.Errorf("an image was written")
			}
		})
	}
}

// TestCheckpointRefusesOwnCgroup: --cgroup CG is refused when semundo, or
// the shell that runs it, is in CG or a cgroup below it; CG is not left
// frozen.
func TestCheckpointRefusesOwnCgroup(t *testing.T) {
	testenv.RequireRoot(t)
	root := testenv.Cgroup2Root(t)
	// The process named: not semundo's, so that only the cgroup is wrong.
	target := holder.Start(t, "wait", nil, nil)
	cg := filepath.Join(root, fmt.Sprintf("semundo-cmdtest-%d", os.Getpid()))
	sub := filepath.Join(cg, "sub")
	for _, d := range []string{cg, sub} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		os.WriteFile(filepath.Join(cg, "cgroup.freeze"), []byte("0"), 0)
		for _, d := range []string{sub, cg} {
			// The shells have exited; the directories empty at once or
			// soon after.
			for i := 0; i < 100 && os.Remove(d) != nil; i++ {
				time.Sleep(10 * time.Millisecond)
			}
		}
	})
	if _, err := os.Stat(filepath.Join(cg, "cgroup.freeze")); err != nil {
		testenv.Missing(t, "the cgroup v2 freezer (Linux >= 5.2)", err.Error())
	}
	for _, tc := range []struct {
		name, script, want string
	}{
		{"semundo in it", `echo $$ > "$CG/cgroup.procs"; exec "$SEMUNDO" checkpoint --cgroup "$CG" $T -o "$IMG"`, "semundo itself"},
		{"semundo below it", `echo $$ > "$CG/sub/cgroup.procs"; exec "$SEMUNDO" checkpoint --cgroup "$CG" $T -o "$IMG"`, "semundo itself"},
		// The shell stays in CG; semundo's own shell moves out first.
		{"parent in it", `echo $$ > "$CG/cgroup.procs"; sh -c 'echo $$ > "$ROOT/cgroup.procs"; exec "$SEMUNDO" checkpoint --cgroup "$CG" $T -o "$IMG"'; echo "rc=$?"`, "semundo's parent"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "x")
			script := fmt.Sprintf("export CG=%s ROOT=%s IMG=%s T=%d; %s", cg, root, img, target.PID, tc.script)
			out, errs, code := shell(t, cg, script)
			if strings.Contains(tc.script, "rc=") {
				if code != 0 || strings.TrimSpace(out) != "rc=2" {
					t.Fatalf("sh: exit %d, stdout %q, stderr %q; want semundo's exit status 2 echoed", code, out, errs)
				}
			} else if code != 2 {
				t.Fatalf("exit %d, want 2; stderr %q", code, errs)
			}
			if !strings.Contains(errs, tc.want) || !strings.Contains(errs, "cgroup") || strings.Count(errs, "\n") != 1 {
				t.Errorf("stderr %q, want one line naming %q and the cgroup", errs, tc.want)
			}
			if b, _ := os.ReadFile(filepath.Join(cg, "cgroup.freeze")); strings.TrimSpace(string(b)) != "0" {
				t.Errorf("cgroup %s left frozen: cgroup.freeze %q", cg, b)
			}
			if ev, _ := os.ReadFile(filepath.Join(cg, "cgroup.events")); !strings.Contains(string(ev), "frozen 0") {
				t.Errorf("cgroup %s: cgroup.events %q", cg, ev)
			}
		})
	}
}

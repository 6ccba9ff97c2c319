package testenv

import (
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

func TestUntil(t *testing.T) {
	n := 0
	if ok := Until(Patience, func() bool { n++; return n == 3 }); !ok || n != 3 {
		t.Errorf("Until of a condition true at the 3rd call: %v after %d calls", ok, n)
	}
	n = 0
	if ok := Until(0, func() bool { n++; return false }); ok || n == 0 {
		t.Errorf("Until with no time of a false condition: %v after %d calls, want false after at least one", ok, n)
	}
}

func TestEventuallyErr(t *testing.T) {
	var msg string
	ft := &fatalTB{TB: t, fatal: func(s string) { msg = s }}
	done := make(chan struct{})
	go func() {
		defer close(done)
		EventuallyErr(ft, "the thing", func() (bool, error) { return false, errors.New("broken") })
	}()
	<-done
	if !strings.Contains(msg, "waiting for the thing") || !strings.Contains(msg, "broken") {
		t.Errorf("EventuallyErr of a failing condition said %q, want the wait and the error named", msg)
	}
}

// fatalTB records Fatalf instead of failing the test; like the real one it
// ends the calling goroutine.
type fatalTB struct {
	testing.TB
	fatal func(string)
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.fatal(strings.TrimSpace(fmt.Sprintf(format, args...)))
	runtime.Goexit()
}

func TestRun(t *testing.T) {
	tru := RequireTool(t, "true")
	if err := Run(t, exec.Command(tru), "true"); err != nil {
		t.Errorf("Run of true: %v", err)
	}
	fls := RequireTool(t, "false")
	if err := Run(t, exec.Command(fls), "false"); err == nil {
		t.Error("Run of false: no error")
	}
}

func TestHelperEnviron(t *testing.T) {
	t.Setenv(HelperEnv, "outer")
	env := HelperEnviron("inner", "A=1")
	var sel []string
	for _, kv := range env {
		if strings.HasPrefix(kv, HelperEnv+"=") {
			sel = append(sel, kv)
		}
	}
	if len(sel) != 1 || sel[0] != HelperEnv+"=inner" || env[len(env)-1] != "A=1" {
		t.Errorf("helper selections %v, last %q; want only %s=inner, then A=1", sel, env[len(env)-1], HelperEnv)
	}
}

func TestSkipTestOnlyUnderCI(t *testing.T) {
	t.Setenv("CI", "true")
	var skipped bool
	t.Run("sub", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		SkipTestOnly(t, "a feature", "probed")
	})
	if !skipped {
		t.Error("SkipTestOnly under CI did not skip")
	}
}

package testenv

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestCommandDeadline runs a program that hangs with a child in its
// process group: the run must end with ErrDeadline and a message naming
// what was waited for, and the child must be dead too.
func TestCommandDeadline(t *testing.T) {
	t.Setenv(WaitEnv, "1s")
	c := Command(t, "a hanging shell", "sh", "-c", "sleep 1000 & echo $!; wait")
	out, err := c.Output()
	if !errors.Is(err, ErrDeadline) {
		t.Fatalf("err = %v, want ErrDeadline", err)
	}
	if want := "a hanging shell did not finish in 1s; killed it"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q lacks %q", err, want)
	}
	child, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("the shell printed %q, not its child's pid", out)
	}
	// The child was in the shell's group, so it was sent SIGKILL with it.
	// Dying takes it a moment (it shows R with its SIGKILL pending on a busy
	// machine), and it may linger as a zombie of an init that does not
	// reap; unkilled, it would sleep for 1000 s.
	var last string
	if !Until(Patience, func() bool {
		st, err := os.ReadFile("/proc/" + strconv.Itoa(child) + "/stat")
		if err != nil {
			return true
		}
		last = string(st)
		state := strings.Fields(last[strings.LastIndexByte(last, ')')+1:])
		return len(state) > 0 && (state[0] == "Z" || state[0] == "X")
	}) {
		t.Errorf("the shell's child %d still runs %v after the deadline: %s", child, Patience, last)
	}
}

// TestCommandFinishes checks that a program that finishes in time keeps
// its own result.
func TestCommandFinishes(t *testing.T) {
	out, err := Command(t, "echo", "sh", "-c", "echo hi; exit 3").Output()
	var ee interface{ ExitCode() int }
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || errors.Is(err, ErrDeadline) || string(out) != "hi\n" {
		t.Errorf("got %q, %v; want \"hi\\n\" and exit status 3", out, err)
	}
}

func TestWaitLimit(t *testing.T) {
	for v, want := range map[string]string{"": "2m0s", "3s": "3s", "10m": "2m0s", "-1s": "2m0s", "junk": "2m0s"} {
		t.Setenv(WaitEnv, v)
		if got := WaitLimit().String(); got != want {
			t.Errorf("%s=%q: WaitLimit() = %s, want %s", WaitEnv, v, got, want)
		}
	}
}

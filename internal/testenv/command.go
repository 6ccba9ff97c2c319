package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// MaxWait is the longest a test waits for one run of another program
// (CRIU, runc, Podman, QEMU, a target process): a hung program must fail
// its test well before go test's global timeout ends the whole binary.
const MaxWait = 2 * time.Minute

// WaitEnv names the environment variable that shortens MaxWait (a Go
// duration, such as "3s"): the test that proves a hung CRIU fails the
// CRIU tests in time sets it for the test binary it runs.
const WaitEnv = "SEMUNDO_TEST_WAIT"

// ErrDeadline is wrapped by the error of a program that did not finish
// within its wait limit and was killed.
var ErrDeadline = errors.New("deadline passed")

// WaitLimit returns how long a test waits for one run of another program:
// MaxWait, or WaitEnv's value when that is a shorter positive duration.
func WaitLimit() time.Duration {
	d, err := time.ParseDuration(os.Getenv(WaitEnv))
	if err != nil || d <= 0 || d > MaxWait {
		return MaxWait
	}
	return d
}

// Cmd is another program that a test runs under a deadline.
type Cmd struct {
	*exec.Cmd
	What  string        // what the test waits for: "criu dump of pid 4242"
	Limit time.Duration // the deadline, counted from Command
	ctx   context.Context
}

// Command returns the program name with args, to be run within
// WaitLimit() from now. It starts in a process group of its own, and when
// the deadline passes the whole group is killed (the helpers a program
// forks die with it), after which WaitDelay bounds the wait for its
// output. what names the run in the error: "criu dump of pid 4242".
// Cleanup releases the deadline.
func Command(tb testing.TB, what, name string, args ...string) *Cmd {
	tb.Helper()
	limit := WaitLimit()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	tb.Cleanup(cancel)
	c := &Cmd{Cmd: exec.CommandContext(ctx, name, args...), What: what, Limit: limit, ctx: ctx}
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Cancel = func() error { return syscall.Kill(-c.Process.Pid, syscall.SIGKILL) }
	c.WaitDelay = 5 * time.Second
	return c
}

// Run runs the program and waits for it within the deadline.
func (c *Cmd) Run() error { return c.explain(c.Cmd.Run()) }

// Output runs the program within the deadline and returns its stdout.
func (c *Cmd) Output() ([]byte, error) {
	out, err := c.Cmd.Output()
	return out, c.explain(err)
}

// CombinedOutput runs the program within the deadline and returns its
// stdout and stderr.
func (c *Cmd) CombinedOutput() ([]byte, error) {
	out, err := c.Cmd.CombinedOutput()
	return out, c.explain(err)
}

// Wait waits for the started program within the deadline.
func (c *Cmd) Wait() error { return c.explain(c.Cmd.Wait()) }

// explain turns the error of a run that the deadline ended into one that
// says what was waited for, how long, and that it was killed.
func (c *Cmd) explain(err error) error {
	if err == nil || !errors.Is(c.ctx.Err(), context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%s did not finish in %v; killed it (process group %d): %w", c.What, c.Limit, c.pid(), ErrDeadline)
}

func (c *Cmd) pid() int {
	if c.Process == nil {
		return 0
	}
	return c.Process.Pid
}

package testenv

import (
	"bytes"
	"os/exec"
	"testing"
	"time"
)

// Patience bounds every wait of a test on another process or on the kernel
// (a target to sleep, stop or exit, a helper to get ready, a counter to
// move). It only keeps a broken test from hanging until go test's global
// timeout: no test asserts how long anything takes. It is generous because
// CI machines have 2 cores shared by -race builds and QEMU guests, and it
// stays within the 2 minutes every wait of the test suite is allowed.
const Patience = time.Minute

// Until polls cond, first every millisecond and then every 5 ms, until it
// returns true (Until returns true) or limit has passed (false). cond runs
// at least once, so a limit of zero tests it once.
func Until(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	pause := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(pause)
		// Most waits end within milliseconds; a long one need not cost a
		// busy core, which other tests on the machine are waiting for, but
		// must not slow down tests that wait thousands of times either.
		pause = min(2*pause, 5*time.Millisecond)
	}
	return true
}

// Eventually waits up to Patience for cond to hold, and otherwise fails the
// test with "waited 1m0s for WHAT": what names what was awaited, such as "pid
// 123 to stop". Processes the test started are killed by their cleanups,
// which run when the test fails.
func Eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	if !Until(Patience, cond) {
		tb.Fatalf("waited %v for %s", Patience, what)
	}
}

// EventuallyErr is Eventually for a condition that can also fail: an error
// from cond fails the test at once, naming what was awaited.
func EventuallyErr(tb testing.TB, what string, cond func() (bool, error)) {
	tb.Helper()
	var err error
	ok := Until(Patience, func() bool {
		var done bool
		done, err = cond()
		return done || err != nil
	})
	switch {
	case err != nil:
		tb.Fatalf("waiting for %s: %v", what, err)
	case !ok:
		tb.Fatalf("waited %v for %s", Patience, what)
	}
}

// Wait waits for the started command to exit and returns cmd.Wait's error.
// If it runs longer than Patience, Wait kills it and fails the test naming
// what, the program the test waited for.
func Wait(tb testing.TB, cmd *exec.Cmd, what string) error {
	tb.Helper()
	timer := time.AfterFunc(Patience, func() { cmd.Process.Kill() })
	err := cmd.Wait()
	if !timer.Stop() {
		tb.Fatalf("waited %v for %s (pid %d) to exit: killed it", Patience, what, cmd.Process.Pid)
	}
	return err
}

// Run starts cmd and waits for it as Wait does.
func Run(tb testing.TB, cmd *exec.Cmd, what string) error {
	tb.Helper()
	if err := cmd.Start(); err != nil {
		return err
	}
	return Wait(tb, cmd, what)
}

// CombinedOutput runs cmd as Run does and returns its standard output and
// error together.
func CombinedOutput(tb testing.TB, cmd *exec.Cmd, what string) ([]byte, error) {
	tb.Helper()
	// One writer for both: exec then never calls it from two goroutines.
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := Run(tb, cmd, what)
	return b.Bytes(), err
}

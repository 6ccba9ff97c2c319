package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"golang.org/x/sys/unix"
)

// Zombie starts this test binary running no test, waits until it has
// exited, and returns its pid, left unreaped until cleanup. The binary is a
// Go program with several threads: its leader shows Z in /proc while the
// others are still on their way out, and a listing of /proc/PID/task can
// miss a thread in the middle of exiting. So it waits for what the kernel
// tells the parent only once every thread is gone: the exit report of
// waitid, read with WNOWAIT so that the child stays a zombie.
func Zombie(tb testing.TB) int {
	tb.Helper()
	// Not /bin/true: the kernel matrix's guests have none.
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	pid := cmd.Process.Pid
	tb.Cleanup(func() { cmd.Wait() })
	EventuallyErr(tb, fmt.Sprintf("child %d (this test binary, running no test) to exit", pid), func() (bool, error) {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT|unix.WNOHANG, nil)
		switch err {
		case nil:
			// With WNOHANG, a child that has not exited yet leaves
			// info zeroed.
			return info.Signo == int32(unix.SIGCHLD), nil
		case unix.EINTR:
			return false, nil
		}
		return false, fmt.Errorf("waitid: %w", err)
	})
	return pid
}

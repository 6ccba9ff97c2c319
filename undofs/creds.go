package undofs

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// startAs starts cmd (whose SysProcAttr.Credential already names the
// caller's ids) so that the child and the program it executes hold no
// capability outside capEff, the caller's effective set.
//
// Ids alone are not enough: a root caller whose capabilities were dropped
// would get them all back by executing as uid 0, and a helper binary with
// file capabilities would grant its own. So the child is forked from an OS
// thread whose credentials are narrowed first: no_new_privs (file
// capabilities and set-id bits are ignored at execve), no ambient or
// inheritable capability outside capEff, and a bounding set cut down to
// capEff (an execve as uid 0 gets the bounding set). A non-root caller's
// capabilities are carried over as ambient ones, which survive the change
// of uid and the execve.
//
// Credentials are per thread, and a bounding set cannot grow back: the
// thread stays locked to the goroutine and ends with it (the Go runtime
// creates new threads from a template thread, never from a locked one).
func startAs(cmd *exec.Cmd, uid uint32, capEff uint64) error {
	errc := make(chan error, 1)
	go startLocked(cmd, uid, capEff, errc)
	return <-errc
}

func startLocked(cmd *exec.Cmd, uid uint32, capEff uint64, errc chan<- error) {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// The main thread cannot exit: the runtime would park it for good,
		// and /proc/PID/status (the main thread's) would show the narrowed
		// set. Hold it, so that a new goroutine cannot land on it, and let
		// that goroutine's thread do the work.
		defer runtime.UnlockOSThread()
		inner := make(chan error, 1)
		go startLocked(cmd, uid, capEff, inner)
		errc <- <-inner
		return
	}
	// No UnlockOSThread: this thread must die with the goroutine.
	allowed, err := narrowThread(capEff)
	if err != nil {
		errc <- err
		return
	}
	if uid != 0 {
		for c := range 64 {
			if allowed&(1<<c) != 0 {
				cmd.SysProcAttr.AmbientCaps = append(cmd.SysProcAttr.AmbientCaps, uintptr(c))
			}
		}
	}
	errc <- cmd.Start()
}

// narrowThread narrows the calling thread's credentials as startAs says and
// returns the capabilities the child may keep: capEff within what this
// process holds.
func narrowThread(capEff uint64) (uint64, error) {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return 0, fmt.Errorf("capget: %w", err)
	}
	permitted := uint64(data[0].Permitted) | uint64(data[1].Permitted)<<32
	allowed := capEff & permitted

	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return 0, fmt.Errorf("set no_new_privs: %w", err)
	}
	// Ambient capabilities exist from Linux 4.3 on; EINVAL means none.
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil && err != unix.EINVAL {
		return 0, fmt.Errorf("clear ambient capabilities: %w", err)
	}
	data[0].Inheritable &= uint32(allowed)
	data[1].Inheritable &= uint32(allowed >> 32)
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return 0, fmt.Errorf("capset: %w", err)
	}
	for c := 0; c <= capLastCap(); c++ {
		if allowed&(1<<c) != 0 {
			continue
		}
		if in, _ := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(c), 0, 0, 0); in != 1 {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return 0, fmt.Errorf("drop capability %d from the bounding set (the daemon needs CAP_SETPCAP: run it as root): %w", c, err)
		}
	}
	return allowed, nil
}

// capLastCap is the highest capability number this kernel knows.
func capLastCap() int {
	b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n >= 0 && n < 64 {
			return n
		}
	}
	return 63
}

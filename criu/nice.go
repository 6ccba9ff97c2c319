package criu

import (
	"os"
	"runtime"

	"github.com/semundo/semundo/internal/procfs"
	"golang.org/x/sys/unix"
)

// The helper loads its reader while CRIU dumps or restores the tree, which
// is frozen or not yet running all that time: the load needs no hurry, and
// on a small machine it slowed CRIU. So the helper loads at the lowest
// priority and does its job, in the critical post-* action, at the one it
// was started with. nice is per thread on Linux: every thread of the
// process is set, and threads started meanwhile inherit it from theirs.

// lowestNice is the nice value the helper loads at.
const lowestNice = 19

// capSysNice is CAP_SYS_NICE, which taking the priority back needs.
const capSysNice = 23

// yieldCPU sets every thread of this process to lowestNice and returns
// the function that sets them back. Without CAP_SYS_NICE, which taking it
// back needs, it changes nothing: the job would then run at the lowest
// priority too.
func yieldCPU() (restore func()) {
	// Credentials are per thread too: judge by the one that renices.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	st, err := procfs.NewDefaultFS().TaskStatus(os.Getpid(), unix.Gettid())
	if err != nil || st.CapEff&(1<<capSysNice) == 0 {
		return func() {}
	}
	// getpriority(2) returns 20 - nice.
	raw, err := unix.Getpriority(unix.PRIO_PROCESS, 0)
	if err != nil {
		return func() {}
	}
	nice := 20 - raw
	if nice >= lowestNice {
		return func() {}
	}
	setNice(lowestNice)
	return func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		setNice(nice)
	}
}

// setNice sets every thread of this process to nice.
func setNice(nice int) {
	tids, _ := procfs.NewDefaultFS().Tasks(os.Getpid())
	for _, tid := range tids {
		unix.Setpriority(unix.PRIO_PROCESS, tid, nice)
	}
}

package reader

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// raiseMemlock lifts this process's RLIMIT_MEMLOCK where the kernel
// charges BPF maps and programs to it: before Linux 5.11, which moved that
// accounting to the memory cgroup. cilium/ebpf's rlimit package decides
// the same by creating a map in its package initialiser, that is in every
// semundo process, CRIU's actions and `semundo version` included (a
// quarter of a millisecond of each start, measured); the kernel's version
// is enough, since semundo needs 5.8 and no 5.8-5.10 kernel charges
// memory cgroups alone. A caller without the privilege (EPERM) loads
// within its limit, or fails there with the kernel's error.
func raiseMemlock() error {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return fmt.Errorf("uname: %w", err)
	}
	if !chargesMemlock(unix.ByteSliceToString(uts.Release[:])) {
		return nil
	}
	lim := unix.Rlimit{Cur: unix.RLIM_INFINITY, Max: unix.RLIM_INFINITY}
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &lim); err != nil && !errors.Is(err, unix.EPERM) {
		return fmt.Errorf("raise RLIMIT_MEMLOCK for BPF: %w", err)
	}
	return nil
}

// chargesMemlock reports whether a kernel of this release (uname -r)
// charges BPF memory to RLIMIT_MEMLOCK. A release it cannot read counts
// as one that does: raising the limit is harmless where it is not used.
func chargesMemlock(release string) bool {
	var major, minor int
	if n, _ := fmt.Sscanf(release, "%d.%d", &major, &minor); n != 2 {
		return true
	}
	return major < 5 || major == 5 && minor < 11
}

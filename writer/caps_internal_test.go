package writer

import (
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
	"golang.org/x/sys/unix"
)

// TestCapCache: the cached capability walk answers as the walk does, for
// tasks in the host's namespaces, in a user namespace of their own that
// shares the host's IPC namespace (no CAP_IPC_OWNER there), and in a user
// namespace with an IPC namespace of its own (which it owns); targets
// alike share one answer; close lets go of the namespaces; told each
// task's IPC namespace, it answers alike.
func TestCapCache(t *testing.T) {
	testenv.RequireRoot(t)
	// Holders, not sleep(1): the kernel matrix's guests have no
	// coreutils.
	start := func(flags uintptr) int {
		attr := &syscall.SysProcAttr{Cloneflags: flags}
		if flags&syscall.CLONE_NEWUSER != 0 {
			// setuid(0) inside the new namespace: uid 100000 outside.
			attr.Credential = &syscall.Credential{Uid: 0, Gid: 0}
			attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 1}}
			attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: 100000, Size: 1}}
		}
		return holder.Start(t, "wait", nil, attr).PID
	}
	// Root inside a user namespace has euid 100000 outside.
	cases := []struct {
		name string
		pid  int
		euid uint32
		want bool
	}{
		{"host", os.Getpid(), 0, true},
		{"own user namespace, host IPC namespace", start(syscall.CLONE_NEWUSER), 100000, false},
		{"another user namespace, host IPC namespace", start(syscall.CLONE_NEWUSER), 100000, false},
		{"own user and IPC namespaces", start(syscall.CLONE_NEWUSER | syscall.CLONE_NEWIPC), 100000, true},
		{"host, once more", os.Getpid(), 0, true},
	}
	var c capCache
	for _, tc := range cases {
		uncached, err := (*capCache)(nil).over(tc.pid, tc.euid, 0)
		if err != nil || uncached != tc.want {
			t.Fatalf("%s: the walk says %v, %v; want %v", tc.name, uncached, err, tc.want)
		}
		got, err := c.over(tc.pid, tc.euid, 0)
		if err != nil || got != tc.want {
			t.Errorf("%s: the cache says %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	// The host, the child user namespaces sharing the host's IPC
	// namespace (each its own), and the one with its own IPC namespace.
	if len(c.answers) != 4 || len(c.held) != 8 {
		t.Errorf("%d answers holding %d namespaces, want 4 holding 8", len(c.answers), len(c.held))
	}
	held := append([]int(nil), c.held...)
	c.close()
	for _, fd := range held {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_GETFD, 0); err != unix.EBADF {
			t.Errorf("fd %d still open after close: %v", fd, err)
		}
	}
	// A full cache answers without keeping more.
	small := capCache{max: 1}
	for _, tc := range cases {
		if got, err := small.over(tc.pid, tc.euid, 0); err != nil || got != tc.want {
			t.Errorf("%s, cache of one: %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	if len(small.answers) != 1 || len(small.held) != 2 {
		t.Errorf("cache of one: %d answers holding %d namespaces, want 1 holding 2", len(small.answers), len(small.held))
	}
	small.close()
	// Given each task's IPC namespace, as the writer reads it between the
	// attach and the stop, the cache answers alike under the same keys.
	var hinted capCache
	for _, tc := range cases {
		ipc := namespaceOf(fmt.Sprintf("/proc/%d/ns/ipc", tc.pid))
		if ipc == 0 {
			t.Fatalf("%s: cannot read its IPC namespace", tc.name)
		}
		if got, err := hinted.over(tc.pid, tc.euid, ipc); err != nil || got != tc.want {
			t.Errorf("%s, IPC namespace given: %v, %v; want %v", tc.name, got, err, tc.want)
		}
	}
	if len(hinted.answers) != 4 {
		t.Errorf("IPC namespaces given: %d answers, want 4", len(hinted.answers))
	}
	hinted.close()
}

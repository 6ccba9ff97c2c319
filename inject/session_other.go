//go:build !linux || !(amd64 || arm64)

package inject

import (
	"runtime"

	"github.com/semundo/semundo/internal/procfs"
)

// Session is one ptrace session on one thread of a target process. On this
// platform no session can be created: every entry point returns an error
// wrapping ErrArchNotSupported.
type Session struct {
	pid int
}

func notSupported(pid int, op string) error {
	where := runtime.GOARCH
	if runtime.GOOS != "linux" {
		where = runtime.GOOS + "/" + runtime.GOARCH
	}
	return &OpError{Pid: pid, Op: op, Kind: ErrArchNotSupported,
		Detail: "ptrace syscall injection is not supported on " + where + ": use a linux/amd64 or linux/arm64 build of semundo"}
}

func (s *Session) pidOrZero() int {
	if s == nil {
		return 0
	}
	return s.pid
}

// Seize attaches to process pid for injection. Not supported on this
// platform.
func Seize(pid int) (*Session, error) { return nil, notSupported(pid, "seize") }

// SeizeThen is Seize with work done before the stop. Not supported on this
// platform: before never runs.
func SeizeThen(pid int, before func(s *Session) error) (*Session, error) {
	return nil, notSupported(pid, "seize")
}

// Pid returns the target's process id.
func (s *Session) Pid() int { return s.pidOrZero() }

// Tid returns the id of the traced thread.
func (s *Session) Tid() int { return 0 }

// ThreadStatus returns nothing: no thread is traced on this platform.
func (s *Session) ThreadStatus() procfs.Status { return procfs.Status{} }

// Stats returns the session's figures so far.
func (s *Session) Stats() Stats { return Stats{} }

// Syscall runs a system call in the target. Not supported on this platform.
func (s *Session) Syscall(nr uintptr, args ...uintptr) (uintptr, error) {
	return 0, notSupported(s.pidOrZero(), "syscall")
}

// ReadOnly places data in the target. Not supported on this platform.
func (s *Session) ReadOnly(data []byte) (uintptr, error) {
	return 0, notSupported(s.pidOrZero(), "read-only data")
}

// Mmap maps scratch memory in the target. Not supported on this platform.
func (s *Session) Mmap(length int) (uintptr, error) {
	return 0, notSupported(s.pidOrZero(), "mmap")
}

// Munmap unmaps memory in the target. Not supported on this platform.
func (s *Session) Munmap(addr uintptr, length int) error {
	return notSupported(s.pidOrZero(), "munmap")
}

// WriteMemory writes the target's memory. Not supported on this platform.
func (s *Session) WriteMemory(addr uintptr, data []byte) error {
	return notSupported(s.pidOrZero(), "write memory")
}

// ReadMemory reads the target's memory. Not supported on this platform.
func (s *Session) ReadMemory(addr uintptr, buf []byte) error {
	return notSupported(s.pidOrZero(), "read memory")
}

// Detach ends the session. Not supported on this platform.
func (s *Session) Detach() error { return notSupported(s.pidOrZero(), "detach") }

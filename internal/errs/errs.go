// Package errs holds the error values that every semundo package shares.
//
// Each public package re-exports the ones it returns (reader.ErrNotSupported
// is errs.ErrNotSupported, as cilium/ebpf re-exports one ErrNotSupported), so
// one errors.Is answers for an error from any layer, and the command line
// maps errors to exit statuses in one place. Where the standard library has
// a value that fits, it is used instead (fs.ErrPermission for every refusal
// by the kernel), or wrapped: ErrNotSupported is errors.ErrUnsupported too,
// ErrNoProcess is fs.ErrNotExist too.
package errs

import (
	"errors"
	"io/fs"
)

var (
	// ErrNotSupported: the kernel or the platform lacks what an operation
	// needs (BTF, a BPF feature, sem_next_id, an injector for this
	// architecture). errors.Is(err, errors.ErrUnsupported) holds as well.
	ErrNotSupported error = &sentinel{"not supported by this kernel", errors.ErrUnsupported}
	// ErrNoProcess: no process has the pid asked for, or it exited.
	// errors.Is(err, fs.ErrNotExist) holds as well.
	ErrNoProcess error = &sentinel{"no such process", fs.ErrNotExist}
)

// sentinel is an error value that also answers errors.Is for the standard
// library's value of the same meaning, without taking that value's text.
type sentinel struct {
	msg string
	is  error
}

func (s *sentinel) Error() string { return s.msg }

// Is reports whether target is the value s stands for, or one that value
// stands for in turn.
func (s *sentinel) Is(target error) bool { return target == s.is || errors.Is(s.is, target) }

// New returns a sentinel error with its own text that errors.Is also
// matches to kind (and to what kind matches): a narrower case of a shared
// error, such as an architecture without an injector, which is
// ErrNotSupported as well.
func New(text string, kind error) error { return &sentinel{text, kind} }

// Package helper owns semundo's injection helper, the child process that
// writes undo lists by ptrace injection (writer.Inject) on behalf of
// another process, and both sides of its protocol: the request (JSON on
// standard input), the exit statuses and the errors they stand for, the
// runner that starts the child (with a requester's credentials or its
// parent's own) and bounds it in time, and the child's main (Main).
//
// The injection runs in a child for two reasons. The kernel judges a
// ptrace attach and a set's alter permission by the credentials of the
// process that asks, so a daemon that writes for others (undofs) runs the
// child with the requester's credentials, never its own. And a child in a
// session of its own finishes, putting every target back, even when the
// command that started it is killed mid-write.
//
// The child is the running binary itself (/proc/self/exe), started with
// the argument "__inject"; the binary must have called Init first thing in
// main, as semundo does and undofs.Init lets a library user's program do.
// Run refuses with ErrNotRegistered rather than start a program that does
// not know the argument: that program would run with the requester's
// credentials doing whatever its main does. Options.Path names another
// binary (a semundo) instead.
//
// The protocol: standard input holds one Request, or an array of them done
// in order, stopping at the first failure; the child exits with ExitOK or
// one of the Exit statuses, and on failure says why in one line on
// standard error, prefixed with "semundo __inject: ".
package helper

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/semundo/semundo/internal/errs"
)

// Arg is the argument that makes a program run as the helper:
// `semundo __inject` (tests and scripts run it so as well).
const Arg = "__inject"

// Request is one injection: make process PID's undo list hold Want, read
// as Current just before ("add or update", see writer.Inject). Both lists
// are in the seed's text format (undo.Marshal).
type Request struct {
	PID     int    `json:"pid"`
	Current string `json:"current"`
	Want    string `json:"want"`
}

// Exit statuses of the helper. 1 to 4 are semundo's own exit statuses
// (see the README), so that the command line passes them on as they are;
// 5 and 6 are the helper's own. A signal, or any other status, is a
// failure its message names.
const (
	ExitOK          = 0
	ExitError       = 1 // any other failure, named by the message
	ExitUsage       = 2 // the helper was started with arguments it does not take
	ExitPermission  = 3 // EACCES/EPERM from ptrace or the set's alter permission
	ExitUnsupported = 4 // the kernel or the architecture lacks what injection needs
	ExitInvalid     = 5 // a malformed request, a semid missing, a wrong count, a value out of range
	ExitGone        = 6 // the target exited
)

// Errors a run returns (wrapped in *Error), by the helper's status.
var (
	// ErrPermission: ExitPermission, the kernel refused the requester.
	ErrPermission = fs.ErrPermission
	// ErrUnsupported: ExitUnsupported.
	ErrUnsupported = errs.ErrNotSupported
	// ErrInvalid: ExitInvalid, the list does not fit the target (or the
	// request was malformed).
	ErrInvalid = errors.New("invalid undo list for the target")
	// ErrNoProcess: ExitGone, the target is gone.
	ErrNoProcess = errs.ErrNoProcess
	// ErrTimeout: the helper did not finish before the run's deadline
	// and was killed.
	ErrTimeout = errors.New("injection timed out")
	// ErrFailed: the helper failed otherwise (ExitError, another status,
	// or a signal); its message says why.
	ErrFailed = errors.New("injection failed")
	// ErrNotRegistered: Run was to start this very binary as the helper,
	// but the program did not call Init (see the package documentation).
	ErrNotRegistered = errors.New("this program does not run semundo's injection helper: " +
		"call undofs.Init (or helper.Init) first thing in main, or name a semundo binary as the helper")
)

// StatusError returns the error a helper's exit status stands for: nil for
// ExitOK, and ErrFailed for a status it does not define.
func StatusError(status int) error {
	switch status {
	case ExitOK:
		return nil
	case ExitPermission:
		return ErrPermission
	case ExitUnsupported:
		return ErrUnsupported
	case ExitInvalid:
		return ErrInvalid
	case ExitGone:
		return ErrNoProcess
	}
	return ErrFailed
}

// Error is a failed helper run.
type Error struct {
	// Status is the helper's exit status, -1 when it did not exit (it was
	// killed, or never started).
	Status int
	// Msg is the helper's one-line message without its prefix, or what
	// went wrong around it; it may be empty.
	Msg string
	// Err is the cause: one of the package's errors, or the failure that
	// kept the helper from running.
	Err error
}

// Error returns "MSG: ERR", or whichever of the two there is.
func (e *Error) Error() string {
	switch {
	case e.Msg == "":
		return e.Err.Error()
	case e.Err == nil:
		return e.Msg
	}
	return fmt.Sprintf("%s: %v", e.Msg, e.Err)
}

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

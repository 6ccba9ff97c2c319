package undofs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/semundo/semundo/internal/errs"
	"github.com/semundo/semundo/internal/helper"
	"github.com/semundo/semundo/undo"
)

// Errors an Injector returns (wrapped), each answered to the writer with its
// own errno; any other error is EIO.
var (
	// ErrPermission: the kernel refused the caller (ptrace access, or alter
	// permission on a set). The writer gets EACCES.
	ErrPermission = fs.ErrPermission
	// ErrInvalid: the list written does not fit the target (a semid that
	// does not exist, the wrong number of values, a value out of range).
	// The writer gets EINVAL.
	ErrInvalid = helper.ErrInvalid
	// ErrNoProcess: the target process is gone. The writer gets ESRCH.
	ErrNoProcess = errs.ErrNoProcess
	// ErrTimeout: the injection did not finish in time and was killed.
	// The writer gets ETIMEDOUT.
	ErrTimeout = helper.ErrTimeout
)

// Injector changes the undo list of process pid from current (read just
// before the call) to hold want: "add or update", entries of current that
// want does not name stay as they are. It must act with caller's privileges
// only (its ids and its capabilities in its own user namespace), and return an error wrapping ErrPermission, ErrInvalid,
// ErrNoProcess or ErrTimeout where those apply.
type Injector interface {
	Inject(ctx context.Context, caller *Caller, pid int, current, want undo.List) error
}

// InjectRequest is the JSON object ExecInjector writes to its helper's
// standard input: the target pid and both lists in the seed's text format.
type InjectRequest = helper.Request

// Exit statuses of the helper ExecInjector runs. Any other status, or a
// signal, is a failure the writer sees as EIO.
const (
	HelperOK         = helper.ExitOK
	HelperPermission = helper.ExitPermission // EACCES/EPERM from ptrace or the set's alter permission
	HelperInvalid    = helper.ExitInvalid    // semid missing, wrong count, out of range
	HelperGone       = helper.ExitGone       // the target exited
)

// Init belongs first in main of a program that mounts with the default
// Injector, which runs the program itself as the helper: started as the
// helper (`PROGRAM __inject`), the process does the injection and exits;
// otherwise Init returns at once. Without it, Mount with the default
// Injector fails (ErrNoHelper), and an ExecInjector without a Path
// refuses to run, rather than start the program's own main with an
// opener's credentials. The semundo command calls it; a program that
// cannot, names a semundo binary in ExecInjector.Path.
func Init() { helper.Init() }

// DefaultInjectTimeout bounds one helper run.
const DefaultInjectTimeout = 10 * time.Second

// ExecInjector runs a helper program (by default this very binary as
// "PROGRAM __inject", which needs Init) as the caller: a child of the
// daemon takes on the caller's ids and groups, enters the caller's user
// namespace, keeps only the caller's capabilities there, sets
// no_new_privs, asks the kernel whether it may PTRACE_ATTACH the target
// (refused: ErrPermission, and the helper never runs), and executes the
// helper in a session of its own, which does the ptrace work with those
// credentials. The helper gets an InjectRequest on stdin and reports
// through its exit status; its stderr (one line) becomes the error's
// message. The kernel, not the daemon, decides what the caller may do:
// capabilities a caller holds in a user namespace of its own count only
// over that namespace's processes.
type ExecInjector struct {
	// Path is the helper binary; "" means this program, which must have
	// called Init. It is opened by the daemon and executed through
	// /proc/self/fd, so the caller's credentials need execute permission
	// on the file but not search permission on its directories.
	Path string
	// Args are the arguments after the program name; nil means
	// {"__inject"}.
	Args []string
	// Env is the helper's environment; nil means a bare PATH.
	Env []string
	// Timeout bounds a run (0: DefaultInjectTimeout). A helper still
	// running then is killed.
	Timeout time.Duration
}

// InjectError is a failed helper run.
type InjectError struct {
	PID    int    // target process
	Caller int    // the writing process
	Status int    // the helper's exit status, -1 when it did not exit normally
	Msg    string // what the helper said on stderr (one line), or what went wrong
	Err    error  // ErrPermission, ErrInvalid, ErrNoProcess, ErrTimeout or another cause
}

// Error returns "inject into pid P for pid C: MSG: ERR".
func (e *InjectError) Error() string {
	s := fmt.Sprintf("inject into pid %d for pid %d", e.PID, e.Caller)
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the error's kind.
func (e *InjectError) Unwrap() error { return e.Err }

// Inject runs the helper; see ExecInjector.
func (x *ExecInjector) Inject(ctx context.Context, caller *Caller, pid int, current, want undo.List) error {
	fail := func(status int, msg string, err error) error {
		return &InjectError{PID: pid, Caller: caller.TGID, Status: status, Msg: msg, Err: err}
	}
	cur, err := undo.Marshal(current)
	if err != nil {
		return fail(-1, "current list", err)
	}
	wt, err := undo.Marshal(want)
	if err != nil {
		return fail(-1, "wanted list", fmt.Errorf("%w: %w", ErrInvalid, err))
	}
	timeout := x.Timeout
	if timeout <= 0 {
		timeout = DefaultInjectTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	env := x.Env
	if env == nil {
		env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	err = helper.Run(ctx, []InjectRequest{{PID: pid, Current: string(cur), Want: string(wt)}},
		helper.Options{Path: x.Path, Args: x.Args, Env: env, Creds: caller.creds(), Target: pid})
	var he *helper.Error
	switch {
	case err == nil:
		return nil
	case !errors.As(err, &he):
		return fail(-1, "", err)
	case errors.Is(he.Err, ErrTimeout):
		return fail(-1, he.Msg, fmt.Errorf("%w after %v", ErrTimeout, timeout))
	case he.Status == HelperPermission && he.Msg == "":
		return fail(he.Status, fmt.Sprintf("pid %d may not ptrace pid %d", caller.TGID, pid), he.Err)
	case he.Status > 0 && (he.Err == helper.ErrFailed || he.Err == helper.ErrUnsupported):
		// Statuses without an errno of their own: EIO.
		return fail(he.Status, he.Msg, fmt.Errorf("helper exited with status %d", he.Status))
	}
	return fail(he.Status, he.Msg, he.Err)
}

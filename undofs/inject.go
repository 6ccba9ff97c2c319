package undofs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/semundo/semundo/internal/errs"
	"github.com/semundo/semundo/internal/procfs"
	"github.com/semundo/semundo/undo"
	"golang.org/x/sys/unix"
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
	ErrInvalid = errors.New("invalid undo list for the target")
	// ErrNoProcess: the target process is gone. The writer gets ESRCH.
	ErrNoProcess = errs.ErrNoProcess
	// ErrTimeout: the injection did not finish in time and was killed.
	// The writer gets ETIMEDOUT.
	ErrTimeout = errors.New("injection timed out")
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
type InjectRequest struct {
	PID     int    `json:"pid"`
	Current string `json:"current"`
	Want    string `json:"want"`
}

// Exit statuses of the helper ExecInjector runs. Any other status, or a
// signal, is a failure the writer sees as EIO.
const (
	HelperOK         = 0
	HelperPermission = 3 // EACCES/EPERM from ptrace or the set's alter permission
	HelperInvalid    = 5 // semid missing, wrong count, out of range
	HelperGone       = 6 // the target exited
)

// DefaultInjectTimeout bounds one helper run.
const DefaultInjectTimeout = 10 * time.Second

// ExecInjector runs a helper program (by default this very binary as
// "semundo __inject") as the caller: a child of the daemon takes on the
// caller's ids and groups, enters the caller's user namespace, keeps only
// the caller's capabilities there, sets no_new_privs, asks the kernel
// whether it may PTRACE_ATTACH the target (refused: ErrPermission, and the
// helper never runs), and executes the helper, which does the ptrace work
// with those credentials. The helper gets an InjectRequest on stdin and
// reports through its exit status; its stderr (one line) becomes the
// error's message. The kernel, not the daemon, decides what the caller may
// do: capabilities a caller holds in a user namespace of its own count
// only over that namespace's processes.
type ExecInjector struct {
	// Path is the helper binary; "" means /proc/self/exe. It is opened by
	// the daemon and executed through /proc/self/fd, so the caller's
	// credentials need execute permission on the file but not search
	// permission on its directories.
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
	req, err := json.Marshal(InjectRequest{PID: pid, Current: string(cur), Want: string(wt)})
	if err != nil {
		return fail(-1, "encode request", err)
	}

	path := x.Path
	if path == "" {
		path = "/proc/self/exe"
	}
	bin, err := os.Open(path)
	if err != nil {
		return fail(-1, "open helper", err)
	}
	defer bin.Close()
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err == unix.ESRCH {
		return fail(-1, "", ErrNoProcess)
	}
	if err != nil {
		return fail(-1, "pidfd", err)
	}
	defer unix.Close(pidfd)

	timeout := x.Timeout
	if timeout <= 0 {
		timeout = DefaultInjectTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	args := x.Args
	if args == nil {
		args = []string{"__inject"}
	}
	env := x.Env
	if env == nil {
		env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return fail(-1, "pipe", err)
	}
	defer inR.Close()
	defer inW.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		return fail(-1, "pipe", err)
	}
	defer errR.Close()
	defer errW.Close()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return fail(-1, "open "+os.DevNull, err)
	}
	defer null.Close()
	// The helper is descriptor 3, executed by its /proc/self/fd link after
	// the child has taken on the caller's credentials: they need execute
	// permission on the file, not search permission on its directories.
	ch, err := startChild(caller, accessAttach, pidfd, pid, &execSpec{
		path:  "/proc/self/fd/3",
		argv:  append([]string{"semundo"}, args...),
		env:   env,
		files: [4]*os.File{inR, null, errW, bin},
	})
	if err != nil {
		return fail(-1, fmt.Sprintf("start helper %s as uid %d", path, caller.UID[procfs.Real]), err)
	}
	inR.Close()
	errW.Close()
	go func() {
		inW.Write(req)
		inW.Close()
	}()
	var stderr limitedBuffer
	errDone := make(chan struct{})
	go func() {
		io.Copy(&stderr, errR)
		close(errDone)
	}()
	status, err := ch.wait(ctx)
	// The helper's stderr ends with it, unless it left a child holding it:
	// do not wait on that.
	select {
	case <-errDone:
	case <-time.After(time.Second):
		errR.Close()
	}
	msg := stderr.line()
	if ctx.Err() == context.DeadlineExceeded {
		return fail(-1, msg, fmt.Errorf("%w after %v", ErrTimeout, timeout))
	}
	if err != nil {
		return fail(-1, msg, fmt.Errorf("helper: %w", err))
	}
	switch status {
	case HelperOK:
		return nil
	case HelperPermission:
		if msg == "" {
			msg = fmt.Sprintf("pid %d may not ptrace pid %d", caller.TGID, pid)
		}
		return fail(status, msg, ErrPermission)
	case HelperInvalid:
		return fail(status, msg, ErrInvalid)
	case HelperGone:
		return fail(status, msg, ErrNoProcess)
	}
	return fail(status, msg, fmt.Errorf("helper exited with status %d", status))
}

// limitedBuffer keeps the first 4 KiB written to it: a helper's message
// is one line, and a runaway helper must not grow the daemon.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// line returns the first non-empty line written, trimmed.
func (l *limitedBuffer) line() string {
	for s := range strings.SplitSeq(string(l.b), "\n") {
		if s = strings.TrimSpace(s); s != "" {
			return s
		}
	}
	return ""
}

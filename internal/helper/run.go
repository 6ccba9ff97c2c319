package helper

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// registered is set by Init: this binary runs the helper when started
// with Arg.
var registered atomic.Bool

// Registered reports whether this program called Init, so that Run may
// start it as the helper.
func Registered() bool { return registered.Load() }

// Options configure Run.
type Options struct {
	// Path is the helper binary; "" means this very program, which must
	// have called Init. It is opened by the parent and executed through
	// the child's /proc/self/fd, so that Creds need execute permission on
	// the file but not search permission on its directories.
	Path string
	// Args are the arguments after the program name; nil means {Arg}.
	Args []string
	// Env is the helper's whole environment.
	Env []string
	// Creds, when set, are the credentials the helper runs with; the
	// child takes them on, and the kernel must let them PTRACE_ATTACH
	// Target before the helper runs (refused: ErrPermission). nil: the
	// helper keeps this process's credentials.
	Creds *Creds
	// Target is the process the request is for, checked with Creds. 0:
	// no check (only without Creds).
	Target int
}

// Run starts the helper with reqs on its standard input (one request as an
// object, several as an array) and waits for it. When ctx ends first the
// helper is killed (through a pidfd, so never a process that took its pid)
// and reaped, and Run returns ErrTimeout for a deadline, ctx's error
// otherwise. Every failure is an *Error wrapping one of the package's
// errors or what kept the helper from running.
//
// The helper runs in a session of its own, with the request in an
// anonymous file (a memfd) written whole before it starts: if the caller
// is killed, the helper still reads its whole request and finishes,
// putting every target back.
func Run(ctx context.Context, reqs []Request, opts Options) error {
	fail := func(msg string, err error) error { return &Error{Status: -1, Msg: msg, Err: err} }
	if len(reqs) == 0 {
		return nil
	}
	if opts.Creds != nil && opts.Target <= 0 {
		return fail("", fmt.Errorf("%w: a helper with a requester's credentials needs a target to check", ErrInvalid))
	}
	var in []byte
	var err error
	if len(reqs) == 1 {
		in, err = json.Marshal(reqs[0])
	} else {
		in, err = json.Marshal(reqs)
	}
	if err != nil {
		return fail("encode the request", err)
	}
	path := opts.Path
	if path == "" {
		if !registered.Load() {
			return fail("", ErrNotRegistered)
		}
		path = "/proc/self/exe"
	}
	bin, err := os.Open(path)
	if err != nil {
		return fail("open the helper", err)
	}
	defer bin.Close()
	stdin, err := requestFile(in)
	if err != nil {
		return fail("", err)
	}
	defer stdin.Close()
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return fail("open "+os.DevNull, err)
	}
	defer null.Close()
	errR, errW, err := os.Pipe()
	if err != nil {
		return fail("pipe", err)
	}
	defer errR.Close()
	defer errW.Close()

	mode, pidfd := AccessNone, -1
	if opts.Creds != nil {
		mode = AccessAttach
		pidfd, err = unix.PidfdOpen(opts.Target, 0)
		if err == unix.ESRCH {
			return fail("", ErrNoProcess)
		}
		if err != nil {
			return fail("pidfd", err)
		}
		defer unix.Close(pidfd)
	}
	args := opts.Args
	if args == nil {
		args = []string{Arg}
	}
	ch, err := startChild(opts.Creds, mode, pidfd, opts.Target, &execSpec{
		path:  "/proc/self/fd/3",
		argv:  append([]string{"semundo"}, args...),
		env:   opts.Env,
		files: [4]*os.File{stdin, null, errW, bin},
	})
	if err != nil {
		return fail("start the helper "+path, err)
	}
	errW.Close()
	var stderr limitedBuffer
	errDone := make(chan struct{})
	go func() {
		io.Copy(&stderr, errR)
		close(errDone)
	}()
	status, err := ch.wait(ctx)
	// The helper's stderr ends with it, unless it left a process holding
	// it: do not wait on that.
	select {
	case <-errDone:
	case <-time.After(time.Second):
		errR.Close()
		<-errDone
	}
	msg := stderr.line()
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return fail(msg, ErrTimeout)
	case err != nil:
		return fail(msg, err)
	case status == ExitOK:
		return nil
	}
	return &Error{Status: status, Msg: msg, Err: StatusError(status)}
}

// requestFile returns an anonymous file holding b, read from its start.
func requestFile(b []byte) (*os.File, error) {
	fd, err := unix.MemfdCreate("semundo-inject", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("memfd for the injection request: %w", err)
	}
	f := os.NewFile(uintptr(fd), "semundo-inject")
	if _, err := f.Write(b); err != nil {
		f.Close()
		return nil, fmt.Errorf("write the injection request: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("write the injection request: %w", err)
	}
	return f, nil
}

// Check asks the kernel, from a child holding c's credentials, whether they
// may access process pid as mode says. It returns nil, ErrPermission,
// ErrNoProcess (both unwrapped: the caller names the processes), or
// another failure. ctx bounds the child.
func Check(ctx context.Context, c *Creds, mode Access, pid int) error {
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err == unix.ESRCH {
		return ErrNoProcess
	}
	if err != nil {
		return fmt.Errorf("pidfd of pid %d: %w", pid, err)
	}
	defer unix.Close(pidfd)
	ch, err := startChild(c, mode, pidfd, pid, nil)
	if err != nil {
		return err
	}
	status, err := ch.wait(ctx)
	switch {
	case err != nil:
		return err
	case status == childAllowed:
		return nil
	case status == childDenied:
		return ErrPermission
	case status == childGone:
		return ErrNoProcess
	}
	return fmt.Errorf("credential child exited with status %d", status)
}

// limitedBuffer keeps the first 4 KiB written to it: a helper's message
// is one line, and a runaway helper must not grow its parent.
type limitedBuffer struct{ b []byte }

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := 4096 - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// line returns the first non-empty line written, trimmed, without the
// helper's "semundo __inject: " prefix.
func (l *limitedBuffer) line() string {
	for s := range strings.SplitSeq(string(l.b), "\n") {
		if s = strings.TrimSpace(s); s != "" {
			return strings.TrimPrefix(s, prefix)
		}
	}
	return ""
}

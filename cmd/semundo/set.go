package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"

	"github.com/semundo/semundo/inject"
	"github.com/semundo/semundo/reader"
	"github.com/semundo/semundo/undo"
	"github.com/semundo/semundo/writer"
	"golang.org/x/sys/unix"
)

// readList reads the seed's format from a file, or stdin for "-".
func readList(name string) (undo.List, error) {
	var b []byte
	var err error
	if name == "-" {
		b, err = io.ReadAll(os.Stdin)
	} else {
		b, err = os.ReadFile(name)
	}
	if err != nil {
		return nil, err
	}
	l, err := undo.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", displayName(name), err)
	}
	return l, nil
}

func displayName(name string) string {
	if name == "-" {
		return "stdin"
	}
	return name
}

// runSet writes a list into another process by ptrace injection.
var setCmd = &spec{
	name:   "set",
	args:   "PID [FILE|-]",
	about:  "make PID's adjustments for the sets listed in FILE (standard input for - or none)\nequal FILE's, by ptrace injection into PID (\"add or update\")",
	pids:   true,
	define: noFlags(func(c *cli, pos []string) error { return runSet(pos) }),
}

func runSet(args []string) error {
	if len(args) < 1 || len(args) > 2 {
		return usagef("set takes PID [FILE|-]")
	}
	pid, err := parsePID(args[0])
	if err != nil {
		return err
	}
	src := "-"
	if len(args) == 2 {
		src = args[1]
	}
	want, err := readList(src)
	if err != nil {
		return err
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		return fmt.Errorf("pid %d: no such process", pid)
	}
	r, err := openReader()
	if err != nil {
		return err
	}
	defer r.Close()
	return writer.WriteProcess(r, pid, want, &writer.Options{Injector: childInjector})
}

// childInjector runs the injections in `semundo __inject`, a child in a
// session of its own: if this command is killed mid-write, the child still
// finishes and puts every target back as it was, instead of leaving a
// target stopped halfway through an injected system call.
func childInjector(jobs []writer.Job) error {
	reqs := make([]injectRequest, len(jobs))
	for i, j := range jobs {
		cur, err := undo.Marshal(j.Current)
		if err != nil {
			return err
		}
		want, err := undo.Marshal(j.Want)
		if err != nil {
			return err
		}
		reqs[i] = injectRequest{PID: j.PID, Current: string(cur), Want: string(want)}
	}
	in, err := json.Marshal(reqs)
	if err != nil {
		return err
	}
	// The request goes in a file, complete before the child starts: a pipe
	// fed by this process would break if this process were killed. A memfd
	// has no name, so a kill leaves nothing behind either.
	fd, err := unix.MemfdCreate("semundo-inject", unix.MFD_CLOEXEC)
	if err != nil {
		return fmt.Errorf("memfd for the injection request: %w", err)
	}
	req := os.NewFile(uintptr(fd), "semundo-inject")
	defer req.Close()
	if _, err := req.Write(in); err != nil {
		return err
	}
	if _, err := req.Seek(0, io.SeekStart); err != nil {
		return err
	}
	cmd := exec.Command("/proc/self/exe", "__inject")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stdin = req
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return err
	}
	msg := strings.TrimSpace(strings.TrimPrefix(stderr.String(), "semundo __inject: "))
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	if msg == "" {
		msg = err.Error()
	}
	return &childError{msg: msg, code: commandCode(ee.ExitCode()), cause: childCause(ee.ExitCode())}
}

// commandCode is the command's exit status for the injection child's:
// the documented statuses pass through as they are, so that "not
// supported" (4) stays 4; the child's own codes for the file system
// daemon (invalid request, process gone) and a death by signal are
// errors (1).
func commandCode(child int) int {
	switch child {
	case exitError, exitUsage, exitPermission, exitUnsupported:
		return child
	}
	return exitError
}

// childCause is the sentinel an injection child's status stands for.
func childCause(child int) error {
	switch child {
	case injectExitPermission:
		return writer.ErrPermission
	case injectExitGone:
		return inject.ErrNoProcess
	case injectExitInvalid:
		return errInvalidList
	case exitUnsupported:
		return errUnsupported
	}
	return errInjectFailed
}

var (
	// errInvalidList: the injection child found a set missing or a
	// count wrong in the target's namespace.
	errInvalidList = errors.New("invalid list")
	// errUnsupported: the injection child found the platform or kernel
	// lacking what the write needs.
	errUnsupported = errors.New("not supported")
	// errInjectFailed: the injection child failed for a reason its message
	// names.
	errInjectFailed = errors.New("injection failed")
)

// childError is the injection child's one-line message, which names its
// cause already ("...: permission denied"), standing for that cause, with
// the exit status the command passes on.
type childError struct {
	msg   string
	code  int
	cause error
}

func (e *childError) Error() string { return e.msg }
func (e *childError) Unwrap() error { return e.cause }

// runExec writes a list into semundo's own process, then becomes CMD: the
// list survives execve, so CMD starts holding the adjustments.
var execCmd = &spec{
	name:  "exec",
	args:  "-- CMD [ARGS...]",
	about: "take FILE's adjustments into semundo's own process, then execve CMD, which keeps them\n(if execve fails, the adjustments are given back and no value changes)",
	raw:   true,
	define: func(fs *flag.FlagSet, c *cli) func([]string) error {
		file := fs.String("undo", "", "`FILE` holding the list to take, in show's format (- for standard input)")
		return func(cmd []string) error { return runExec(*file, cmd) }
	},
}

func runExec(file string, cmd []string) error {
	if file == "" || len(cmd) == 0 {
		return usagef("exec takes --undo FILE -- CMD [ARGS...]")
	}
	want, err := readList(file)
	if err != nil {
		return err
	}
	// A command that cannot run is an error (1), not a missing privilege,
	// even when the kernel says EACCES (a noexec mount): hence codeError.
	path, err := exec.LookPath(cmd[0])
	if err != nil {
		return codeError{exitError, fmt.Errorf("%s: %w", cmd[0], err)}
	}
	// A process started by fork and exec has no list, or (threads) an
	// empty one; with the reader (root) semundo checks rather than trusts:
	// a parent that cloned semundo with CLONE_SYSVSEM (without
	// CLONE_THREAD) shares its list, entries and all, and nothing in /proc
	// says so. kcmp(KCMP_SYSVSEM) tells only whether two tasks share a
	// list, not whether one is empty, and a parent that shared it may have
	// exited (semundo reparented): no cheaper check is as correct. The
	// check is made cheap instead: no waiters, and from Linux 6.1 ReadProcess
	// visits semundo's own threads only, not every task.
	var cur undo.List
	if r, err := reader.Open(&reader.Options{NoWaiters: true}); err == nil {
		l, err := r.ReadProcess(os.Getpid())
		r.Close()
		if err != nil {
			return err
		}
		cur = l.Undo()
	}
	if err := writer.WriteSelf(cur, want, nil); err != nil {
		return err
	}
	err = syscall.Exec(path, cmd, os.Environ())
	// Still here: semundo's exit would apply the adjustments it took, so
	// give them back first (checks cannot rule out every execve failure:
	// a bad interpreter, a noexec mount, E2BIG).
	if berr := writeBack(cur, want); berr != nil {
		return codeError{exitError, fmt.Errorf("exec %s: %w; giving the adjustments back failed, so semundo's exit applies them: %w", path, err, berr)}
	}
	return codeError{exitError, fmt.Errorf("exec %s: %w (the adjustments were given back; no value changed)", path, err)}
}

// writeBack returns semundo's own list from want to what it was before,
// cur: each set of want gets cur's adjustments, or zeros where cur had no
// entry (the entry stays, all zero, which applies nothing at exit).
func writeBack(cur, want undo.List) error {
	back := make(undo.List, 0, len(want))
	for _, e := range want {
		b := undo.Entry{Semid: e.Semid, Adj: make([]int16, len(e.Adj))}
		if c, ok := cur.Lookup(e.Semid); ok && len(c.Adj) == len(e.Adj) {
			copy(b.Adj, c.Adj)
		}
		back = append(back, b)
	}
	return writer.WriteSelf(want, back, nil)
}

// injectRequest is what `semundo __inject` reads on stdin: the file
// system's write path runs it with the credentials of the process that
// wrote, so the kernel judges that process's right to ptrace the target.
type injectRequest struct {
	PID     int    `json:"pid"`
	Current string `json:"current"`
	Want    string `json:"want"`
}

// Exit codes of __inject, read by the file system daemon.
const (
	injectExitPermission = 3
	injectExitInvalid    = 5
	injectExitGone       = 6
)

// runInjectHelper is the hidden `__inject` command: it reads one request,
// or an array of them (done in order, stopping at the first failure).
// injectCmd is the hidden helper that runs one injection session (see
// childInjector).
var injectCmd = &spec{
	name:   "__inject",
	about:  "internal: one injection, requested on standard input",
	hidden: true,
	define: noFlags(func(c *cli, pos []string) error { return runInjectHelper() }),
}

func runInjectHelper() error {
	// If the semundo that started this helper is gone, its error message
	// has nowhere to go; that must not kill the helper mid-injection.
	signal.Ignore(syscall.SIGPIPE)
	// The process that started this helper asked for the write: its
	// list must not be the target (read now, while it certainly waits).
	parent := os.Getppid()
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		return codeError{injectExitInvalid, fmt.Errorf("bad request: %w", err)}
	}
	var reqs []injectRequest
	if t := bytes.TrimSpace(in); len(t) > 0 && t[0] == '[' {
		err = json.Unmarshal(in, &reqs)
	} else {
		var one injectRequest
		err = json.Unmarshal(in, &one)
		reqs = []injectRequest{one}
	}
	if err != nil {
		return codeError{injectExitInvalid, fmt.Errorf("bad request: %w", err)}
	}
	for _, req := range reqs {
		if err := injectOne(req, parent); err != nil {
			return err
		}
	}
	return nil
}

func injectOne(req injectRequest, parent int) error {
	cur, err := undo.Parse([]byte(req.Current))
	if err != nil {
		return codeError{injectExitInvalid, fmt.Errorf("current list: %w", err)}
	}
	want, err := undo.Parse([]byte(req.Want))
	if err != nil {
		return codeError{injectExitInvalid, err}
	}
	err = writer.Inject(req.PID, cur, want, &writer.Options{Callers: []int{parent}})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, inject.ErrPermission), errors.Is(err, writer.ErrPermission):
		return codeError{injectExitPermission, err}
	case errors.Is(err, writer.ErrNoSet), errors.Is(err, writer.ErrCount):
		return codeError{injectExitInvalid, err}
	case errors.Is(err, inject.ErrNoProcess), errors.Is(err, inject.ErrTargetExited), errors.Is(err, inject.ErrZombie):
		return codeError{injectExitGone, err}
	}
	return err
}

// codeError carries a specific exit status.
type codeError struct {
	code int
	err  error
}

func (e codeError) Error() string { return e.err.Error() }
func (e codeError) Unwrap() error { return e.err }

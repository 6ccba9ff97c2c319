// Package criuaction is the part of semundo's CRIU companion that the
// post-dump and post-resume actions run while CRIU holds the tree frozen
// or stopped: reading CRIU's environment and handing the action's work to
// the helper that pre-dump or pre-restore started (package criu's Serve).
//
// It imports only the standard library, x/sys/unix and internal/procfs,
// so that cmd/semundo-criu-action, which runs it, starts in about 60% of
// the time the semundo command takes (whose package initialisers run in
// every process), and that time is the container's downtime. Package criu
// builds on it: its Env, ParseEnv and errors are this package's.
package criuaction

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/semundo/semundo/internal/procfs"
	"golang.org/x/sys/unix"
)

// The environment variables CRIU sets for an action script.
const (
	// EnvAction names the step CRIU is at, e.g. "post-dump".
	EnvAction = "CRTOOLS_SCRIPT_ACTION"
	// EnvImageDir is CRIU's images directory, as a /proc/CRIUPID/fd/N path.
	EnvImageDir = "CRTOOLS_IMAGE_DIR"
	// EnvInitPID is the tree's root, as a pid in CRIU's (the host's) PID
	// namespace; at restore it is the restored root's new pid.
	EnvInitPID = "CRTOOLS_INIT_PID"
)

// The environment variables semundo adds, since CRIU passes no arguments.
const (
	// EnvAllowRunning, set to 1 (or true, yes), lets post-resume write the
	// lists into tasks that already run (a restore without
	// --leave-stopped), adding the saved adjustments to whatever the tasks
	// have built since.
	EnvAllowRunning = "SEMUNDO_CRIU_ALLOW_RUNNING"
	// EnvStateDir overrides DefaultStateDir.
	EnvStateDir = "SEMUNDO_CRIU_STATE_DIR"
	// EnvHelper set to 0 (or false, no) makes every action do its own
	// work, with no helper.
	EnvHelper = "SEMUNDO_CRIU_HELPER"
)

// The actions the companion acts on; it ignores every other one.
const (
	ActionPreDump    = "pre-dump"
	ActionPostDump   = "post-dump"
	ActionPreRestore = "pre-restore"
	ActionPostResume = "post-resume"
)

// DefaultStateDir is where pre-restore hands the files over to
// post-resume: CRIU closes the images directory before post-resume.
const DefaultStateDir = "/run/semundo/criu"

// ErrEnv: CRIU's environment lacks a variable the action needs, or holds
// a malformed one.
var ErrEnv = errors.New("bad CRIU action-script environment")

// Env is what CRIU tells an action script, plus semundo's own settings.
type Env struct {
	// Action is CRTOOLS_SCRIPT_ACTION.
	Action string
	// ImageDir is CRTOOLS_IMAGE_DIR, empty if unset.
	ImageDir string
	// InitPID is CRTOOLS_INIT_PID, 0 if unset (CRIU sets it once the
	// root's pid is known: not at pre-restore).
	InitPID int
	// AllowRunning is SEMUNDO_CRIU_ALLOW_RUNNING.
	AllowRunning bool
	// StateDir is SEMUNDO_CRIU_STATE_DIR, empty for DefaultStateDir.
	StateDir string
	// NoHelper is SEMUNDO_CRIU_HELPER=0: every action does its own work.
	NoHelper bool
}

// ParseEnv reads the environment through lookup (os.LookupEnv). Only
// values that are present and malformed are errors: which variables an
// action needs is checked by the action.
func ParseEnv(lookup func(string) (string, bool)) (Env, error) {
	var e Env
	e.Action, _ = lookup(EnvAction)
	e.ImageDir, _ = lookup(EnvImageDir)
	if v, ok := lookup(EnvInitPID); ok && v != "" {
		pid, err := strconv.Atoi(v)
		if err != nil || pid <= 0 {
			return e, fmt.Errorf("%s=%q is not a pid: %w", EnvInitPID, v, ErrEnv)
		}
		e.InitPID = pid
	}
	var err error
	if e.AllowRunning, err = envSwitch(lookup, EnvAllowRunning, false, "use 1 to allow, 0 or unset to refuse"); err != nil {
		return e, err
	}
	e.StateDir, _ = lookup(EnvStateDir)
	helper, err := envSwitch(lookup, EnvHelper, true, "use 0 to do without the helper")
	if err != nil {
		return e, err
	}
	e.NoHelper = !helper
	return e, nil
}

// envSwitch reads an on/off variable: 1, true or yes; 0, false or no; unset
// or empty gives def. Anything else is an error saying what to use.
func envSwitch(lookup func(string) (string, bool), name string, def bool, use string) (bool, error) {
	v, _ := lookup(name)
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "":
		return def, nil
	case "1", "true", "yes":
		return true, nil
	case "0", "false", "no":
		return false, nil
	}
	return def, fmt.Errorf("%s=%q: %s: %w", name, v, use, ErrEnv)
}

// NeedEnv checks the variables post-dump (root too) and pre-restore need.
func NeedEnv(env Env, root bool) error {
	if env.ImageDir == "" {
		return fmt.Errorf("%s is not set at %s: run semundo criu-script only as CRIU's action script: %w", EnvImageDir, env.Action, ErrEnv)
	}
	if root && env.InitPID == 0 {
		return fmt.Errorf("%s is not set at %s: run semundo criu-script only as CRIU's action script: %w", EnvInitPID, env.Action, ErrEnv)
	}
	return nil
}

// HandoffDir names the directory through which pre-restore hands the
// files to post-resume of the same restore, and where a helper's socket
// lives: one per CRIU process, named after its pid and start time (so a
// reused pid never meets a stale directory). CRIU's pid is the one in
// CRTOOLS_IMAGE_DIR (/proc/PID/fd/N), which every action of one run sees,
// even when a wrapper script does not exec; without it, the parent's.
func HandoffDir(env Env) (string, error) {
	state := env.StateDir
	if state == "" {
		state = DefaultStateDir
	}
	pid := os.Getppid()
	if rest, ok := strings.CutPrefix(env.ImageDir, "/proc/"); ok {
		if p, _, ok := strings.Cut(rest, "/"); ok {
			if n, err := strconv.Atoi(p); err == nil && n > 0 {
				pid = n
			}
		}
	}
	st, err := procfs.NewDefaultFS().Stat(pid)
	if err != nil {
		return "", fmt.Errorf("CRIU process %d: %w", pid, err)
	}
	return filepath.Join(state, fmt.Sprintf("criu-%d-%d", pid, st.StartTime)), nil
}

// PrivateDir checks that dir is a directory of this process's user that
// no other user can write into or look up in.
func PrivateDir(dir string) error {
	var st unix.Stat_t
	if err := unix.Lstat(dir, &st); err != nil {
		return fmt.Errorf("semundo's state directory %s: %w", dir, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR || int(st.Uid) != os.Geteuid() || st.Mode&0o077 != 0 {
		return fmt.Errorf("%s must be a directory of uid %d closed to other users (it is uid %d, mode %#o): the helper is not started", dir, os.Geteuid(), st.Uid, st.Mode&0o7777)
	}
	return nil
}

// SocketName is the helper's socket's name in the run's directory.
const SocketName = "helper.sock"

// Protocol is the version of the messages below. A helper sends it in its
// Hello; an action that speaks another one does the work itself (a
// semundo-criu-action of another release than the semundo that started
// the helper).
const Protocol = 1

const (
	// ReadyWait bounds how long a post-* action waits for the helper to
	// say it is ready (its reader loaded) before doing the work itself.
	ReadyWait = 5 * time.Second
	// JobWait bounds the wait for the job's result. Once the job is
	// handed over the post-* action cannot do it itself (that would write
	// the lists twice): past this it fails, saying so.
	JobWait = 2 * time.Minute
)

// The messages on the socket, one JSON line each: the helper sends Hello,
// the action sends Job, the helper answers Result.
type (
	// Hello: Ready, the helper can do the job; else Why says why not, and
	// the action does the work itself.
	Hello struct {
		Ready    bool   `json:"ready"`
		Why      string `json:"why,omitempty"`
		Protocol int    `json:"protocol,omitempty"`
	}
	// Job hands the action's environment to the helper.
	Job struct {
		Env Env `json:"env"`
	}
	// Result is the job's outcome: the log lines it wrote, and its error.
	Result struct {
		Log   []string `json:"log,omitempty"`
		Error string   `json:"error,omitempty"`
	}
)

// PeerUID returns the uid of the process at the other end of c.
func PeerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, cerr
	}
	return int(cred.Uid), nil
}

// ReadMsg reads one message line into v, refusing unknown fields.
func ReadMsg(r *bufio.Reader, v any) error {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// WriteMsg writes v as one message line.
func WriteMsg(c net.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = c.Write(append(b, '\n'))
	return err
}

// CallHelper is the post-* action's part: it hands env's job to the
// helper of this CRIU run (whose directory is dir), if there is one and it
// is ready in time. done reports whether the helper took the job: if not,
// the caller does it (why says why, for the log); if so, err is the job's
// outcome and logf gets the helper's log lines.
func CallHelper(env Env, dir string, logf func(format string, a ...any)) (done bool, why string, err error) {
	path := filepath.Join(dir, SocketName)
	if _, err := os.Lstat(path); err != nil {
		return false, "no helper was started", nil
	}
	if err := PrivateDir(dir); err != nil {
		return false, err.Error(), nil
	}
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		os.Remove(path)
		return false, fmt.Sprintf("the helper is gone (%v)", err), nil
	}
	defer c.Close()
	if uid, err := PeerUID(c); err != nil || uid != os.Geteuid() {
		return false, fmt.Sprintf("the helper socket's owner is uid %d, not %d (%v)", uid, os.Geteuid(), err), nil
	}
	in := bufio.NewReader(c)
	c.SetDeadline(time.Now().Add(ReadyWait))
	var hello Hello
	if err := ReadMsg(in, &hello); err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return false, fmt.Sprintf("the helper was not ready within %v", ReadyWait), nil
		}
		return false, fmt.Sprintf("the helper is gone (%v)", err), nil
	}
	if !hello.Ready {
		return false, "the helper cannot do it: " + hello.Why, nil
	}
	if hello.Protocol != Protocol {
		return false, fmt.Sprintf("the helper speaks protocol %d, this action %d (a semundo-criu-action of another release than semundo's)", hello.Protocol, Protocol), nil
	}
	// From here on the helper owns the job.
	c.SetDeadline(time.Now().Add(JobWait))
	if err := WriteMsg(c, Job{Env: env}); err != nil {
		return true, "", fmt.Errorf("hand the %s work to the helper: %w", env.Action, err)
	}
	var res Result
	if err := ReadMsg(in, &res); err != nil {
		return true, "", fmt.Errorf("the helper took the %s work and gave no result (%v): it may be half done; "+
			"see the tasks' state", env.Action, err)
	}
	for _, l := range res.Log {
		logf("%s", l)
	}
	if res.Error != "" {
		return true, "", errors.New(res.Error)
	}
	return true, "", nil
}

// ThroughHelper is what post-dump and post-resume do before any work of
// their own: it hands the job to the helper when one was started (with
// useHelper, unless env.NoHelper). done reports that the action is over,
// with err its outcome; otherwise the caller does the work itself, and
// logf has been told why if a helper was tried. A post-resume with no
// handoff directory is over at once: no image was found at pre-restore.
// Other actions are never done here.
func ThroughHelper(env Env, useHelper bool, logf func(format string, a ...any)) (done bool, err error) {
	switch env.Action {
	case ActionPostDump:
		if err := NeedEnv(env, true); err != nil {
			return true, err
		}
		if !useHelper || env.NoHelper {
			return false, nil
		}
		hd, err := HandoffDir(env)
		if err != nil {
			return false, nil // the work itself says what is wrong
		}
		done, why, err := CallHelper(env, hd, logf)
		if done {
			return true, err
		}
		logf("post-dump: not through the helper: %s", why)
		// It held only the socket; a helper still alive has its
		// listener, and exits with CRIU.
		os.RemoveAll(hd)
		return false, nil
	case ActionPostResume:
		hd, err := HandoffDir(env)
		if err != nil {
			return true, err
		}
		if _, err := os.Stat(hd); err != nil {
			return true, nil // no semundo image at pre-restore: nothing to do
		}
		if !useHelper || env.NoHelper {
			return false, nil
		}
		done, why, err := CallHelper(env, hd, logf)
		if done {
			return true, err
		}
		logf("post-resume: not through the helper: %s", why)
		return false, nil
	}
	return false, nil
}

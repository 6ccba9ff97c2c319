package criu

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/semundo/semundo/internal/criuaction"
	"github.com/semundo/semundo/reader"
	"golang.org/x/sys/unix"
)

// The helper: CRIU holds the tree frozen through post-dump and stopped
// until post-resume ends, so what those actions spend is the container's
// downtime. Most of it needs no frozen tree: loading and verifying the
// BPF reader, starting a process. So pre-dump and pre-restore start a
// helper, which loads the reader and waits, on a unix socket in the run's
// directory under the state directory, for post-dump or post-resume to
// hand it the work. The post-* action falls back to doing the work itself
// when the helper is missing, dead, or not ready in time, and says so.
//
// The helper never outlives its CRIU: it watches CRIU through a pidfd
// (taken by the pre-* action, while CRIU waits for it) and exits when
// CRIU does, after an idle limit in any case, and once its one job is
// done. The socket is only reachable through directories owned by the
// helper's user and closed to others, is named after CRIU's pid and start
// time (a stale one from another run is never looked up), and both ends
// check the other's uid (SO_PEERCRED).

// HelperArg is the hidden command that runs the helper: Options.Helper's
// default command is the running program with this one argument. The
// environment (CRTOOLS_*, EnvStateDir) is inherited from the pre-*
// action, which also passes the listening socket as fd 3 and a pidfd of
// CRIU as fd 4.
const HelperArg = "__criu-helper"

// EnvHelper set to 0 (or false, no) makes every action do its own work,
// with no helper.
const EnvHelper = criuaction.EnvHelper

// helperSocket is the socket's name in the run's directory. The
// protocol's client side and its messages are package criuaction's:
// semundo-criu-action speaks it without this package.
const helperSocket = criuaction.SocketName

const (
	// helperIdle bounds a helper's life when no job comes: CRIU may run as
	// a long-lived service, and a pidfd then never fires.
	helperIdle = 10 * time.Minute
	// helperRequest bounds how long the helper waits for the job once it
	// said it is ready.
	helperRequest = 5 * time.Second
)

// startHelper is the pre-* action's part: it makes the run's directory
// (dir, under the state directory), binds the socket there and starts the
// helper with it. Failing is no error for CRIU: the post-* action then
// does the work itself; the returned error says why, for the log.
func startHelper(env Env, dir string, opts *Options) error {
	if opts == nil || opts.Helper == nil || env.NoHelper {
		return errNoHelper
	}
	criuPID, err := criuPID(env)
	if err != nil {
		return err
	}
	// A pidfd taken now, while CRIU waits for this action, names this very
	// CRIU even if it dies and its pid is reused later.
	pidfd, err := unix.PidfdOpen(criuPID, 0)
	if err != nil {
		return fmt.Errorf("pidfd of CRIU (pid %d): %w", criuPID, err)
	}
	pf := os.NewFile(uintptr(pidfd), "criu-pidfd")
	defer pf.Close()
	if err := criuaction.PrivateDir(filepath.Dir(dir)); err != nil {
		return err
	}
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
	}
	if err := criuaction.PrivateDir(dir); err != nil {
		return err
	}
	path := filepath.Join(dir, helperSocket)
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return fmt.Errorf("helper socket: %w", err)
	}
	// The helper removes the socket when it is done: closing the listener
	// here must not.
	ln.SetUnlinkOnClose(false)
	lf, err := ln.File()
	ln.Close()
	if err != nil {
		os.Remove(path)
		return err
	}
	defer lf.Close()
	cmd := opts.Helper()
	cmd.Env = append(os.Environ(), EnvAction+"="+env.Action, EnvImageDir+"="+env.ImageDir, EnvStateDir+"="+filepath.Dir(dir))
	cmd.ExtraFiles = []*os.File{lf, pf}
	// Its own session: no terminal signal of CRIU's reaches it. No
	// standard files: a pipe CRIU's caller reads must not stay open.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
	// Nor any other descriptor this action inherited from CRIU without
	// close-on-exec (this process exits next; fds 3 and 4 are passed as
	// copies).
	unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC)
	if err := cmd.Start(); err != nil {
		os.Remove(path)
		return fmt.Errorf("start the helper: %w", err)
	}
	// Not waited for: it outlives this action, and CRIU (or init) reaps it.
	return cmd.Process.Release()
}

// errNoHelper: the helper is not configured or was turned off.
var errNoHelper = errors.New("no helper configured")

// criuPID is CRIU's pid, from CRTOOLS_IMAGE_DIR (see handoffDir).
func criuPID(env Env) (int, error) {
	hd, err := handoffDir(env)
	if err != nil {
		return 0, err
	}
	var pid int
	var start uint64
	if _, err := fmt.Sscanf(filepath.Base(hd), "criu-%d-%d", &pid, &start); err != nil {
		return 0, err
	}
	return pid, nil
}

// Serve is the helper (HelperArg): it is started by the pre-dump or
// pre-restore action (env.Action) with the listening socket as fd 3 and a
// pidfd of CRIU as fd 4. It loads the reader, then waits for the paired
// post-* action, does its work and exits. It exits without doing any
// when CRIU exits first, when no job comes within its idle limit, or when
// the action gives up on it; in every case it removes its socket.
func Serve(env Env, opts *Options) error {
	var paired string
	switch env.Action {
	case "pre-dump":
		paired = ActionPostDump
	case ActionPreRestore:
		paired = ActionPostResume
	default:
		return fmt.Errorf("%s is started by CRIU's pre-dump or pre-restore action, not %q: %w", HelperArg, env.Action, ErrEnv)
	}
	lf, pf := os.NewFile(3, "listener"), os.NewFile(4, "criu-pidfd")
	if lf == nil || pf == nil {
		return fmt.Errorf("%s needs its socket and CRIU's pidfd as fds 3 and 4: %w", HelperArg, ErrEnv)
	}
	defer pf.Close()
	fl, err := net.FileListener(lf)
	lf.Close()
	if err != nil {
		return fmt.Errorf("%s: fd 3 is not its socket (%v): %w", HelperArg, err, ErrEnv)
	}
	ln, ok := fl.(*net.UnixListener)
	if !ok {
		fl.Close()
		return fmt.Errorf("%s: fd 3 is not a unix socket: %w", HelperArg, ErrEnv)
	}
	path := ln.Addr().String()
	ln.SetUnlinkOnClose(false)
	defer func() {
		ln.Close()
		os.Remove(path)
		if paired == ActionPostDump {
			os.Remove(filepath.Dir(path)) // it held only the socket
		}
	}()
	criuGone := make(chan struct{})
	go func() {
		// A pidfd polls readable when the process exits.
		fds := []unix.PollFd{{Fd: int32(pf.Fd()), Events: unix.POLLIN}}
		for {
			n, err := unix.Poll(fds, -1)
			if err == unix.EINTR {
				continue
			}
			if n > 0 || err != nil {
				close(criuGone)
				return
			}
		}
	}()

	// At dump, CRIU closes pstree.img once it has seized and dumped every
	// task, and a few steps before post-dump (the namespaces, cgroups and
	// inventory come between): what post-dump reads can be read then,
	// leaving post-dump to check that it still holds (Dump). Watched from
	// the start, so that the close is not missed while the reader loads.
	var pstreeClosed <-chan struct{}
	if paired == ActionPostDump && env.InitPID != 0 && env.ImageDir != "" {
		pstreeClosed = watchClose(env.ImageDir, pstreeFile)
	}

	// The slow part, while CRIU works.
	var (
		r       *reader.Reader
		openErr error
		handoff *handedOver
	)
	loaded := make(chan struct{})
	restore := yieldCPU()
	go func() {
		r, openErr = opts.open()
		if paired == ActionPostResume {
			// The files pre-restore just wrote, read now rather than
			// while the tree is held stopped. An error here is
			// post-resume's to report: it reads them again.
			if dir, err := handoffDir(env); err == nil {
				handoff, _ = readHandoff(dir)
			}
		}
		restore()
		close(loaded)
	}()
	select {
	case <-loaded:
	case <-criuGone:
		os.RemoveAll(filepath.Dir(path))
		return nil
	case <-time.After(helperIdle):
		return nil
	}

	type accepted struct {
		c   *net.UnixConn
		err error
	}
	conns := make(chan accepted)
	go func() {
		for {
			c, err := ln.AcceptUnix()
			conns <- accepted{c, err}
			if err != nil {
				return
			}
		}
	}()
	idle := time.After(helperIdle)
	var early *dumpCapture
	for {
		var a accepted
		select {
		case <-pstreeClosed:
			pstreeClosed = nil
			select {
			case a = <-conns: // post-dump came already: the capture is its job
			default:
				if r == nil {
					continue // the job will only be told why
				}
				if c, err := captureDump(r, env.InitPID, env.ImageDir, opts); err == nil && c.pstree != nil {
					early = c
				}
				continue
			}
		case a = <-conns:
		case <-criuGone:
			// No post-* action will come: what pre-restore handed over
			// goes too.
			os.RemoveAll(filepath.Dir(path))
			if r != nil {
				r.Close()
			}
			return nil
		case <-idle:
			if r != nil {
				r.Close()
			}
			return nil
		}
		if a.err != nil {
			return a.err
		}
		if uid, err := criuaction.PeerUID(a.c); err != nil || uid != os.Geteuid() {
			a.c.Close() // another user's: not a word to it
			continue
		}
		return serveOne(a.c, env, paired, r, openErr, handoff, early, opts)
	}
}

// serveOne runs the one job of a helper over c.
func serveOne(c *net.UnixConn, env Env, paired string, r *reader.Reader, openErr error, handoff *handedOver, early *dumpCapture, opts *Options) error {
	defer c.Close()
	if openErr != nil {
		criuaction.WriteMsg(c, criuaction.Hello{Why: openErr.Error(), Protocol: criuaction.Protocol})
		return nil
	}
	// Closed only once the answer is out (the job keeps it open).
	defer r.Close()
	c.SetDeadline(time.Now().Add(helperRequest))
	if err := criuaction.WriteMsg(c, criuaction.Hello{Ready: true, Protocol: criuaction.Protocol}); err != nil {
		return nil // the action gave up waiting and does the work itself
	}
	var job criuaction.Job
	if err := criuaction.ReadMsg(bufio.NewReader(c), &job); err != nil {
		return nil // likewise
	}
	c.SetDeadline(time.Time{})
	var res criuaction.Result
	switch {
	case job.Env.Action != paired:
		res.Error = fmt.Sprintf("the helper started at %s serves %s, not %s", env.Action, paired, job.Env.Action)
	case job.Env.ImageDir == "":
		res.Error = "the job names no images directory"
	default:
		if mine, theirs := runDir(env), runDir(job.Env); mine != theirs {
			res.Error = fmt.Sprintf("the helper serves the CRIU run of %s, not %s", mine, theirs)
			break
		}
		var o Options
		if opts != nil {
			o = *opts
		}
		var log bytes.Buffer
		o.Log = &log
		// The injections run in this process, in parallel (writer.InjectAll):
		// it has a session of its own, which a signal to CRIU's never reaches.
		o.Injector = nil
		o.OpenReader = func() (*reader.Reader, error) { return r, nil }
		o.keepReader = true
		o.handoff = handoff
		o.early = early
		start := time.Now()
		if err := work(job.Env, &o); err != nil {
			res.Error = err.Error()
		}
		took := time.Since(start)
		for _, l := range bytes.Split(bytes.TrimSpace(log.Bytes()), []byte("\n")) {
			if len(l) > 0 {
				res.Log = append(res.Log, string(bytes.TrimPrefix(l, []byte("semundo: "))))
			}
		}
		res.Log = append(res.Log, fmt.Sprintf("%s: done by the helper started at %s (pid %d) in %.1f ms",
			paired, env.Action, os.Getpid(), float64(took)/float64(time.Millisecond)))
	}
	c.SetDeadline(time.Now().Add(helperRequest))
	criuaction.WriteMsg(c, res)
	return nil
}

// runDir names a CRIU run by its directory under the state directory, ""
// when it cannot.
func runDir(env Env) string {
	d, err := handoffDir(env)
	if err != nil {
		return ""
	}
	return d
}

// watchClose returns a channel closed when a file named name in dir is
// closed after writing (inotify's IN_CLOSE_WRITE), nil when dir cannot be
// watched. The watch ends with the process.
func watchClose(dir, name string) <-chan struct{} {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil
	}
	if _, err := unix.InotifyAddWatch(fd, dir, unix.IN_CLOSE_WRITE|unix.IN_ONLYDIR); err != nil {
		unix.Close(fd)
		return nil
	}
	// Non-blocking, so that the runtime's poller waits, not a thread.
	f := os.NewFile(uintptr(fd), "inotify")
	closed := make(chan struct{})
	go func() {
		defer f.Close()
		// Room for several events whose names are as long as a name can be.
		buf := make([]byte, 8*(unix.SizeofInotifyEvent+unix.NAME_MAX+1))
		for {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			for b := buf[:n]; len(b) >= unix.SizeofInotifyEvent; {
				mask := binary.NativeEndian.Uint32(b[4:])
				size := unix.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(b[12:]))
				if size > len(b) {
					break
				}
				if mask&unix.IN_CLOSE_WRITE != 0 && string(bytes.TrimRight(b[unix.SizeofInotifyEvent:size], "\x00")) == name {
					close(closed)
					return
				}
				b = b[size:]
			}
		}
	}()
	return closed
}

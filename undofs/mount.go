package undofs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/semundo/semundo/internal/errs"
	"github.com/semundo/semundo/internal/helper"
	"github.com/semundo/semundo/internal/procfs"
	"github.com/semundo/semundo/reader"
	"golang.org/x/sys/unix"
)

// Errors of Mount and Unmount, to be tested with errors.Is.
var (
	// ErrMounted: the directory already has a FUSE file system mounted on
	// it (another semundo mount, or any other), or another Mount is being
	// set up there.
	ErrMounted = errors.New("mount point already in use")
	// ErrNoFUSE: the kernel offers no FUSE (/dev/fuse is missing). It is
	// ErrNotSupported (and errors.ErrUnsupported) as well.
	ErrNoFUSE = errs.New("FUSE is not available", errs.ErrNotSupported)
	// ErrBusy: the mount was in use, so Unmount detached it lazily.
	ErrBusy = errors.New("mount point busy")
	// ErrNoHelper: Mount was asked for the default Injector in a program
	// that did not call Init, so cannot run itself as the helper.
	ErrNoHelper = helper.ErrNotRegistered
)

// Options configure Mount. The zero value is right for the daemon.
type Options struct {
	// AllowOther lets users other than the mounter in (the kernel's
	// allow_other). Without it the kernel lets in only processes whose
	// user and group ids all equal the mounter's.
	AllowOther bool
	// Reader reads the lists. nil: Mount opens one, closed when serving
	// ends.
	Reader *reader.Reader
	// Injector applies writes. nil: an ExecInjector running this program
	// as "PROGRAM __inject", which needs Init in its main: without it,
	// Mount fails.
	Injector Injector
	// InjectTimeout bounds one write's injection (0: DefaultInjectTimeout).
	InjectTimeout time.Duration
	// Log receives one line per failed request and per event worth an
	// administrator's eye. nil: nothing is logged; the caller owns where
	// and how those lines are shown (the command passes its own).
	Log *log.Logger
	// Debug logs every FUSE request to Log.
	Debug bool
}

// FS is a mounted file system. Its methods are safe for concurrent use.
type FS struct {
	dir    string
	srv    *fuse.Server
	raw    *rawFS
	served chan struct{}
	log    *log.Logger

	unmount sync.Once
	err     error
}

// Mount mounts the file system on dir (which must be an existing
// directory) and serves it until Unmount or an external umount. It needs
// root: it mounts without fusermount, and reads lists with BPF.
//
// A directory that already has a FUSE mount is refused with ErrMounted:
// the kernel would stack a second mount on the first.
func Mount(dir string, opts *Options) (f *FS, err error) {
	if opts == nil {
		opts = &Options{}
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return nil, fmt.Errorf("/dev/fuse: %w (load the fuse module: modprobe fuse): %w", err, ErrNoFUSE)
	}
	if opts.Injector == nil && !helper.Registered() {
		// Checked before anything is mounted: the default injector would
		// start this program with an opener's credentials.
		return nil, fmt.Errorf("mount %s: writes would run this program as their helper: %w", dir, ErrNoHelper)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	mp, err := filepath.EvalSymlinks(abs)
	if errors.Is(err, syscall.ENOTCONN) {
		return nil, fmt.Errorf("%s is a FUSE mount whose server has gone (transport endpoint is not connected): run umount %s first: %w", abs, abs, ErrMounted)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("mount point %s does not exist: create the directory first (mkdir -p %s): %w", abs, abs, err)
	}
	if err != nil {
		return nil, fmt.Errorf("mount point: %w", err)
	}
	if st, err := os.Stat(mp); err != nil {
		return nil, fmt.Errorf("mount point: %w", err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("mount point %s is not a directory", mp)
	}

	// The lock on the directory underneath guards the time between the
	// check below and the mount: a second Mount that opens the directory
	// before the first has mounted finds it locked, one that opens it after
	// finds the mount in mountinfo.
	lock, err := os.Open(mp)
	if err != nil {
		return nil, fmt.Errorf("mount point: %w", err)
	}
	defer func() {
		if err != nil {
			lock.Close()
		}
	}()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		if err == unix.EWOULDBLOCK {
			return nil, fmt.Errorf("another semundo mount is starting on %s: %w", mp, ErrMounted)
		}
		return nil, fmt.Errorf("lock %s: %w", mp, err)
	}
	mi, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	if fstype, source, ok := mountAt(mi, mp); ok && (fstype == "fuse" || len(fstype) > 5 && fstype[:5] == "fuse.") {
		return nil, fmt.Errorf("%s already has a FUSE mount (%s from %q): stop the program serving it, or run umount %s: %w",
			mp, fstype, source, mp, ErrMounted)
	}

	r := opts.Reader
	ownReader := r == nil
	if ownReader {
		if r, err = reader.Open(nil); err != nil {
			return nil, err
		}
		defer func() {
			if err != nil {
				r.Close()
			}
		}()
	}
	lg := opts.Log
	if lg == nil {
		lg = log.New(io.Discard, "", 0)
	}
	inj := opts.Injector
	if inj == nil {
		inj = &ExecInjector{}
	}
	timeout := opts.InjectTimeout
	if timeout <= 0 {
		timeout = DefaultInjectTimeout
	}
	raw := newRawFS(&scanner{r: r}, inj, procfs.NewDefaultFS(), lg, timeout)

	srv, err := fuse.NewServer(raw, mp, &fuse.MountOptions{
		AllowOther: opts.AllowOther,
		Name:       "semundo",
		FsName:     "semundo",
		// Mount with mount(2), as root may, so that no fusermount
		// binary (Debian's fuse3) is needed.
		DirectMountStrict:  true,
		DisableXAttrs:      true,
		DisableReadDirPlus: true,
		Debug:              opts.Debug,
		Logger:             lg,
	})
	if err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
			return nil, fmt.Errorf("mount %s: mounting needs root (CAP_SYS_ADMIN): %w", mp, err)
		}
		return nil, fmt.Errorf("mount %s: %w", mp, err)
	}
	f = &FS{dir: mp, srv: srv, raw: raw, served: make(chan struct{}), log: lg}
	go func() {
		srv.Serve()
		if ownReader {
			r.Close()
		}
		lock.Close()
		close(f.served)
	}()
	if err := srv.WaitMount(); err != nil {
		f.Unmount()
		return nil, fmt.Errorf("mount %s: %w", mp, err)
	}
	return f, nil
}

// Dir returns the mount point (absolute, symlinks resolved).
func (f *FS) Dir() string { return f.dir }

// Done is closed when serving has ended: after Unmount, or after an
// external umount.
func (f *FS) Done() <-chan struct{} { return f.served }

// Wait blocks until serving ends.
func (f *FS) Wait() { <-f.served }

// busyGrace is how long Unmount waits, after detaching a busy mount, for
// its last users to let go.
const busyGrace = 2 * time.Second

// Unmount unmounts the file system and waits until serving has ended. When
// the mount is in use (a process has its cwd or an open file inside), it
// retries for a moment, then detaches it lazily (MNT_DETACH) and returns an
// error wrapping ErrBusy: the directory is free at once, and serving ends
// when the last user lets go. Calling Unmount again returns the same result.
func (f *FS) Unmount() error {
	f.unmount.Do(func() { f.err = f.doUnmount() })
	return f.err
}

func (f *FS) doUnmount() error {
	select {
	case <-f.served:
		return nil // unmounted from outside
	default:
	}
	err := f.srv.Unmount() // retries EBUSY for about 0.3 s
	if err == nil {
		<-f.served
		return nil
	}
	if !errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("unmount %s: %w", f.dir, err)
	}
	if err := unix.Unmount(f.dir, unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount %s: busy, and a lazy unmount failed too: %w", f.dir, err)
	}
	select {
	case <-f.served:
		return fmt.Errorf("%s was busy: detached lazily, and its last users have let go since: %w", f.dir, ErrBusy)
	case <-time.After(busyGrace):
	}
	return fmt.Errorf("%s was busy (a process has its working directory or an open file inside): detached lazily; they keep the file system until they let go or this process exits: %w", f.dir, ErrBusy)
}

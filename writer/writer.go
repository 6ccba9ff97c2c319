package writer

import (
	"errors"
	"fmt"
	"io/fs"
	"runtime"
	"slices"

	"github.com/semundo/semundo/inject"
	"github.com/semundo/semundo/plan"
	"github.com/semundo/semundo/sysvsem"
	"github.com/semundo/semundo/undo"
	"golang.org/x/sys/unix"
)

// Errors a write returns, to be tested with errors.Is. Errors from package
// inject (no such process, already traced, permission) are wrapped as they
// are.
var (
	// ErrNoSet: a listed semid names no set in the target's IPC namespace.
	ErrNoSet = errors.New("no such set")
	// ErrCount: the number of values differs from the set's nsems.
	ErrCount = errors.New("wrong number of values")
	// ErrPermission: the target may not alter the set.
	ErrPermission = fs.ErrPermission
	// ErrBusy: other processes kept changing the values the plan depends
	// on, through every retry.
	ErrBusy = errors.New("semaphore values kept changing")
	// ErrMismatch: after the write the adjustments are not what was asked
	// (another thread of the target changed them meanwhile).
	ErrMismatch = errors.New("adjustments differ after the write")
	// ErrExited: the target exited right after the write; its exit applied
	// the list (the write itself succeeded).
	ErrExited = errors.New("process exited")
)

// Options tune a write. The zero value is right for normal use.
type Options struct {
	// Retries bounds how often a set's calls are planned again when
	// another process moved a value between plan and call (default 8).
	Retries int
	// Stats, when set, receives each injection's figures (the target's
	// stop time among them) after it detached. Writes to several
	// processes may run in parallel (InjectAll, Parallel): it must be
	// safe to call from several goroutines.
	Stats func(pid int, st inject.Stats)
	// Injector, when set, performs the injections of WriteProcess and WriteProcesses
	// instead of Inject in this process: semundo's command line runs them
	// in a child process of its own session, which finishes (and puts the
	// targets back) even when the command is killed mid-write.
	Injector func(jobs []Job) error
	// Callers are processes, besides the calling one, whose undo list a
	// write must never touch: a helper that writes for another process
	// names it (see CheckTarget).
	Callers []int
	// Parallel is how many targets InjectAll writes at once. 0 means half
	// of GOMAXPROCS, at least 1: every stop of a session needs a CPU for
	// the tracer and one for the target, and on 2 CPUs two sessions at
	// once made each target's stop about three times as long for a wall
	// time a tenth shorter (docs/benchmarks.md).
	Parallel int
}

func (o *Options) parallel() int {
	if o == nil || o.Parallel <= 0 {
		return max(1, runtime.GOMAXPROCS(0)/2)
	}
	return o.Parallel
}

func (o *Options) callers() []int {
	if o == nil {
		return nil
	}
	return o.Callers
}

func (o *Options) retries() int {
	if o == nil || o.Retries <= 0 {
		return 8
	}
	return o.Retries
}

// executor runs the semaphore calls of a write, in the calling process or
// in the target.
type executor interface {
	// pid is the process whose list is written.
	pid() int
	stat(semid int32) (sysvsem.SemidDS, error)
	getAll(semid int32, nsems int) ([]uint16, error)
	semop(semid int32, ops []plan.Op) error
	semopm() (int, error)
	// creds are the credentials the kernel checks alter permission with.
	creds() (*Creds, error)
}

// setState is one listed set during a write.
type setState struct {
	semid int32
	nsems int
	orig  []int16 // adjustments before the write
	now   []int16 // adjustments as far as the write got
	want  []int16
	// exists: the target had an entry for the set before the write. An
	// entry of zeros is real state (the reader shows it), so a listed set
	// without one gets one even when no adjustment changes.
	exists bool
}

// apply validates want against the target and writes it. cur is the
// target's list before the write.
func apply(x executor, cur, want undo.List, opts *Options) error {
	sets, err := validate(x, cur, want)
	if err != nil {
		return err
	}
	return write(x, sets, opts)
}

// write writes the validated sets, putting back what it changed when one
// fails.
func write(x executor, sets []*setState, opts *Options) error {
	// SEMOPM is read only when a call turns out too long (E2BIG): most
	// writes fit the default and save the target a stop.
	semopm := defaultSemopm
	for i, s := range sets {
		var err error
		if !s.exists && slices.Equal(s.orig, s.want) {
			err = touch(x, s, opts.retries())
		} else {
			err = writeSet(x, s, s.want, &semopm, opts.retries())
		}
		if err != nil {
			// Put back what was changed, so a failed write leaves the
			// list as it was.
			var undoErrs []error
			for _, done := range sets[:i+1] {
				if !slices.Equal(done.now, done.orig) {
					if uerr := writeSet(x, done, done.orig, &semopm, opts.retries()); uerr != nil {
						undoErrs = append(undoErrs, fmt.Errorf("set %d: %w", done.semid, uerr))
					}
				}
			}
			if len(undoErrs) > 0 {
				return fmt.Errorf("%w; undoing the partial write failed too: %w", err, errors.Join(undoErrs...))
			}
			return err
		}
	}
	return nil
}

// validate checks every listed set before anything changes.
func validate(x executor, cur, want undo.List) ([]*setState, error) {
	creds, err := x.creds()
	if err != nil {
		return nil, err
	}
	want = want.Sorted()
	var sets []*setState
	for i, e := range want {
		if i > 0 && want[i-1].Semid == e.Semid {
			return nil, fmt.Errorf("set %d is listed twice", e.Semid)
		}
		ds, err := x.stat(e.Semid)
		switch {
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EIDRM):
			return nil, fmt.Errorf("set %d does not exist in the IPC namespace of pid %d: %w", e.Semid, x.pid(), ErrNoSet)
		case errors.Is(err, unix.EACCES):
			return nil, targetErrorf(x.pid(), "pid %d may not read set %d: %w", x.pid(), e.Semid, ErrPermission)
		case err != nil:
			return nil, fmt.Errorf("set %d: %w", e.Semid, err)
		}
		if len(e.Adj) != ds.Nsems {
			return nil, fmt.Errorf("set %d has %s, %s given: %w", e.Semid, count(ds.Nsems, "semaphore"), count(len(e.Adj), "value"), ErrCount)
		}
		if !creds.mayAlter(ds.Perm) {
			return nil, targetErrorf(x.pid(), "pid %d (uid %d) may not alter set %d (owner %d, mode %#o): %w", x.pid(), creds.EUID, e.Semid, ds.Perm.UID, ds.Perm.Mode&0o777, ErrPermission)
		}
		s := &setState{semid: e.Semid, nsems: ds.Nsems, want: e.Adj, orig: make([]int16, ds.Nsems)}
		if c, ok := cur.Lookup(e.Semid); ok {
			if len(c.Adj) != ds.Nsems {
				return nil, fmt.Errorf("set %d changed size while it was read (%d, now %s): retry", e.Semid, len(c.Adj), count(ds.Nsems, "semaphore"))
			}
			copy(s.orig, c.Adj)
			s.exists = true
		}
		s.now = slices.Clone(s.orig)
		sets = append(sets, s)
	}
	return sets, nil
}

// count says "1 semaphore", "2 semaphores".
func count(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// defaultSemopm is the kernel's default SEMOPM.
const defaultSemopm = 500

// writeSet moves s's adjustments from s.now to target. The first plan
// assumes every value is 0, which holds for most sets (free locks) and
// saves reading them; a call that fails for its values (EAGAIN, ERANGE)
// changes nothing, and the write then reads the values and plans again, as
// it does when another process moves a value between plan and call.
func writeSet(x executor, s *setState, target []int16, semopm *int, retries int) error {
	speculate, semopmRead := true, false
	for try := 0; ; try++ {
		if slices.Equal(s.now, target) {
			return nil
		}
		ivals := make([]int, s.nsems)
		if !speculate {
			vals, err := x.getAll(s.semid, s.nsems)
			if err != nil {
				return setErr(x, s.semid, err)
			}
			for i, v := range vals {
				ivals[i] = int(v)
			}
		}
		calls, err := plan.Adjust(ivals, s.now, target, *semopm)
		if err != nil {
			return fmt.Errorf("set %d: %w", s.semid, err)
		}
		again := false
		for _, call := range calls {
			err := x.semop(s.semid, call)
			if errors.Is(err, unix.E2BIG) && !semopmRead {
				if *semopm, err = x.semopm(); err != nil {
					return err
				}
				semopmRead, again = true, true
				break
			}
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ERANGE) {
				again = true
				break
			}
			if err != nil {
				return setErr(x, s.semid, err)
			}
			for _, op := range call {
				if op.Flg&sysvsem.Undo != 0 {
					s.now[op.Num] -= op.Op
				}
			}
		}
		switch {
		case !again:
		case speculate:
			speculate = false
		case try >= retries:
			return fmt.Errorf("set %d: values changed by other processes during %d tries: %w", s.semid, retries+1, ErrBusy)
		}
	}
}

// touch gives the target an all-zero entry for s, which it lacks, without
// changing a value (plan.Touch). The first call assumes the value is
// below SEMVMX, true but for a set at its ceiling; ERANGE (or EAGAIN, when
// another process moved the value) makes it read the value and try again.
func touch(x executor, s *setState, retries int) error {
	value := 0
	for try := 0; ; try++ {
		call, err := plan.Touch(0, value)
		if err != nil {
			return fmt.Errorf("set %d: %w", s.semid, err)
		}
		err = x.semop(s.semid, call)
		switch {
		case err == nil:
			return nil
		case !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.ERANGE):
			return setErr(x, s.semid, err)
		case try >= retries:
			return fmt.Errorf("set %d: values changed by other processes during %d tries: %w", s.semid, retries+1, ErrBusy)
		}
		vals, err := x.getAll(s.semid, s.nsems)
		if err != nil {
			return setErr(x, s.semid, err)
		}
		value = int(vals[0])
	}
}

func setErr(x executor, semid int32, err error) error {
	switch {
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EIDRM):
		return fmt.Errorf("set %d was removed during the write to pid %d: %w", semid, x.pid(), ErrNoSet)
	case errors.Is(err, unix.EACCES):
		return targetErrorf(x.pid(), "pid %d may not alter set %d: %w", x.pid(), semid, ErrPermission)
	}
	return fmt.Errorf("set %d: %w", semid, err)
}

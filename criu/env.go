package criu

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/semundo/semundo/internal/criuaction"
	"github.com/semundo/semundo/internal/procfs"
	"github.com/semundo/semundo/reader"
	"github.com/semundo/semundo/writer"
)

// The environment variables CRIU sets for an action script.
const (
	// EnvAction names the step CRIU is at, e.g. "post-dump".
	EnvAction = criuaction.EnvAction
	// EnvImageDir is CRIU's images directory, as a /proc/CRIUPID/fd/N path.
	EnvImageDir = criuaction.EnvImageDir
	// EnvInitPID is the tree's root, as a pid in CRIU's (the host's) PID
	// namespace; at restore it is the restored root's new pid.
	EnvInitPID = criuaction.EnvInitPID
)

// The environment variables semundo adds, since CRIU passes no arguments.
const (
	// EnvAllowRunning, set to 1 (or true, yes), lets post-resume write the
	// lists into tasks that already run (a restore without
	// --leave-stopped), adding the saved adjustments to whatever the tasks
	// have built since.
	EnvAllowRunning = criuaction.EnvAllowRunning
	// EnvStateDir overrides DefaultStateDir.
	EnvStateDir = criuaction.EnvStateDir
)

// The actions the companion acts on; it ignores every other one.
const (
	ActionPreDump    = criuaction.ActionPreDump
	ActionPostDump   = criuaction.ActionPostDump
	ActionPreRestore = criuaction.ActionPreRestore
	ActionPostResume = criuaction.ActionPostResume
)

// Files the companion writes into CRIU's images directory.
const (
	// ImageFile holds the tree's undo lists and the sets they refer to, in
	// semundo's image format (docs/image.md).
	ImageFile = "semundo-undo.json"
	// TreeFile records every process of the dumped tree: its pid at dump,
	// its pid in the root's PID namespace (the pid CRIU restores) and
	// whether it was stopped (docs/criu.md).
	TreeFile = "semundo-tree.json"
)

// DefaultStateDir is where pre-restore hands the files over to
// post-resume: CRIU closes the images directory before post-resume.
const DefaultStateDir = criuaction.DefaultStateDir

// Errors of the companion, to be tested with errors.Is.
var (
	// ErrEnv: CRIU's environment lacks a variable the action needs, or
	// holds a malformed one.
	ErrEnv = criuaction.ErrEnv
	// ErrShared: a list of the tree is shared with a process outside it.
	ErrShared = errors.New("undo list shared with a process outside the dumped tree")
	// ErrSharedInTree: two processes of the tree share one list (clone
	// with CLONE_SYSVSEM), which CRIU restores as two separate processes.
	ErrSharedInTree = errors.New("undo list shared by two processes of the tree")
	// ErrNotStopped: the restored tasks already run, so their lists can no
	// longer be restored as they were (restore without --leave-stopped).
	ErrNotStopped = errors.New("restored tasks are not stopped")
	// ErrNoTask: a task of the dump is missing from the restored tree.
	ErrNoTask = errors.New("task missing from the restored tree")
	// ErrCorrupt: a file the companion wrote is missing or malformed.
	ErrCorrupt = errors.New("semundo CRIU file missing or malformed")
)

// Env is what CRIU tells an action script, plus semundo's own settings.
type Env = criuaction.Env

// ParseEnv reads the environment through lookup (os.LookupEnv). Only
// values that are present and malformed are errors: which variables an
// action needs is checked by Run.
func ParseEnv(lookup func(string) (string, bool)) (Env, error) { return criuaction.ParseEnv(lookup) }

// Options tune Run. The zero value works.
type Options struct {
	// Version is recorded in the images written at post-dump.
	Version string
	// Log receives a one-line note of what post-dump and post-resume did
	// (CRIU puts an action script's output in its log); nil for none.
	Log io.Writer
	// OpenReader opens the BPF reader; nil means reader.Open(nil). Only
	// post-dump and a post-resume with lists to write open it.
	OpenReader func() (*reader.Reader, error)
	// AllowRunning lets post-resume write into tasks that already run (a
	// restore without --leave-stopped), adding the saved adjustments to
	// what the tasks built since. Run also allows it when Env.AllowRunning.
	AllowRunning bool
	// Injector, when set, performs the injections (see
	// writer.Options.Injector); nil injects from this process.
	Injector func(jobs []writer.Job) error
	// Proc is where the process tree and its tasks' states are read; the
	// zero value reads /proc.
	Proc procfs.FS
	// Helper, when set, returns the command that runs Serve (the running
	// program with HelperArg): Run then starts it at pre-dump and
	// pre-restore. Nil: no helper, each action does its own work.
	Helper func() *exec.Cmd
	// keepReader: the reader OpenReader returns is not closed after use
	// (the helper's: closing it takes a while, and the helper exits
	// anyway once it has answered).
	keepReader bool
	// handoff: the files of the handoff directory, read by the helper
	// while CRIU restored the tree (about a millisecond less while the
	// tree is held stopped); nil, or another directory's, reads them.
	handoff *handedOver
	// early: post-dump's capture, taken by the helper when CRIU closed
	// pstree.img (see Serve); Dump uses it if it still holds.
	early *dumpCapture
}

// earlyDump returns the helper's early capture of root's tree in dir.
func (o *Options) earlyDump(root int, dir string) *dumpCapture {
	if o == nil || o.early == nil || o.early.root != root || o.early.dir != dir {
		return nil
	}
	return o.early
}

func (o *Options) closeReader(r interface{ Close() error }) {
	if o == nil || !o.keepReader {
		r.Close()
	}
}

// handedOver returns the files of handoff directory dir when the helper
// read them already.
func (o *Options) handedOver(dir string) *handedOver {
	if o == nil || o.handoff == nil || o.handoff.dir != dir {
		return nil
	}
	return o.handoff
}

func (o *Options) proc() procfs.FS {
	if o == nil {
		return procfs.FS{}
	}
	return o.Proc
}

func (o *Options) injector() func([]writer.Job) error {
	if o == nil {
		return nil
	}
	return o.Injector
}

func (o *Options) allowRunning() bool { return o != nil && o.AllowRunning }

func (o *Options) open() (*reader.Reader, error) {
	if o != nil && o.OpenReader != nil {
		return o.OpenReader()
	}
	return reader.Open(nil)
}

func (o *Options) logf(format string, a ...any) {
	if o != nil && o.Log != nil {
		fmt.Fprintf(o.Log, "semundo: "+format+"\n", a...)
	}
}

func (o *Options) version() string {
	if o == nil || o.Version == "" {
		return "unknown"
	}
	return o.Version
}

// Run acts on env.Action: post-dump saves the tree's lists (Dump),
// pre-restore hands them over (PrepareRestore), post-resume writes them
// back and resumes the tasks (Resume). Every other action returns nil at
// once, and so does each of these when the images hold no semundo files
// (a dump taken without the companion). opts may be nil.
//
// With opts.Helper, pre-dump and pre-restore start a helper that loads
// the reader while CRIU works, and post-dump and post-resume hand it their
// work, which is then all that the frozen or stopped tree waits for; when
// the helper is missing or not ready, they do the work themselves and
// say so in opts.Log. Serve is the helper.
func Run(env Env, opts *Options) error {
	helper := opts != nil && opts.Helper != nil && !env.NoHelper
	switch env.Action {
	case ActionPreDump:
		if !helper || env.ImageDir == "" {
			return nil
		}
		hd, err := handoffDir(env)
		if err != nil {
			return err
		}
		state := filepath.Dir(hd)
		if err := os.MkdirAll(state, 0o700); err != nil {
			return fmt.Errorf("create semundo's state directory: %w", err)
		}
		removeStale(state)
		if err := os.RemoveAll(hd); err != nil {
			return err
		}
		if err := startHelper(env, hd, opts); err != nil {
			opts.logf("pre-dump: no helper (%v): post-dump will do all the work", err)
		}
		return nil
	case ActionPostDump, ActionPostResume:
		// The helper's part is package criuaction's, which
		// semundo-criu-action runs too.
		if done, err := criuaction.ThroughHelper(env, opts != nil && opts.Helper != nil, opts.logf); done {
			return err
		}
		return work(env, opts)
	case ActionPreRestore:
		if err := needEnv(env, false); err != nil {
			return err
		}
		hd, err := handoffDir(env)
		if err != nil {
			return err
		}
		found, err := PrepareRestore(env.ImageDir, hd)
		if err != nil || !found || !helper {
			return err
		}
		if err := startHelper(env, hd, opts); err != nil {
			opts.logf("pre-restore: no helper (%v): post-resume will do all the work", err)
		}
		return nil
	}
	return nil
}

// work does post-dump's or post-resume's work in this process.
func work(env Env, opts *Options) error {
	switch env.Action {
	case ActionPostDump:
		if err := needEnv(env, true); err != nil {
			return err
		}
		r, err := opts.open()
		if err != nil {
			return err
		}
		defer opts.closeReader(r)
		res, err := Dump(r, env.InitPID, env.ImageDir, opts)
		if err != nil {
			return err
		}
		var early string
		if res.Early {
			early = earlyNote
		}
		opts.logf("post-dump: saved %d undo lists (%d entries) of the %d processes of the tree of pid %d in %s (%s)%s",
			res.Lists, res.Entries, res.Tasks, env.InitPID, ImageFile, treeSource(res.FromPstree), early)
		return nil
	case ActionPostResume:
		hd, err := handoffDir(env)
		if err != nil {
			return err
		}
		if env.InitPID == 0 {
			os.RemoveAll(hd)
			return fmt.Errorf("%s is not set at post-resume: %w", EnvInitPID, ErrEnv)
		}
		var o Options
		if opts != nil {
			o = *opts
		}
		o.AllowRunning = o.AllowRunning || env.AllowRunning
		res, err := Resume(env.InitPID, hd, &o)
		if err != nil {
			return err
		}
		mode := "into the stopped tasks"
		if res.Added {
			mode = "added to the running tasks (" + EnvAllowRunning + ")"
		}
		opts.logf("post-resume: wrote %d undo lists %s, continued %d of the %d tasks (%s)", res.Lists, mode, res.Continued, res.Tasks, treeSource(res.FromPstree))
		return nil
	}
	return fmt.Errorf("no work at action %q", env.Action)
}

// earlyNote ends post-dump's log line when the lists were read early.
const earlyNote = ", read as CRIU wrote pstree.img and found unchanged at post-dump"

// treeSource says, in a log line, where the tree's processes were found.
func treeSource(fromPstree bool) string {
	if fromPstree {
		return "the tree from CRIU's pstree.img"
	}
	return "the tree walked in /proc"
}

// needEnv checks the variables post-dump (root too) and pre-restore need.
func needEnv(env Env, root bool) error { return criuaction.NeedEnv(env, root) }

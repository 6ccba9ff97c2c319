// Command semundo reads and writes the System V semaphore undo lists
// (semadj) of Linux processes: the adjustments the kernel applies when a
// process that used SEM_UNDO exits.
//
// Usage:
//
//	semundo show PID...            the seed's /proc/<pid>/semundo format
//	semundo ps [--json] [--all]    every process that holds adjustments
//	semundo who SEMID [--ipcns N]  who will adjust a set on exit, and by how much
//	semundo set PID [FILE|-]       write a list into another process (ptrace)
//	semundo exec --undo FILE -- CMD   take a list, then execve CMD
//
// Exit status: 0 success, 1 error, 2 bad usage, 3 missing privilege
// (root, capabilities, kernel lockdown), 4 the kernel lacks a feature.
package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/semundo/semundo/inject"
	"github.com/semundo/semundo/internal/pidarg"
	"github.com/semundo/semundo/reader"
)

// Exit codes, documented in the README.
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitPermission  = 3
	exitUnsupported = 4
)

// usageError marks a command line that cannot be run.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// parsePID reads a pid argument by the mount's rules (package pidarg): a
// text that is no pid is bad usage, whatever process might exist.
func parsePID(s string) (int, error) {
	pid, err := pidarg.Parse(s)
	if err != nil {
		return 0, usageError{err.Error()}
	}
	return pid, nil
}

const usage = `usage: semundo COMMAND [ARGS]

Commands:
  show PID...              print each process's undo list in the seed's format:
                           "SEMID ADJ0 ADJ1 ..." per set, sorted by SEMID
  ps [--json] [--all]      list every process holding undo adjustments
  who SEMID [--ipcns INODE]
                           the processes that will adjust set SEMID when they exit
  set PID [FILE|-]         make PID's adjustments for the listed sets equal FILE's
                           ("add or update"; by ptrace injection into PID)
  exec --undo FILE -- CMD [ARGS...]
                           take FILE's adjustments, then execve CMD, which keeps them
  checkpoint [--tree] [--cgroup DIR] [--force] [--sempids] [-o FILE] PID...
                           save the sets of the processes' IPC namespace and their
                           undo lists (processes frozen meanwhile) as a JSON image
  restore FILE|- [--sets] [--undo] [--pid OLD=NEW]...
                           recreate the sets with their ids in this IPC namespace,
                           then write the lists into the live processes
  mount [--allow-other] DIR
                           a FUSE file system with DIR/PID/semundo for every
                           process: cat reads the list, echo "SEMID V..." writes it
  criu-script              CRIU's action script (criu --action-script): keeps undo
                           lists across criu dump and criu restore (docs/criu.md)
  help                     this text

Exit status: 0 ok, 1 error, 2 usage, 3 missing privilege, 4 kernel lacks a feature.
`

type command func(args []string, stdout io.Writer) error

var commands = map[string]command{
	"show":        runShow,
	"ps":          runPs,
	"who":         runWho,
	"mount":       runMount,
	"set":         runSet,
	"exec":        runExec,
	"checkpoint":  runCheckpoint,
	"restore":     runRestore,
	"criu-script": runCriuScript,
	// Hidden: the file system's write path (see set.go).
	"__inject": runInjectHelper,
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "semundo: unknown command %q (see semundo help)\n", args[0])
		return exitUsage
	}
	err := cmd(args[1:], stdout)
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "semundo %s: %v\n", args[0], err)
	return exitCode(err)
}

// exitCode is the one mapping from errors to exit statuses. Refusals by the
// kernel are fs.ErrPermission in every package, missing features
// errors.ErrUnsupported, so no package's sentinels are named here.
func exitCode(err error) int {
	var ue usageError
	var ce codeError
	var che *childError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ce):
		return ce.code
	case errors.As(err, &che):
		return che.code
	case errors.As(err, &ue):
		return exitUsage
	case errors.Is(err, inject.ErrAlreadyTraced):
		// ptrace answers EPERM, but no privilege would help: the
		// message names the tracer to stop.
		return exitError
	case errors.Is(err, fs.ErrPermission):
		return exitPermission
	case errors.Is(err, errors.ErrUnsupported):
		return exitUnsupported
	}
	return exitError
}

// openReader loads the BPF reader, first checking the privilege it needs so
// that an unprivileged user gets the plain reason.
func openReader() (*reader.Reader, error) {
	if os.Geteuid() != 0 {
		r, err := reader.Open(nil)
		if err != nil {
			if errors.Is(err, reader.ErrPermission) {
				return nil, fmt.Errorf("reading undo lists needs root (or CAP_BPF and CAP_PERFMON): run it with sudo: %w", reader.ErrPermission)
			}
			return nil, err
		}
		return r, nil
	}
	return reader.Open(nil)
}

// scan reads every undo list once.
func scan() (*reader.Snapshot, error) {
	r, err := openReader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return r.Scan()
}

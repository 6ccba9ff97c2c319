// Command semundo shows and writes the System V semaphore undo lists
// (semadj) of Linux processes: the adjustments the kernel applies when a
// process that used SEM_UNDO exits.
//
// Usage:
//
//	semundo show PID...              the list of each process, one line per set
//	semundo ps [--json] [--all]      every process that holds adjustments
//	semundo who SEMID [--ipcns N]    who will adjust a set on exit, and who waits on it
//	semundo waits [--json]           every task blocked in semop
//	semundo deadlock [--json|--dot]  cycles of waiters and SEM_UNDO holders
//	semundo metrics [--listen ADDR]  Prometheus metrics of waiters and holders
//	semundo set PID [FILE|-]         write a list into another process (ptrace)
//	semundo exec --undo FILE -- CMD  take a list, then execve CMD
//	semundo checkpoint PID...        save the namespace's sets and the lists
//	semundo restore FILE|-           recreate the sets, write the lists back
//	semundo mount DIR                the file interface, DIR/PID/semundo
//	semundo criu-script              CRIU's action script
//	semundo completion bash          a bash completion script
//
// Every command takes -h or --help. The manual is man/semundo.8.
//
// Exit status: 0 success, 1 error, 2 bad usage, 3 missing privilege
// (root, capabilities, kernel lockdown), 4 the kernel lacks a feature.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/semundo/semundo/inject"
	"github.com/semundo/semundo/internal/helper"
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

// commands are semundo's commands, in the order help lists them.
var commands []*spec

func init() {
	commands = []*spec{showCmd, psCmd, whoCmd, waitsCmd, deadlockCmd, metricsCmd, setCmd, execCmd, checkpointCmd,
		restoreCmd, mountCmd, criuScriptCmd, completionCmd, criuHelperCmd}
}

// lookup returns the command named name.
func lookup(name string) *spec {
	for _, s := range commands {
		if s.name == name {
			return s
		}
	}
	return nil
}

// usage is the top-level help: every visible command's synopsis and what
// it does.
func usage(w io.Writer) {
	fmt.Fprint(w, `usage: semundo COMMAND [ARGS]

semundo shows and writes the System V semaphore undo lists (semadj) of
processes: the adjustments the kernel applies to semaphores when a process
that used semop(2) with SEM_UNDO exits. Lists are printed in the format of
the 2008 /proc/<pid>/semundo proposal: a line per set, "SEMID ADJ0 ADJ1 ...".

Commands:
`)
	for _, s := range commands {
		if s.hidden {
			continue
		}
		fs := flag.NewFlagSet(s.name, flag.ContinueOnError)
		s.define(fs, &cli{stdout: io.Discard, stderr: io.Discard})
		syn := strings.TrimPrefix(s.synopsis(fs), "semundo ")
		fmt.Fprintf(w, "  %s\n      %s\n", syn, strings.ReplaceAll(s.about, "\n", "\n      "))
	}
	fmt.Fprint(w, `  help, --help, -h
      this text; semundo COMMAND --help tells more of one command
  --version
      semundo's version

Exit status: 0 ok, 1 error, 2 usage, 3 missing privilege, 4 kernel lacks a feature.
The manual: man semundo (man ./man/semundo.8 in the source tree).
`)
}

func main() {
	// `semundo __inject`, the injection helper that set, restore and the
	// mount's writes run as a child, is not a command: it exits here.
	helper.Init()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	switch args[0] {
	case "help", "-h", "--help", "-help":
		if len(args) > 1 {
			if s := lookup(args[1]); s != nil && !s.hidden {
				return run([]string{args[1], "--help"}, stdout, stderr)
			}
		}
		usage(stdout)
		return exitOK
	case "--version", "-version", "version":
		fmt.Fprintln(stdout, version)
		return exitOK
	}
	s := lookup(args[0])
	if s == nil {
		fmt.Fprintf(stderr, "semundo: unknown command %q (see semundo help)\n", args[0])
		return exitUsage
	}
	err := s.run(&cli{stdout: stdout, stderr: stderr}, args[1:])
	if errors.Is(err, errHelpShown) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "semundo %s: %v\n", args[0], err)
	}
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
func openReader() (*reader.Reader, error) { return openReaderWith(reader.Options{}) }

// openHolderReader loads a reader without waiters, for the commands that
// print or write only undo lists (and checkpoint, restore, the mount and
// the CRIU companion): it spares their probes, the kernel BTF they need,
// the verification of their code and their part of every scan.
func openHolderReader() (*reader.Reader, error) {
	return openReaderWith(reader.Options{NoWaiters: true})
}

func openReaderWith(opts reader.Options) (*reader.Reader, error) {
	// The verifier's whole log is for whoever debugs a kernel that
	// rejects the iterator; the error carries its last lines anyway.
	if os.Getenv("SEMUNDO_DEBUG_VERIFIER") != "" {
		opts.VerifierLog = os.Stderr
	}
	opts.Phases = phaseLog
	if os.Geteuid() != 0 {
		r, err := reader.Open(&opts)
		if err != nil {
			if errors.Is(err, reader.ErrPermission) {
				return nil, fmt.Errorf("reading undo lists needs root (or CAP_BPF and CAP_PERFMON): run it with sudo: %w", reader.ErrPermission)
			}
			return nil, err
		}
		return r, nil
	}
	return reader.Open(&opts)
}

// scan reads every undo list once, and the blocked semop callers.
func scan() (*reader.Snapshot, error) { return scanWith(openReader) }

// scanHolders reads every undo list once, without waiters.
func scanHolders() (*reader.Snapshot, error) { return scanWith(openHolderReader) }

func scanWith(open func() (*reader.Reader, error)) (*reader.Snapshot, error) {
	phase("init")
	r, err := open()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	phase("open")
	snap, err := r.Scan()
	phase("scan")
	return snap, err
}

// Command semundo-criu-action runs CRIU's post-dump and post-resume
// actions for semundo, the two during which CRIU holds the tree frozen or
// stopped: it hands their work to the helper that `semundo criu-script`
// started at pre-dump or pre-restore, and it starts in about 60% of the
// time semundo itself takes, whose every package initialiser runs in
// every process. That time is the container's downtime.
//
// When no helper takes the work (none was started, it is gone or not
// ready, it is of another release), it says why and executes
// `semundo criu-script`, which does the work itself; so does any other
// action. docs/criu.md has the wrapper script that runs it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/semundo/semundo/internal/criuaction"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, syscall.Exec)) }

// exitUsage is semundo's status for a command line that cannot be run.
const exitUsage = 2

// run is the command; execve replaces the process with semundo (it returns
// only on failure).
func run(args []string, stdout, stderr io.Writer, execve func(string, []string, []string) error) int {
	fs := flag.NewFlagSet("semundo-criu-action", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: semundo-criu-action [--semundo PATH] [--allow-running] [--state-dir DIR]\n\n"+
			"CRIU's post-dump and post-resume actions for semundo: run by the wrapper script\n"+
			"of docs/criu.md, with CRIU's environment. They go to the helper semundo started\n"+
			"at pre-dump or pre-restore, or else to semundo criu-script.\n\n")
		fs.PrintDefaults()
	}
	semundo := fs.String("semundo", "", "the semundo `PATH` to run when the helper does not take the work (default: semundo beside this program)")
	allow := fs.Bool("allow-running", false, "as semundo criu-script's --allow-running")
	state := fs.String("state-dir", "", "as semundo criu-script's --state-dir `DIR`")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "semundo-criu-action: takes no arguments (CRIU passes everything in the environment), got %q\n", fs.Arg(0))
		return exitUsage
	}
	if _, ok := os.LookupEnv(criuaction.EnvAction); !ok {
		fmt.Fprintf(stderr, "semundo-criu-action: this is a CRIU action script, run by criu with %s set (docs/criu.md)\n", criuaction.EnvAction)
		return exitUsage
	}
	env, err := criuaction.ParseEnv(os.LookupEnv)
	if err != nil {
		fmt.Fprintf(stderr, "semundo-criu-action: %v\n", err)
		return 1
	}
	env.AllowRunning = env.AllowRunning || *allow
	if *state != "" {
		env.StateDir = *state
	}
	logf := func(format string, a ...any) { fmt.Fprintf(stdout, "semundo: "+format+"\n", a...) }
	done, err := criuaction.ThroughHelper(env, true, logf)
	if done {
		if err != nil {
			fmt.Fprintf(stderr, "semundo-criu-action: %v\n", err)
			return 1
		}
		return 0
	}
	// semundo does the rest: at post-dump and post-resume without trying
	// the helper again (this action already waited for it, and said why
	// it did not take the work); any other action as it is.
	path := *semundo
	if path == "" {
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintf(stderr, "semundo-criu-action: find semundo beside this program: %v: pass --semundo PATH\n", err)
			return 1
		}
		path = filepath.Join(filepath.Dir(self), "semundo")
	}
	set := map[string]string{}
	if env.Action == criuaction.ActionPostDump || env.Action == criuaction.ActionPostResume {
		set[criuaction.EnvHelper] = "0"
	}
	if env.AllowRunning {
		set[criuaction.EnvAllowRunning] = "1"
	}
	if env.StateDir != "" {
		set[criuaction.EnvStateDir] = env.StateDir
	}
	err = execve(path, []string{path, "criu-script"}, withEnv(os.Environ(), set))
	fmt.Fprintf(stderr, "semundo-criu-action: run %s criu-script: %v: pass the semundo binary with --semundo PATH\n", path, err)
	return 1
}

// withEnv returns environ with the variables of set set: each once, since
// for a name given twice Go's os.Getenv, like glibc's getenv, takes the
// first.
func withEnv(environ []string, set map[string]string) []string {
	out := make([]string, 0, len(environ)+len(set))
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if _, ok := set[name]; !ok {
			out = append(out, kv)
		}
	}
	for name, v := range set {
		out = append(out, name+"="+v)
	}
	return out
}

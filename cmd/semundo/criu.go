package main

import (
	"flag"
	"os"
	"os/exec"

	"github.com/semundo/semundo/criu"
)

// runCriuScript is CRIU's action script (criu --action-script, or
// action-script in /etc/criu/default.conf): it saves the tree's undo lists
// at post-dump and writes them back at post-resume (docs/criu.md). CRIU
// runs it without arguments and says what it is doing in the environment;
// the flags are for a wrapper script that wants them.
var criuScriptCmd = &spec{
	name:   "criu-script",
	about:  "CRIU's action script (criu --action-script): keeps the undo lists across\ncriu dump and criu restore --leave-stopped (docs/criu.md)",
	define: defineCriuScript,
}

func defineCriuScript(fs *flag.FlagSet, c *cli) func([]string) error {
	allow := fs.Bool("allow-running", false, "at post-resume, add the saved adjustments to tasks that already run (a restore without --leave-stopped); also "+criu.EnvAllowRunning+"=1")
	state := fs.String("state-dir", "", "`DIR` where pre-restore hands the image over to post-resume (default "+criu.DefaultStateDir+"); also "+criu.EnvStateDir)
	return func(pos []string) error {
		if len(pos) > 0 {
			return usagef("criu-script takes no arguments (CRIU passes everything in the environment), got %q", pos[0])
		}
		if _, ok := os.LookupEnv(criu.EnvAction); !ok {
			return usagef("this is CRIU's action script, run by criu with %s set: pass a script that runs `semundo criu-script` to criu dump and criu restore --action-script (docs/criu.md)", criu.EnvAction)
		}
		env, err := criu.ParseEnv(os.LookupEnv)
		if err != nil {
			return err
		}
		env.AllowRunning = env.AllowRunning || *allow
		if *state != "" {
			env.StateDir = *state
		}
		return criu.Run(env, criuOptions(c))
	}
}

func criuOptions(c *cli) *criu.Options {
	return &criu.Options{
		Version:    version,
		Log:        c.stdout,
		OpenReader: openHolderReader,
		Injector:   childInjector,
		Helper: func() *exec.Cmd {
			// The running binary, named in ps as it was invoked.
			cmd := exec.Command("/proc/self/exe", criu.HelperArg)
			cmd.Args[0] = os.Args[0]
			return cmd
		},
	}
}

// criuHelperCmd is the helper criu-script starts at pre-dump and
// pre-restore (criu.Serve): it loads the reader while CRIU works, and does
// post-dump's or post-resume's work when that action hands it over.
var criuHelperCmd = &spec{
	name:   criu.HelperArg,
	about:  "internal: criu-script's helper, started at pre-dump and pre-restore",
	hidden: true,
	define: noFlags(func(c *cli, pos []string) error {
		env, err := criu.ParseEnv(os.LookupEnv)
		if err != nil {
			return err
		}
		return criu.Serve(env, criuOptions(c))
	}),
}

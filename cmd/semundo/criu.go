package main

import (
	"flag"
	"os"

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
		return criu.Run(env, &criu.Options{
			Version:    version,
			Log:        c.stdout,
			OpenReader: openReader,
			Injector:   childInjector,
		})
	}
}

package main

import (
	"errors"
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/semundo/semundo/undofs"
)

// mountMore is the rest of mount's -h text.
const mountMore = `Serves in the foreground until SIGINT (Ctrl-C) or SIGTERM, which unmount
DIR. Needs root.

  DIR/PID/semundo   the undo list of process PID, "SEMID ADJ0 ADJ1 ..." per
                    set, taken when the file is opened. ls DIR shows the
                    processes that have entries; any live PID can be opened
                    (empty when it has no list).

Opening PID's file needs what opening /proc/PID/mem needs: the kernel must
let the opening process ptrace PID (read it, to read; attach to it, to
write), judged with the opener's own credentials in its own user namespace,
and PID must be in the opener's PID namespace; otherwise EACCES.
Writing "SEMID ADJ0 ADJ1 ..." lines adds or updates those entries of PID's
list (others stay), with the opener's credentials, never root's, and never
those of another process the descriptor was passed to. A write(2) that ends
a line applies it and returns the error; a last line without a newline is
applied at close(2).
  EACCES   the opener may not ptrace PID (at open, or no longer at write)
  EINVAL   not the format (nothing changed), or a semid that does not exist,
           or the wrong number of values for the set
  EDEADLK  the writer is PID itself (it would wait on itself): to set a
           process's own list, use: semundo exec --undo FILE -- CMD
  ESRCH    PID exited
Example: echo "163848 -1 0 0 -2" > DIR/32139/semundo

Without --allow-other only root may enter DIR. Who may do what:
docs/security.md. A second semundo mount on the same DIR fails.
`

// runMount mounts the undo file system and serves it until a signal.
var mountCmd = &spec{
	name:  "mount",
	args:  "DIR",
	about: "the file interface: a FUSE file system on DIR with DIR/PID/semundo for every\nprocess; reading gives the list, writing \"SEMID ADJ...\" lines updates it",
	more:  mountMore,
	define: func(fs *flag.FlagSet, c *cli) func([]string) error {
		allowOther := fs.Bool("allow-other", false, "let users other than root in (each open is still judged as below)")
		return func(pos []string) error {
			switch len(pos) {
			case 0:
				return usagef("mount needs a DIR (see semundo mount --help)")
			case 1:
				return runMount(c, pos[0], *allowOther)
			}
			return usagef("mount takes one DIR, got %q and %q", pos[0], pos[1])
		}
	},
}

func runMount(c *cli, dir string, allowOther bool) error {

	// Signals are caught before mounting, so that one arriving during the
	// mount still unmounts.
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	r, err := openHolderReader()
	if err != nil {
		return err
	}
	// The FS does not own r: it is closed here, after serving ends.
	defer r.Close()
	lg := log.New(c.stderr, "semundo mount: ", log.LstdFlags)
	fsys, err := undofs.Mount(dir, &undofs.Options{AllowOther: allowOther, Reader: r, Log: lg})
	if err != nil {
		return err
	}
	lg.Printf("serving %s (pid %d); Ctrl-C or kill -TERM %d unmounts", fsys.Dir(), os.Getpid(), os.Getpid())

	select {
	case s := <-sigs:
		lg.Printf("%v: unmounting %s", s, fsys.Dir())
	case <-fsys.Done():
		lg.Printf("%s was unmounted from outside", fsys.Dir())
		return nil
	}
	if err := fsys.Unmount(); err != nil {
		if !errors.Is(err, undofs.ErrBusy) {
			return err
		}
		// Detached lazily: the directory is free; exiting closes the FUSE
		// connection, so the processes that still held it get ENOTCONN.
		lg.Print(err)
		select {
		case <-fsys.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

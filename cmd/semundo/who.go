package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/semundo/semundo/reader"
	"github.com/semundo/semundo/sysvsem"
	"golang.org/x/sys/unix"
)

// runWho prints the processes whose lists hold an entry for one set: what
// each will add to the set's semaphores when it exits.
var whoCmd = &spec{
	name:   "who",
	args:   "SEMID",
	about:  "the processes that will adjust set SEMID when they exit, and by how much",
	define: defineWho,
}

func defineWho(fs *flag.FlagSet, c *cli) func([]string) error {
	ipcns := fs.Uint64("ipcns", 0, "`INODE` of the set's IPC namespace, as in /proc/PID/ns/ipc (default: semundo's own)")
	return func(pos []string) error {
		switch len(pos) {
		case 0:
			return usagef("who needs a SEMID")
		case 1:
			return runWho(c.stdout, pos[0], *ipcns)
		}
		return usagef("who takes one SEMID, got %q and %q", pos[0], pos[1])
	}
}

func runWho(stdout io.Writer, semidArg string, ipcnsFlag uint64) error {
	ipcns := &ipcnsFlag
	semid, err := strconv.ParseInt(semidArg, 10, 32)
	if err != nil || semid < 0 {
		return usagef("%q is not a semid", semidArg)
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/ipc", &st); err != nil {
		return fmt.Errorf("find own IPC namespace: %w", err)
	}
	if *ipcns > math.MaxUint32 {
		return usagef("--ipcns %d is not an IPC namespace inode (they are 32-bit)", *ipcns)
	}
	ns := uint32(*ipcns)
	if ns == 0 {
		ns = uint32(st.Ino)
	}
	// In semundo's own namespace a set that does not exist is an error;
	// elsewhere it cannot be checked without entering the namespace.
	if ns == uint32(st.Ino) {
		if _, err := sysvsem.Stat(int(semid)); errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EIDRM) {
			return fmt.Errorf("set %d does not exist in IPC namespace %d (see ipcs -s)", semid, ns)
		}
	}
	snap, err := scan()
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "PID\tCOMMAND\tADJUSTMENTS ON EXIT (SEM:ADJ)")
	found := false
	for i := range snap.Lists {
		l := &snap.Lists[i]
		if l.IPCNS != ns {
			continue
		}
		e := l.Entry(int32(semid))
		if e == nil {
			continue
		}
		found = true
		var adj []string
		for num, v := range e.Adj {
			if v != 0 {
				adj = append(adj, fmt.Sprintf("%d:%+d", num, v))
			}
		}
		if len(adj) == 0 {
			adj = []string{"none (all zero)"}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", pidsOf(l), commOf(l), strings.Join(adj, " "))
	}
	if !found && ns != uint32(st.Ino) && !ipcnsInUse(ns, snap) {
		return fmt.Errorf("IPC namespace %d: no process is in it (see ls -l /proc/*/ns/ipc for the namespaces): %w", ns, errNoNamespace)
	}
	if !found {
		fmt.Fprintf(stdout, "no process holds undo adjustments for set %d in IPC namespace %d\n", semid, ns)
		return nil
	}
	return w.Flush()
}

// errNoNamespace: no process is in the IPC namespace named.
var errNoNamespace = errors.New("no such IPC namespace")

// ipcnsInUse reports whether some process is in the IPC namespace with
// inode ns: only then can a list act on its sets. A list of snap in it
// says so even where /proc hides a process's namespace.
func ipcnsInUse(ns uint32, snap *reader.Snapshot) bool {
	for i := range snap.Lists {
		if snap.Lists[i].IPCNS == ns {
			return true
		}
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return true // cannot tell: the empty answer stands
	}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		var st unix.Stat_t
		if unix.Stat("/proc/"+e.Name()+"/ns/ipc", &st) == nil && uint32(st.Ino) == ns {
			return true
		}
	}
	return false
}

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
	about:  "the processes that will adjust set SEMID when they exit, and by how much,\nand the tasks blocked in semop on it",
	define: defineWho,
}

func defineWho(fs *flag.FlagSet, c *cli) func([]string) error {
	ipcns := fs.Uint64("ipcns", 0, "`INODE` of the set's IPC namespace, as in /proc/PID/ns/ipc (default: semundo's own)")
	asJSON := fs.Bool("json", false, "print holders and waiters as JSON")
	return func(pos []string) error {
		switch len(pos) {
		case 0:
			return usagef("who needs a SEMID")
		case 1:
			return runWho(c, pos[0], *ipcns, *asJSON)
		}
		return usagef("who takes one SEMID, got %q and %q", pos[0], pos[1])
	}
}

func runWho(c *cli, semidArg string, ipcnsFlag uint64, asJSON bool) error {
	semid, err := strconv.ParseInt(semidArg, 10, 32)
	if err != nil || semid < 0 {
		return usagef("%q is not a semid", semidArg)
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/ipc", &st); err != nil {
		return fmt.Errorf("find own IPC namespace: %w", err)
	}
	if ipcnsFlag > math.MaxUint32 {
		return usagef("--ipcns %d is not an IPC namespace inode (they are 32-bit)", ipcnsFlag)
	}
	ns := uint32(ipcnsFlag)
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
	var holders []*reader.List
	for i := range snap.Lists {
		l := &snap.Lists[i]
		if l.IPCNS == ns && l.Entry(int32(semid)) != nil {
			holders = append(holders, l)
		}
	}
	waiters := snap.WaitersOf(ns, int32(semid))
	if len(holders) == 0 && len(waiters) == 0 && ns != uint32(st.Ino) && !ipcnsInUse(ns, snap) {
		return fmt.Errorf("IPC namespace %d: no process is in it (see ls -l /proc/*/ns/ipc for the namespaces): %w", ns, errNoNamespace)
	}
	if snap.WaitersErr != nil {
		// The holders are the answer this kernel can give.
		fmt.Fprintf(c.stderr, "semundo who: blocked semop callers not shown: %v\n", snap.WaitersErr)
	}
	if asJSON {
		return writeWhoJSON(c.stdout, holders, waiters, int32(semid))
	}
	if err := writeHolders(c.stdout, holders, int32(semid), ns); err != nil {
		return err
	}
	if snap.WaitersErr != nil {
		return nil
	}
	if len(waiters) == 0 {
		_, err := fmt.Fprintf(c.stdout, "no task waits in semop on set %d\n", semid)
		return err
	}
	rows := [][]string{{"WAITER PID", "TID", "COMMAND", "TIMED", "WAITS FOR (SEM:OP[:FLAGS], * blocks)"}}
	for _, w := range waiters {
		rows = append(rows, []string{strconv.Itoa(w.PID), strconv.Itoa(w.TID), w.Comm, yesNo(w.Timed), opsText(w)})
	}
	fmt.Fprintln(c.stdout)
	return writeColumns(c.stdout, rows)
}

// writeHolders prints the holders of set semid as who always has.
func writeHolders(stdout io.Writer, holders []*reader.List, semid int32, ns uint32) error {
	if len(holders) == 0 {
		_, err := fmt.Fprintf(stdout, "no process holds undo adjustments for set %d in IPC namespace %d\n", semid, ns)
		return err
	}
	w := tabwriter.NewWriter(stdout, 0, 8, 2, ' ', 0)
	fmt.Fprintln(w, "PID\tCOMMAND\tADJUSTMENTS ON EXIT (SEM:ADJ)")
	for _, l := range holders {
		var adj []string
		for num, v := range l.Entry(semid).Adj {
			if v != 0 {
				adj = append(adj, fmt.Sprintf("%d:%+d", num, v))
			}
		}
		if len(adj) == 0 {
			adj = []string{"none (all zero)"}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\n", pidsOf(l), commOf(l), strings.Join(adj, " "))
	}
	return w.Flush()
}

// The JSON schema of who --json, documented in the README.
type jsonWho struct {
	Holders []jsonHolder `json:"holders"`
	Waiters []jsonWaiter `json:"waiters"`
}

type jsonHolder struct {
	PID       int           `json:"pid"`
	Processes []jsonProcess `json:"processes"`
	Adj       []int16       `json:"adj"`
}

func writeWhoJSON(stdout io.Writer, holders []*reader.List, waiters []reader.Waiter, semid int32) error {
	out := jsonWho{Holders: []jsonHolder{}, Waiters: []jsonWaiter{}}
	for _, l := range holders {
		h := jsonHolder{PID: l.PID(), Adj: l.Entry(semid).Adj}
		for _, p := range l.Processes {
			h.Processes = append(h.Processes, jsonProcess{PID: p.PID, Comm: p.Comm, TIDs: p.TIDs})
		}
		out.Holders = append(out.Holders, h)
	}
	for _, w := range waiters {
		out.Waiters = append(out.Waiters, toJSONWaiter(w, false))
	}
	return encodeJSON(stdout, out)
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

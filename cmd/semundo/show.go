package main

import (
	"bufio"
	"fmt"
	"io"
	"os"

	"github.com/semundo/semundo/reader"
)

// runShow prints each pid's list in the seed's format, all from one scan so
// that several pids are shown at the same instant.
var showCmd = &spec{
	name:   "show",
	args:   "PID...",
	about:  "print each process's undo list: \"SEMID ADJ0 ADJ1 ...\" per set, sorted by SEMID",
	pids:   true,
	define: noFlags(func(c *cli, pids []string) error { return runShow(pids, c.stdout) }),
}

func runShow(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usagef("show needs at least one PID")
	}
	pids := make([]int, len(args))
	for i, a := range args {
		pid, err := parsePID(a)
		if err != nil {
			return err
		}
		pids[i] = pid
	}
	// Every pid must exist before anything is printed.
	for _, pid := range pids {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return fmt.Errorf("pid %d: no such process", pid)
		}
	}
	snap, err := scan()
	if err != nil {
		return err
	}
	w := bufio.NewWriter(stdout)
	var buf []byte
	for _, pid := range pids {
		if len(pids) > 1 {
			fmt.Fprintf(w, "%d:\n", pid)
		}
		buf, err = showList(buf[:0], snap.ByPID(pid))
		if err != nil {
			return fmt.Errorf("pid %d: %w", pid, err)
		}
		w.Write(buf)
	}
	return w.Flush()
}

func showList(buf []byte, l *reader.List) ([]byte, error) {
	if l == nil {
		return buf, nil
	}
	return l.Undo().AppendText(buf)
}

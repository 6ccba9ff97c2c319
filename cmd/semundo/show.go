package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/semundo/semundo/reader"
)

// runShow prints each pid's list in the seed's format.
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
	byPID, err := readLists(pids)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(stdout)
	var buf []byte
	for _, pid := range pids {
		if len(pids) > 1 {
			fmt.Fprintf(w, "%d:\n", pid)
		}
		buf, err = showList(buf[:0], byPID(pid))
		if err != nil {
			return fmt.Errorf("pid %d: %w", pid, err)
		}
		w.Write(buf)
	}
	err = w.Flush()
	phase("output")
	return err
}

// readLists reads the lists of pids. One pid is one ReadProcess, which from
// Linux 6.1 visits that process alone instead of every task (show prints
// entries only, not who shares them); several come from
// one scan, so that they are shown as of the same pass.
func readLists(pids []int) (func(pid int) *reader.List, error) {
	if len(pids) > 1 {
		snap, err := scanHolders()
		if err != nil {
			return nil, err
		}
		return snap.ByPID, nil
	}
	phase("init")
	r, err := openHolderReader()
	if err != nil {
		return nil, err
	}
	defer r.Close()
	phase("open")
	l, err := r.ReadProcess(pids[0])
	if err != nil {
		if errors.Is(err, reader.ErrNoProcess) {
			return nil, fmt.Errorf("pid %d: no such process", pids[0])
		}
		return nil, err
	}
	phase("scan")
	return func(int) *reader.List { return l }, nil
}

func showList(buf []byte, l *reader.List) ([]byte, error) {
	if l == nil {
		return buf, nil
	}
	return l.Undo().AppendText(buf)
}

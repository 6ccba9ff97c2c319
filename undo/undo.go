// Package undo models one process's System V semaphore undo list (the
// kernel's per-process semadj values) and reads and writes it in the text
// format of the 2008 /proc/<pid>/semundo patch series.
//
// The model is what the kernel keeps in struct sem_undo: for each semaphore
// set the process has touched with SEM_UNDO, one adjustment per semaphore,
// which the kernel adds to the semaphore's value when the last task sharing
// the list exits (clamped to [0, 32767]).
//
// The text format is a contract shared with the rest of semundo: one line per
// set, "SEMID ADJ0 ADJ1 ... ADJn-1", decimal, single spaces, '\n' after every
// line, lines sorted by SEMID ascending. The empty list is the empty string.
// Marshal always writes that canonical form; Parse is strict about everything
// except line order and the final newline (see Parse).
package undo

import (
	"cmp"
	"slices"
)

// Limits of the values the kernel can hold, which the text format enforces.
const (
	// MaxSemid is the largest semid: the kernel's ids are non-negative ints.
	MaxSemid = 1<<31 - 1
	// MinAdj and MaxAdj bound an adjustment: semadj is a short, and
	// semop refuses to leave [-(SEMAEM+1), SEMAEM] with SEMAEM = 32767.
	MinAdj = -32768
	MaxAdj = 32767
)

// Entry is one entry of an undo list: the adjustments a process holds for
// one semaphore set. Adj has one element per semaphore of the set
// (len(Adj) is the set's nsems, which the kernel's sem_undo does not record
// itself). Adj[i] is what the kernel adds to semaphore i's value at exit.
type Entry struct {
	Semid int32
	Adj   []int16
}

// List is the undo list of one process: at most one Entry per semid, in any
// order (the kernel keeps its list in most-recently-used order, so order
// carries no meaning; Marshal sorts).
type List []Entry

// Sorted returns a deep copy of l sorted by Semid. Entries with equal
// Semid (invalid, but possible in a hand-built List) keep their order.
func (l List) Sorted() List {
	if l == nil {
		return nil
	}
	out := make(List, len(l))
	for i, e := range l {
		out[i] = Entry{Semid: e.Semid, Adj: slices.Clone(e.Adj)}
	}
	slices.SortStableFunc(out, func(a, b Entry) int { return cmp.Compare(a.Semid, b.Semid) })
	return out
}

// Lookup returns the entry for semid and whether there is one. It scans the
// list (lists are short; the kernel's own lookup is a linear scan too); when
// l holds several entries for semid it returns the first.
func (l List) Lookup(semid int32) (Entry, bool) {
	for _, e := range l {
		if e.Semid == semid {
			return e, true
		}
	}
	return Entry{}, false
}

// Equal reports whether l and m hold the same entries, in any order. A nil
// and an empty list are equal, and so are a nil and an empty Adj.
func (l List) Equal(m List) bool {
	if len(l) != len(m) {
		return false
	}
	// Lists from Parse or a kernel reader in canonical order compare
	// without any copy.
	if strictlySorted(l) && strictlySorted(m) {
		for i := range l {
			if l[i].Semid != m[i].Semid || !slices.Equal(l[i].Adj, m[i].Adj) {
				return false
			}
		}
		return true
	}
	a, b := slices.Clone(l), slices.Clone(m)
	byAll := func(x, y Entry) int {
		if c := cmp.Compare(x.Semid, y.Semid); c != 0 {
			return c
		}
		return slices.Compare(x.Adj, y.Adj)
	}
	slices.SortFunc(a, byAll)
	slices.SortFunc(b, byAll)
	for i := range a {
		if a[i].Semid != b[i].Semid || !slices.Equal(a[i].Adj, b[i].Adj) {
			return false
		}
	}
	return true
}

// strictlySorted reports whether l's semids are strictly increasing, which
// also means l has no duplicate semid.
func strictlySorted(l List) bool {
	for i := 1; i < len(l); i++ {
		if l[i].Semid <= l[i-1].Semid {
			return false
		}
	}
	return true
}

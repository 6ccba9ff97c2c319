// Package image is semundo's checkpoint image: one consistent snapshot of
// the System V semaphore state of one IPC namespace (the sets with their
// values, and every undo list with the processes that share it), written as
// a JSON document that other tools can read.
//
// The format is "semundo/1", documented field by field in docs/image.md.
// [Encode] and [WriteFile] write it; [Decode] and [ReadFile] read it and
// reject anything that is not a well-formed, self-consistent image, so that a
// restore never starts from a file it would have to second-guess.
// [Image.Validate] applies the same rules to an image built in memory, before
// it is written.
//
// Decode is encoding/json/v2 (the module github.com/go-json-experiment/json,
// the same code as the standard library's package under GOEXPERIMENT=jsonv2,
// which a user's go build would not set) with the format's schema: v2
// checks syntax, UTF-8, repeated names and each integer's fit in its Go
// type; schema.go adds what v2 cannot express (a field that is missing or
// null) and refuses unknown fields when v2's RejectUnknownMembers is set,
// as it is under "semundo/1".
//
// Errors about the content are [*ValidationError] values naming the place
// (for example "lists[2].entries[0].adj") and wrapping one of [ErrVersion],
// [ErrMalformed] or [ErrInconsistent].
//
// The package does not read or change kernel state: the checkpoint side
// fills an [Image] and the restore side consumes one.
package image

import (
	"cmp"
	"slices"
	"time"

	"github.com/semundo/semundo/undo"
)

// FormatVersion is the format this package writes: major version 1, no
// minor extension. Decode also accepts "semundo/1.N" (see docs/image.md).
const FormatVersion = "semundo/1"

// Limits of the kernel that the validation rules enforce.
const (
	// MaxValue is SEMVMX, the largest value a semaphore can hold.
	MaxValue = 32767
	// MaxNsems bounds the semaphores of a set on every kernel semundo
	// supports, whatever SEMMSL says: sem_alloc refuses nsems >
	// (INT_MAX - sizeof(struct sem_array)) / sizeof(struct sem), and struct
	// sem is one 64-byte cache line on x86-64 and arm64 (on 6.18 its BTF
	// gives 64 and 256 bytes, so the kernel's own limit is 33554427).
	MaxNsems = (1<<31 - 1) / 64
	// MaxSemop is the number of semaphores semop can address: sem_num is an
	// unsigned short, so semaphores from index MaxSemop on can never hold an
	// adjustment.
	MaxSemop = 1 << 16
	// MaxSemmni is IPCMNI with the ipcmni_extend boot option, the largest
	// SEMMNI the kernel accepts.
	MaxSemmni = 1 << 24
)

// Image is one snapshot of an IPC namespace's System V semaphores. The zero
// value is not valid: Created, KernelRelease, SemundoVersion and
// IPCNamespace must be set (see Validate).
type Image struct {
	// Created is when the snapshot was taken. JSON "created", an RFC 3339
	// time in UTC with up to nanosecond precision; its year must be within
	// 1970..9999. Informational.
	Created time.Time
	// KernelRelease is the release of the kernel the snapshot was taken on
	// (uname -r). JSON "kernel_release", not empty. Informational.
	KernelRelease string
	// Hostname is the node name of the UTS namespace the capture ran in
	// (uname -n). JSON "hostname", may be empty. Informational.
	Hostname string
	// SemundoVersion is the version string of the program that took the
	// snapshot. JSON "semundo_version", not empty. Informational.
	SemundoVersion string
	// IPCNamespace is the inode number of the IPC namespace the sets and
	// lists belong to, as in stat -L /proc/PID/ns/ipc. JSON "ipcns",
	// 1..2^63-1. Informational: a restore creates the sets in whatever
	// namespace it runs in.
	IPCNamespace uint64
	// Limits are the namespace's semaphore limits at capture time. JSON
	// "limits".
	Limits Limits
	// Sets are every semaphore set of the namespace, in any order (Sort
	// orders them by ID). JSON "sets", may be empty.
	Sets []Set
	// Lists are the namespace's undo lists, one per list the kernel holds
	// (a list shared by several processes appears once), in any order.
	// JSON "lists", may be empty.
	Lists []List
	// Warnings are one-line notes the capture recorded about what the
	// snapshot may lack, for example a list shared with a process outside
	// the checkpoint. JSON "warnings", omitted when there are none.
	Warnings []string
}

// Limits are the semaphore limits of an IPC namespace, the four numbers of
// /proc/sys/kernel/sem. They are restorable (a restore may write them to the
// new namespace) but nothing in the image has to respect them: the kernel
// lets an administrator lower a limit below what existing sets use.
type Limits struct {
	// Semmsl is SEMMSL, the most semaphores a new set may have. JSON
	// "semmsl", a C int.
	Semmsl int32
	// Semmns is SEMMNS, the most semaphores in all sets together. JSON
	// "semmns", a C int.
	Semmns int32
	// Semopm is SEMOPM, the most operations in one semop call. JSON
	// "semopm", a C int.
	Semopm int32
	// Semmni is SEMMNI, the most sets. JSON "semmni", 0..MaxSemmni (the
	// kernel refuses anything else).
	Semmni int32
}

// Set is one System V semaphore set.
type Set struct {
	// ID is the set's identifier (semid), as semget returned it. JSON
	// "id", 0..2^31-1, unique in the image. Restorable (through
	// /proc/sys/kernel/sem_next_id).
	ID int32
	// Key is the key the set was created with (key_t, signed); 0 is
	// IPC_PRIVATE. JSON "key"; two sets never share a key other than 0.
	// Restorable.
	Key int32
	// UID is the owner's user id. JSON "uid", 0..2^32-2. Restorable
	// (IPC_SET).
	UID uint32
	// GID is the owner's group id. JSON "gid", 0..2^32-2. Restorable
	// (IPC_SET).
	GID uint32
	// CUID is the creator's user id. JSON "cuid", 0..2^32-2. Restorable
	// only by creating the set under that effective user id.
	CUID uint32
	// CGID is the creator's group id. JSON "cgid", 0..2^32-2. Restorable
	// only by creating the set under that effective group id.
	CGID uint32
	// Mode is sem_perm.mode as the kernel reports it: the 9 permission bits
	// and any other bits it keeps. JSON "mode", 0..0xffff (the kernel
	// stores a umode_t). The permission bits are restorable (IPC_SET
	// changes only mode & 0777).
	Mode uint32
	// Nsems is the number of semaphores in the set. JSON "nsems",
	// 1..MaxNsems. Restorable (semget).
	Nsems int
	// Values are the semaphores' values, Nsems of them. JSON "values",
	// each 0..MaxValue. Restorable (SETALL, which must come before any
	// adjustment is written: it zeroes the set's adjustments).
	Values []uint16
	// Otime is the time of the last successful semop on the set, in
	// seconds since the Unix epoch, 0 if there was none. JSON "otime", >= 0.
	// Informational: the kernel offers no way to set it.
	Otime int64
	// Ctime is the time the set was created or last changed by IPC_SET,
	// SETVAL or SETALL, in seconds since the Unix epoch. JSON "ctime",
	// >= 0. Informational.
	Ctime int64
	// Sempids are, for each semaphore, the pid of the last process that
	// changed it (GETPID) in the capturing process's PID namespace, 0 if
	// none or not visible there; Nsems of them, or none at all when the
	// capture did not read them (it costs a system call per semaphore).
	// JSON "sempids", each 0..2^31-1. Informational.
	Sempids []int32
}

// List is one undo list as the kernel shares it: every process holding a
// reference to the same struct sem_undo_list, and the list's entries.
type List struct {
	// Processes are the processes sharing the list, at least one. JSON
	// "processes". A pid or tid belongs to one process of one list only.
	Processes []Process
	// Entries are the list's adjustments, at most one per set, in any
	// order (the kernel keeps most-recently-used order). JSON "entries",
	// may be empty: a multi-threaded process holds a list even when it
	// never used SEM_UNDO. An entry with only zeros is real state.
	Entries []Entry
}

// Process is a process sharing an undo list.
type Process struct {
	// PID is the process id (thread group id) in the capturing process's
	// PID namespace. JSON "pid", 1..2^31-1.
	PID int32
	// Comm is the command name (/proc/PID/comm), up to 15 bytes in the
	// kernel; stored as UTF-8, Encode replaces invalid bytes with U+FFFD.
	// JSON "comm". Informational.
	Comm string
	// Stopped reports that the process was in group-stop (state T in
	// /proc/PID/stat) when the snapshot was taken, so a restore knows to
	// leave it stopped. JSON "stopped".
	Stopped bool
	// TIDs are the ids of the process's threads that share the list, at
	// least one; they may lack PID when the thread group leader has exited.
	// JSON "tids", each 1..2^31-1, no repeats.
	TIDs []int32
}

// Entry is the adjustments an undo list holds for one set. Its shape is
// undo.Entry's.
type Entry struct {
	// Semid is the set's id; the set must be in the image. JSON "semid",
	// 0..2^31-1, unique in its list.
	Semid int32
	// Adj are the adjustments the kernel adds to each semaphore's value
	// when the list's last process exits: one per semaphore of the set
	// (len(Adj) == that set's Nsems), each -32768..32767, and 0 from index
	// MaxSemop on. JSON "adj". Restorable.
	Adj []int16
}

// Set returns the set with the given id, or nil if the image (which may be
// nil) has none. The pointer is into im.Sets: changes to it change the
// image.
func (im *Image) Set(id int32) *Set {
	if im == nil {
		return nil
	}
	for i := range im.Sets {
		if im.Sets[i].ID == id {
			return &im.Sets[i]
		}
	}
	return nil
}

// ListOf returns the undo list shared by the process or thread with id pid
// (its pid or one of its tids), or nil if no list names it. The pointer is
// into im.Lists.
func (im *Image) ListOf(pid int32) *List {
	if im == nil {
		return nil
	}
	for i := range im.Lists {
		for _, p := range im.Lists[i].Processes {
			if p.PID == pid || slices.Contains(p.TIDs, pid) {
				return &im.Lists[i]
			}
		}
	}
	return nil
}

// Undo returns the list's entries as an undo.List, the model the rest of
// semundo reads and writes adjustments with. The result is a deep copy.
func (l *List) Undo() undo.List {
	if l == nil || len(l.Entries) == 0 {
		return nil
	}
	out := make(undo.List, len(l.Entries))
	for i, e := range l.Entries {
		out[i] = undo.Entry{Semid: e.Semid, Adj: slices.Clone(e.Adj)}
	}
	return out
}

// PIDs returns the pids of the processes sharing the list, in list order.
func (l *List) PIDs() []int32 {
	if l == nil {
		return nil
	}
	out := make([]int32, len(l.Processes))
	for i, p := range l.Processes {
		out[i] = p.PID
	}
	return out
}

// Sort puts the image in canonical order, which the checkpoint side should
// do before writing so that images diff well: sets by ID, each list's
// processes by PID with their TIDs ascending, entries by Semid, and lists
// by their first process's PID. Warnings keep their order. Readers must
// not rely on any order.
func (im *Image) Sort() {
	if im == nil {
		return
	}
	// Captures come in index order, usually the id order already: checking
	// costs less than sorting 32,000 sets again.
	bySetID := func(a, b Set) int { return cmp.Compare(a.ID, b.ID) }
	if !slices.IsSortedFunc(im.Sets, bySetID) {
		slices.SortStableFunc(im.Sets, bySetID)
	}
	for i := range im.Lists {
		l := &im.Lists[i]
		for j := range l.Processes {
			slices.Sort(l.Processes[j].TIDs)
		}
		slices.SortStableFunc(l.Processes, func(a, b Process) int { return cmp.Compare(a.PID, b.PID) })
		slices.SortStableFunc(l.Entries, func(a, b Entry) int { return cmp.Compare(a.Semid, b.Semid) })
	}
	// Lists without a process (invalid, but possible in memory) go last.
	first := func(l List) int64 {
		if len(l.Processes) == 0 {
			return 1 << 32
		}
		return int64(l.Processes[0].PID)
	}
	slices.SortStableFunc(im.Lists, func(a, b List) int { return cmp.Compare(first(a), first(b)) })
}

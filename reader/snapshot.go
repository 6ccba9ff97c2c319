package reader

import (
	"encoding/binary"
	"fmt"
	"slices"
	"unsafe"

	"github.com/semundo/semundo/undo"
)

// Process is a process that holds an undo list.
type Process struct {
	// PID is the process id (thread-group id) in the reader's PID namespace.
	PID int
	// Comm is the command name of the process's main thread, or of the
	// first of its threads seen when the main thread has exited.
	Comm string
	// TIDs are the process's threads that share the list, sorted.
	TIDs []int
}

// Entry is one undo entry: the adjustments a list holds for one set.
type Entry struct {
	// Semid is the set's id in the list's IPC namespace.
	Semid int32
	// Key is the set's IPC key (0 for IPC_PRIVATE).
	Key int32
	// Adj holds the adjustment of each semaphore of the set; its length is
	// the set's nsems. An entry may hold only zeros: the kernel creates it
	// on the first SEM_UNDO operation on the set, even one that failed.
	Adj []int16
}

// List is one undo list, as the kernel shares it between tasks.
type List struct {
	// IPCNS is the inode number of the IPC namespace the list's semids
	// belong to (as in /proc/<pid>/ns/ipc).
	IPCNS uint32
	// Processes are the processes that share the list, sorted by PID.
	// Usually one; more when tasks were cloned with CLONE_SYSVSEM but not
	// CLONE_THREAD.
	Processes []Process
	// Entries are the list's live entries, sorted by Semid. Entries of
	// sets being removed are left out.
	Entries []Entry

	id uint32
}

// PID returns the lowest pid of the processes sharing the list.
func (l *List) PID() int {
	if len(l.Processes) == 0 {
		return 0
	}
	return l.Processes[0].PID
}

// Entry returns the entry for semid, or nil.
func (l *List) Entry(semid int32) *Entry {
	i, ok := slices.BinarySearchFunc(l.Entries, semid, func(e Entry, id int32) int {
		return int(e.Semid) - int(id)
	})
	if !ok {
		return nil
	}
	return &l.Entries[i]
}

// Snapshot is the result of one Scan: every undo list of every task.
type Snapshot struct {
	// Lists are sorted by their lowest pid.
	Lists []List
	// Dropped counts entries left out because their set was being removed
	// while it was read.
	Dropped int

	unstable map[uint32]bool
	byTask   map[int]int // tid (and tgid) -> index in Lists
}

// ByPID returns the list that the process or thread pid holds, or nil.
func (s *Snapshot) ByPID(pid int) *List {
	if i, ok := s.byTask[pid]; ok {
		return &s.Lists[i]
	}
	return nil
}

func (s *Snapshot) byID(id uint32) *List {
	for i := range s.Lists {
		if s.Lists[i].id == id {
			return &s.Lists[i]
		}
	}
	return nil
}

// merge takes from a later pass the lists that were unstable in s and are
// stable there.
func (s *Snapshot) merge(later *Snapshot) {
	for id := range s.unstable {
		if later.unstable[id] {
			continue
		}
		l := later.byID(id)
		if l == nil {
			// The owner task is gone: so is its list, unless another task
			// now owns it, in which case the later pass reports it whole.
			continue
		}
		if old := s.byID(id); old != nil {
			*old = *l
		}
		delete(s.unstable, id)
	}
	// Lists that appeared, or whose owner changed, come from the later pass.
	for i := range later.Lists {
		if s.byID(later.Lists[i].id) == nil {
			s.Lists = append(s.Lists, later.Lists[i])
		}
	}
	for id := range s.unstable {
		if later.byID(id) == nil {
			s.dropList(id)
			delete(s.unstable, id)
		}
	}
}

func (s *Snapshot) dropList(id uint32) {
	s.Lists = slices.DeleteFunc(s.Lists, func(l List) bool { return l.id == id })
}

// finish sorts the lists and indexes them by task.
func (s *Snapshot) finish() {
	slices.SortFunc(s.Lists, func(a, b List) int { return a.PID() - b.PID() })
	s.byTask = make(map[int]int)
	for i, l := range s.Lists {
		for _, p := range l.Processes {
			s.byTask[p.PID] = i
			for _, t := range p.TIDs {
				s.byTask[t] = i
			}
		}
	}
}

// listBuild gathers one list's records during a pass.
type listBuild struct {
	ipcns   uint32
	tasks   []iterSemundoTask
	entries []Entry
	sent    uint32 // entry records received, including dropped ones
	dropped int
	ended   bool
	count   uint32
	flags   uint32
	tooBig  []int32
}

type builder struct {
	lists map[uint32]*listBuild
	order []uint32
	lost  bool
}

func newBuilder() *builder {
	return &builder{lists: make(map[uint32]*listBuild)}
}

func (b *builder) list(id uint32) *listBuild {
	l := b.lists[id]
	if l == nil {
		l = &listBuild{}
		b.lists[id] = l
		b.order = append(b.order, id)
	}
	return l
}

// tasks decodes whole task records from data and returns the bytes of a
// record cut short by the read size.
func (b *builder) tasks(data []byte) ([]byte, error) {
	for len(data) >= taskSize {
		var t iterSemundoTask
		// The record is plain integers and bytes in host order.
		t = *(*iterSemundoTask)(unsafe.Pointer(&data[0]))
		data = data[taskSize:]
		l := b.list(t.List)
		l.tasks = append(l.tasks, t)
		if t.Flags&iterSemundoTaskOwner != 0 {
			l.ipcns = t.Ipcns
		}
	}
	return data, nil
}

var recSize = binary.Size(iterSemundoRec{})

// record decodes one ring buffer record.
func (b *builder) record(raw []byte) error {
	if len(raw) < recSize {
		return fmt.Errorf("BPF ring buffer record of %d bytes, want at least %d", len(raw), recSize)
	}
	h := *(*iterSemundoRec)(unsafe.Pointer(&raw[0]))
	l := b.list(h.List)
	switch h.Kind {
	case iterSemundoRecEntry:
		l.sent++
		switch {
		case h.Flags&iterSemundoEntryNoset != 0:
			l.dropped++
			return nil
		case h.Flags&iterSemundoEntryToobig != 0:
			l.tooBig = append(l.tooBig, h.Semid)
			return nil
		}
		body := raw[recSize:]
		if len(body) < 2*int(h.Nsems) {
			return fmt.Errorf("BPF ring buffer entry for semid %d has %d bytes, want %d", h.Semid, len(body), 2*h.Nsems)
		}
		adj := make([]int16, h.Nsems)
		for i := range adj {
			adj[i] = int16(binary.NativeEndian.Uint16(body[2*i:]))
		}
		l.entries = append(l.entries, Entry{Semid: h.Semid, Key: h.Key, Adj: adj})
	case iterSemundoRecEnd:
		l.ended = true
		l.count = h.Nsems
		l.flags = h.Flags
		if h.Flags&iterSemundoEndLost != 0 {
			b.lost = true
		}
	default:
		return fmt.Errorf("BPF ring buffer record of unknown kind %d", h.Kind)
	}
	return nil
}

// snapshot checks that every list arrived whole and builds the result.
func (b *builder) snapshot() (*Snapshot, error) {
	s := &Snapshot{unstable: make(map[uint32]bool)}
	for _, id := range b.order {
		lb := b.lists[id]
		if len(lb.tasks) == 0 {
			// Records of a task whose seq record was rolled back cannot
			// happen (the record is written first); be strict anyway.
			return nil, fmt.Errorf("BPF records for an undo list no task named (list %d)", id)
		}
		l := List{IPCNS: lb.ipcns, id: id}
		l.Processes = processes(lb.tasks)
		pid := l.PID()
		switch {
		case !lb.ended || lb.flags&iterSemundoEndLost != 0 || lb.sent != lb.count:
			return nil, fmt.Errorf("undo list of pid %d does not fit the %d MiB BPF ring buffer: %w", pid, ringSize>>20, ErrIncomplete)
		case lb.flags&iterSemundoEndTruncated != 0:
			return nil, fmt.Errorf("undo list of pid %d has more entries than this kernel lets BPF walk (2048 before Linux 5.17): %w", pid, ErrIncomplete)
		case len(lb.tooBig) > 0:
			return nil, fmt.Errorf("undo list of pid %d: set %d has more than %d semaphores: %w", pid, lb.tooBig[0], iterSemundoMaxNsems, ErrIncomplete)
		}
		slices.SortFunc(lb.entries, func(a, b Entry) int { return int(a.Semid) - int(b.Semid) })
		for i := 1; i < len(lb.entries); i++ {
			// The walk met an entry twice: lookup_undo moved it meanwhile.
			if lb.entries[i].Semid == lb.entries[i-1].Semid {
				lb.flags |= iterSemundoEndUnstable
			}
		}
		if lb.flags&iterSemundoEndUnstable != 0 {
			s.unstable[id] = true
		}
		l.Entries = lb.entries
		s.Dropped += lb.dropped
		s.Lists = append(s.Lists, l)
	}
	return s, nil
}

// processes groups a list's tasks by thread group.
func processes(tasks []iterSemundoTask) []Process {
	byPID := make(map[int]*Process)
	var out []*Process
	for _, t := range tasks {
		p := byPID[int(t.Tgid)]
		if p == nil {
			p = &Process{PID: int(t.Tgid), Comm: commString(t.Comm)}
			byPID[int(t.Tgid)] = p
			out = append(out, p)
		}
		if t.Tid == t.Tgid {
			p.Comm = commString(t.Comm)
		}
		p.TIDs = append(p.TIDs, int(t.Tid))
	}
	res := make([]Process, len(out))
	for i, p := range out {
		slices.Sort(p.TIDs)
		res[i] = *p
	}
	slices.SortFunc(res, func(a, b Process) int { return a.PID - b.PID })
	return res
}

// Undo returns the list's entries in the undo package's model, ready for
// the seed's text format.
func (l *List) Undo() undo.List {
	if l == nil {
		return nil
	}
	out := make(undo.List, len(l.Entries))
	for i, e := range l.Entries {
		out[i] = undo.Entry{Semid: e.Semid, Adj: e.Adj}
	}
	return out
}

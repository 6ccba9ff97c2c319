package reader

import (
	"fmt"
	"slices"

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
	if l == nil || len(l.Processes) == 0 {
		return 0
	}
	return l.Processes[0].PID
}

// Entry returns the entry for semid, or nil; a nil List has none.
func (l *List) Entry(semid int32) *Entry {
	if l == nil {
		return nil
	}
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
	// Waiters are the tasks blocked in semop or semtimedop, sorted by pid
	// and tid, read in the same pass as the lists.
	Waiters []Waiter
	// WaitersErr is nil when Waiters is complete, and otherwise says why
	// not: errors.Is ErrNotSupported when the kernel lacks what reading
	// them needs (Waiters is empty), ErrIncomplete when some were missed
	// (a retry may see them). The lists are whole either way.
	WaitersErr error

	unstable map[uint32]bool
}

// ByPID returns the list that the process or thread pid holds, or nil.
func (s *Snapshot) ByPID(pid int) *List {
	for i := range s.Lists {
		for _, p := range s.Lists[i].Processes {
			if p.PID == pid || slices.Contains(p.TIDs, pid) {
				return &s.Lists[i]
			}
		}
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

// finish sorts the lists by pid.
func (s *Snapshot) finish() {
	// Tasks come in pid order, so this is almost always sorted already.
	cmp := func(a, b List) int { return a.PID() - b.PID() }
	if !slices.IsSortedFunc(s.Lists, cmp) {
		slices.SortFunc(s.Lists, cmp)
	}
}

// listBuild gathers one list's records during a pass.
type listBuild struct {
	owner   iterSemundoTask // the task that carries the list
	owned   bool
	tasks   []iterSemundoTask // the other tasks that share it
	entries []Entry
	dropped int
}

type builder struct {
	lists  []listBuild
	procs  []Process          // slab for single-process lists
	tids   []int              // slab for their thread ids
	chunks map[uint64][]chunk // by nonce
	slab   adjSlab
	eslab  entrySlab
	// The last command name made a string: consecutive processes often
	// run the same program.
	lastComm [16]int8
	lastName string
	haveComm bool
	lost     bool
	waits    []Waiter
	wslab    waitSlab
}

type chunk struct {
	index   uint32
	entries []Entry
	dropped int
}

// newBuilder sizes its buffers for about hint lists and waits waiters (the
// last pass's). scratch, when not nil, is a released builder's list
// scratch (release) to reuse.
func newBuilder(hint, waits int, scratch []listBuild) *builder {
	var ws []Waiter
	if waits > 0 {
		ws = make([]Waiter, 0, waits)
	}
	if cap(scratch) < hint {
		scratch = make([]listBuild, 0, hint)
	}
	return &builder{
		waits:  ws,
		chunks: make(map[uint64][]chunk),
		lists:  scratch[:0],
		procs:  make([]Process, 0, hint),
		tids:   make([]int, 0, hint),
	}
}

// release returns the builder's list scratch, cleared (so that it holds
// no snapshot's entries alive), for another builder; the builder is not
// used afterwards.
func (b *builder) release() []listBuild {
	s := b.lists
	clear(s)
	b.lists = nil
	return s[:0]
}

// carrier returns the list that task records name id. Its carrier came
// before them in the stream, usually just before (threads have adjacent
// tids), so the search runs backwards.
func (b *builder) carrier(id uint32) *listBuild {
	for i := len(b.lists) - 1; i >= 0; i-- {
		if b.lists[i].owner.List == id {
			return &b.lists[i]
		}
	}
	return nil
}

// tasks decodes the task records (and inline entries) in data and returns
// the bytes of a record that the read cut short.
func (b *builder) tasks(data []byte) ([]byte, error) {
	for len(data) >= taskSize {
		// Waiter records share the flags' offset with task records.
		if ne.Uint32(data[16:])&iterSemundoTaskWaiter != 0 {
			w, n, err := decodeWait(data, &b.wslab)
			if err == errShort {
				return data, nil
			}
			if err != nil {
				return nil, fmt.Errorf("pid %d: %w", ne.Uint32(data[4:]), err)
			}
			b.waits = append(b.waits, w)
			data = data[n:]
			continue
		}
		t := decodeTask(data)
		used := taskSize
		if t.Flags&iterSemundoTaskOwner == 0 {
			l := b.carrier(t.List)
			if l == nil {
				return nil, fmt.Errorf("BPF iterator named undo list %d before any task carried it", t.List)
			}
			l.tasks = append(l.tasks, t)
			data = data[used:]
			continue
		}
		lb := listBuild{owner: t, owned: true}
		if t.Flags&(iterSemundoTaskRing|iterSemundoTaskLost) == 0 {
			var n int
			var err error
			lb.entries, n, err = decodeEntries(data[taskSize:], t.Entries, &b.slab, b.eslab.take(t.Entries), &lb.dropped)
			if err == errShort {
				return data, nil
			}
			if err != nil {
				return nil, fmt.Errorf("pid %d: %w", t.Tgid, err)
			}
			used += n
		}
		if t.Flags&iterSemundoTaskLost != 0 {
			b.lost = true
		}
		b.lists = append(b.lists, lb)
		data = data[used:]
	}
	return data, nil
}

// record decodes one ring buffer chunk.
func (b *builder) record(raw []byte) error {
	if len(raw) < chunkSize || ne.Uint32(raw) != iterSemundoChunkMagic {
		return fmt.Errorf("BPF ring buffer record of %d bytes is no chunk", len(raw))
	}
	nonce := ne.Uint64(raw[8:])
	c := chunk{index: ne.Uint32(raw[16:])}
	var err error
	var n int
	c.entries, n, err = decodeEntries(raw[chunkSize:], ne.Uint32(raw[20:]), &b.slab, nil, &c.dropped)
	if err != nil {
		return fmt.Errorf("BPF ring buffer chunk: %w", err)
	}
	if n != len(raw)-chunkSize && (len(raw)-chunkSize-n) >= 8 {
		return fmt.Errorf("BPF ring buffer chunk has %d bytes after its entries", len(raw)-chunkSize-n)
	}
	b.chunks[nonce] = append(b.chunks[nonce], c)
	return nil
}

// snapshot checks that every list arrived whole and builds the result.
func (b *builder) snapshot() (*Snapshot, error) {
	s := &Snapshot{unstable: make(map[uint32]bool), Lists: make([]List, 0, len(b.lists)), Waiters: b.waits}
	sortWaiters(s.Waiters)
	for i := range b.lists {
		lb := &b.lists[i]
		o := lb.owner
		id := o.List
		l := List{IPCNS: o.Ipcns, id: id}
		if len(lb.tasks) == 0 && len(b.procs) < cap(b.procs) && len(b.tids) < cap(b.tids) {
			// The common case, one single-threaded process: no allocation.
			b.tids = append(b.tids, int(o.Tid))
			b.procs = append(b.procs, Process{PID: int(o.Tgid), Comm: b.comm(o.Comm), TIDs: b.tids[len(b.tids)-1 : len(b.tids) : len(b.tids)]})
			l.Processes = b.procs[len(b.procs)-1 : len(b.procs) : len(b.procs)]
		} else {
			l.Processes = processes(o, lb.tasks)
		}
		pid := l.PID()
		switch {
		case o.Flags&iterSemundoTaskLost != 0:
			return nil, fmt.Errorf("undo list of pid %d does not fit the %d MiB BPF ring buffer: %w", pid, ringSize>>20, ErrIncomplete)
		case o.Flags&iterSemundoTaskTrunc != 0:
			return nil, fmt.Errorf("undo list of pid %d has more entries than this kernel lets BPF walk (2048 before Linux 5.17): %w", pid, ErrIncomplete)
		}
		if o.Flags&iterSemundoTaskRing != 0 {
			cs := b.chunks[o.Nonce]
			if uint32(len(cs)) != o.Chunks {
				return nil, fmt.Errorf("undo list of pid %d: %d of %d ring buffer chunks arrived: %w", pid, len(cs), o.Chunks, ErrIncomplete)
			}
			slices.SortFunc(cs, func(a, b chunk) int { return int(a.index) - int(b.index) })
			for _, c := range cs {
				lb.entries = append(lb.entries, c.entries...)
				lb.dropped += c.dropped
			}
		}
		if got := uint32(len(lb.entries) + lb.dropped); got != o.Entries {
			return nil, fmt.Errorf("undo list of pid %d: %d of %d entries arrived: %w", pid, got, o.Entries, ErrIncomplete)
		}
		if !slices.IsSortedFunc(lb.entries, cmpEntry) {
			slices.SortFunc(lb.entries, cmpEntry)
		}
		unstable := o.Flags&iterSemundoTaskUnstab != 0
		for i := 1; i < len(lb.entries); i++ {
			// The walk met an entry twice: lookup_undo moved it meanwhile.
			if lb.entries[i].Semid == lb.entries[i-1].Semid {
				unstable = true
			}
		}
		if unstable {
			s.unstable[id] = true
		}
		l.Entries = lb.entries
		s.Dropped += lb.dropped
		s.Lists = append(s.Lists, l)
	}
	return s, nil
}

// comm is commString, reusing the last name's string when it repeats.
func (b *builder) comm(c [16]int8) string {
	if !b.haveComm || c != b.lastComm {
		b.lastComm, b.lastName, b.haveComm = c, commString(c), true
	}
	return b.lastName
}

func cmpEntry(a, b Entry) int { return int(a.Semid) - int(b.Semid) }

// processes groups a list's tasks (its carrier and the others) by thread
// group.
func processes(owner iterSemundoTask, others []iterSemundoTask) []Process {
	if len(others) == 0 {
		return []Process{{PID: int(owner.Tgid), Comm: commString(owner.Comm), TIDs: []int{int(owner.Tid)}}}
	}
	byPID := make(map[int]*Process)
	var out []*Process
	for _, t := range append([]iterSemundoTask{owner}, others...) {
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

package reader

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/semundo/semundo/internal/errs"
	"github.com/semundo/semundo/internal/procfs"
	"golang.org/x/sys/unix"
)

// Errors a Reader returns, to be tested with errors.Is.
var (
	// ErrNotSupported: the kernel lacks something the reader needs (BTF,
	// the BPF task iterator, the BPF ring buffer, System V IPC).
	ErrNotSupported = errs.ErrNotSupported
	// ErrPermission: the caller may not load BPF programs.
	ErrPermission = fs.ErrPermission
	// ErrNoProcess: no process has the pid asked for.
	ErrNoProcess = errs.ErrNoProcess
	// ErrIncomplete: a list could not be read whole (too many entries, a
	// set too large, or a list that kept changing during every retry).
	ErrIncomplete = errors.New("undo list could not be read whole")
)

// ringSize is the ring buffer's size. A read of the iterator covers at most
// 32 KiB of task records, so this bounds the entries those tasks may carry
// before the reader falls back to one task per read.
const ringSize = 4 << 20

// retries bounds how often a pass is repeated for lists that changed while
// they were walked.
//
// A change is told by the list's first entry, which the kernel's
// lookup_undo takes off the list and puts back in front at every semop
// with SEM_UNDO. A walk that falls entirely within one such move (the
// entry off the list, not yet back) sees the list without that entry, and
// nothing tells it: a list in constant use by a running task may be read
// one entry short. Measured: 4 reads in 300 of a one-entry list that a
// thread of its task keeps changing in a loop (checkpoint's
// TestCaptureBlockedSemop under go test -race, before it stopped the task
// to read); 25 to 87 reads in 3,000 on the Intel Xeon of docs/benchmarks.md,
// for a process whose own thread calls semop with SEM_UNDO back to back.
// Tasks held still (frozen, stopped, seized) are read whole.
//
// Tried and dropped: taking the list's lock word held at the walk's end as
// a change too (lookup_undo moves entries under it). With that thread
// running, 27% of passes found it held, nine passes in a row often did
// (the read failed instead of coming back short), and 1 read in 3,000 was
// still short: a whole lock and unlock can fall between two reads of the
// walk, and the list carries no count of its changes that could tell.
const retries = 8

// Options tune Open. The zero value is right for normal use.
type Options struct {
	// Bounded selects the program variant for kernels without bpf_loop
	// (before 5.17) even where bpf_loop exists, so that tests can cover it.
	// That variant walks at most 2048 entries per list.
	Bounded bool
	// VerifierLog, when set, asks the kernel's verifier for its full log
	// (every branch, which slows loading) and receives it when loading
	// fails. Without it the error still carries the log's last lines.
	VerifierLog io.Writer
	// NoWaiters leaves blocked semop callers out of every Snapshot, sparing
	// a scan their cost; Snapshot.WaitersErr then says so.
	NoWaiters bool

	// Phases, when set, receives a line per step of Open (setup, probes,
	// btf, load, attach; for the open-coded scan setup, btf with its
	// kfunc probe, load) with its time, as in "btf 21.4ms": where a
	// command's time goes (semundo's SEMUNDO_DEBUG_PHASES=1).
	Phases io.Writer

	// sleepers, a power of two when set, replaces the waiter table's size
	// (sleepersSize), so that a test can fill it with a few threads.
	sleepers uint32
	// noTaskFilter makes ReadProcess walk every task as it does on
	// kernels before 6.1, so that tests cover that path.
	noTaskFilter bool
	// path, when not pathAuto, forces the open-coded scan or the task
	// iterator, so that tests cover both.
	path scanPath
	// ocRing, when set, replaces the open-coded scan's first ring buffer
	// size (openIterRingSize), so that a test can make it grow.
	ocRing uint32
	// noKbtf makes the open-coded scan's load take cilium/ebpf's way
	// through the kernel's BTF instead of package kbtf's, so that tests
	// compare the two.
	noKbtf bool
}

// Reader reads undo lists through a loaded BPF program: the open-coded scan
// or the task iterator. It is safe for concurrent use; passes are
// serialized. Close releases the kernel objects.
type Reader struct {
	mu sync.Mutex
	// oc is the open-coded scan, nil where the task iterator reads. coll,
	// iter and ring are the task iterator's, nil with the open-coded
	// scan.
	oc    *openIter
	coll  *ebpf.Collection
	iter  *link.Iter
	ring  *ringbuf.Reader
	rec   ringbuf.Record
	procf string
	// buf and lastLists carry the read buffer and the size of the last
	// pass to the next, sparing a scan most of its allocations.
	buf       []byte
	lastLists int
	// lists is the builders' scratch, kept for the next pass: at 10,000
	// lists it is a megabyte, and allocating it anew each pass made the
	// garbage collector a visible part of a scan's time.
	lists []listBuild
	// lastWaits is the number of waiters of the last pass: a scan of
	// 10,000 spares itself growing their slice (and the page faults of
	// the copies) by starting at about that size.
	lastWaits int
	// waitersErr is why snapshots carry no waiters, nil when they do.
	waitersErr error
	// noTaskFilter is Options.noTaskFilter.
	noTaskFilter bool
	// taskInfo is the filter a task-filtered link is created with, and
	// the one the open-coded scan applies.
	taskInfo iterTaskInfo
}

// Open loads the reader: from Linux 6.7 the open-coded scan, which walks
// every task in one program run; otherwise, or where that scan cannot
// load, the BPF task iterator, attached. It needs root, or CAP_BPF and
// CAP_PERFMON (CAP_SYS_ADMIN before Linux 5.8). opts may be nil.
func Open(opts *Options) (*Reader, error) {
	if opts == nil {
		opts = &Options{}
	}
	ph := newPhases(opts.Phases)
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return nil, fmt.Errorf("kernel BTF (/sys/kernel/btf/vmlinux) is missing: semundo needs Linux >= 5.8 built with CONFIG_DEBUG_INFO_BTF=y: %w", ErrNotSupported)
	}
	if err := raiseMemlock(); err != nil {
		return nil, err
	}
	// One decoding of the kernel's BTF (about 20-40 ms) serves the probes
	// and the loads: cilium/ebpf's LoadKernelSpec does not cache. The
	// open-coded scan's load needs none (kerneltypes.go).
	types := btf.NewCache()
	lopts := ebpf.CollectionOptions{Cache: types}
	if opts.VerifierLog != nil {
		lopts.Programs = ebpf.ProgramOptions{LogLevel: ebpf.LogLevelBranch, LogSizeStart: 1 << 26}
	}
	r := &Reader{procf: "/proc", noTaskFilter: opts.noTaskFilter}
	path := opts.path
	if path == pathAuto {
		path = testScanPath
	}
	if opts.Bounded {
		// The bounded variant is the task iterator's.
		path = pathSeq
	}
	if path == pathOpen || (path == pathAuto && !opts.Bounded) {
		oc, waitersErr, err := tryOpenIter(types, lopts, opts, ph)
		if err != nil && path == pathOpen {
			return nil, err
		}
		// Otherwise a kernel without it reads through the task iterator.
		if oc != nil {
			r.oc, r.waitersErr = oc, waitersErr
			return r, nil
		}
	}
	if err := r.openIter(opts, types, lopts, ph); err != nil {
		return nil, err
	}
	return r, nil
}

// tryOpenIter loads the open-coded scan where the kernel has it, reading
// the waiters too unless opts.NoWaiters, and says why its snapshots carry
// none when they do not.
func tryOpenIter(types *btf.Cache, lopts ebpf.CollectionOptions, opts *Options, ph *phases) (oc *openIter, waitersErr, err error) {
	if err := openIterKnown(); err != nil {
		return nil, nil, err
	}
	level, err := pidnsLevel(procfs.NewDefaultFS())
	if err != nil {
		return nil, nil, err
	}
	spec, err := openIterSpec(level)
	if err != nil {
		return nil, nil, err
	}
	ph.done("setup")
	var kt *kernelTypes
	kerr := errKbtfOff
	if !opts.noKbtf {
		kt, kerr = openIterKernel(spec)
	}
	switch {
	case kerr == nil:
		lopts.Programs.KernelTypes = kt.spec
	case errors.Is(kerr, errOpenIterMissing):
		openIterFailed(kerr)
		return nil, nil, kerr
	default:
		// kbtf could not read the kernel's BTF (or a test turned it
		// off): cilium/ebpf decodes it, as for the task iterator.
		if err := openIterSupport(types); err != nil {
			return nil, nil, err
		}
		id, err := taskStructID(types)
		if err != nil {
			return nil, nil, err
		}
		if err := setTaskStructID(spec, id); err != nil {
			return nil, nil, err
		}
	}
	ph.done("btf")
	waitersErr = errWaitersOff
	var sleepers uint32
	if !opts.NoWaiters {
		semQueue := func() (bool, error) { return kernelHasStruct(types, "sem_queue") }
		if kt != nil {
			semQueue = func() (bool, error) { return kt.semQueue, nil }
		}
		if waitersErr = waitersSupport(false, semQueue); waitersErr == nil {
			sleepers = opts.sleepersSize(ownersSize())
		}
		ph.done("probes")
	}
	oc, err = loadOpenIter(spec, types, lopts, opts.ocRing, sleepers)
	if err != nil {
		var ve *ebpf.VerifierError
		if sleepers == 0 && (errors.As(err, &ve) || errors.Is(err, ErrNotSupported)) {
			// Not worth a second try in this process. A verifier
			// that rejects the waiter code leaves the lists to this
			// scan, and a reader with waiters to the task iterator,
			// which reads them without it.
			openIterFailed(fmt.Errorf("%w: %w", errOpenIterMissing, err))
		}
		if opts.VerifierLog != nil {
			writeVerifierLog(opts.VerifierLog, err)
		}
		return nil, nil, fmt.Errorf("load the open-coded BPF scan: %w", err)
	}
	oc.kbtf = kt != nil
	ph.done("load")
	return oc, waitersErr, nil
}

// openIter loads and attaches the task iterator. The program takes the
// depth of the reader's PID namespace from the reader's task, not from
// pidnsLevel.
func (r *Reader) openIter(opts *Options, types *btf.Cache, lopts ebpf.CollectionOptions, ph *phases) error {
	spec, err := loadIter()
	if err != nil {
		return fmt.Errorf("load BPF object: %w", err)
	}
	owners := ownersSize()
	spec.Maps["owners"].MaxEntries = owners
	spec.Maps["records"].MaxEntries = ringSize
	ph.done("setup")

	prog, unused := "semundo_tasks", "semundo_tasks_bounded"
	if opts.Bounded || haveHelper(asm.FnLoop) != nil {
		prog, unused = unused, prog
	}
	delete(spec.Programs, unused)
	delete(spec.Programs, "semundo_floor")

	waitersErr := errWaitersOff
	if !opts.NoWaiters {
		// Options.Bounded, not the variant chosen: on a kernel without
		// bpf_loop the helper probe says what is missing; "asked for"
		// would blame an option nobody set.
		waitersErr = waitersSupport(opts.Bounded, func() (bool, error) { return kernelHasStruct(types, "sem_queue") })
	}
	// Without waiters the table is never touched (want_waiters stays 0
	// and the verifier drops that code): one slot, not a preallocated
	// array of four per task.
	var sleepers uint32
	if waitersErr == nil {
		sleepers = opts.sleepersSize(owners)
	}
	if err := setWaiters(spec, sleepers); err != nil {
		return err
	}
	ph.done("probes")
	if _, err := types.Kernel(); err != nil {
		return fmt.Errorf("read kernel BTF: %w (%w)", ErrNotSupported, err)
	}
	ph.done("btf")

	r.waitersErr = waitersErr
	r.coll, err = ebpf.NewCollectionWithOptions(spec, lopts)
	var ve *ebpf.VerifierError
	if err != nil && waitersErr == nil && errors.As(err, &ve) {
		// A verifier that rejects the waiter code must not cost the
		// lists: without want_waiters it proves that code dead and never
		// checks it. The error says why, for tests under CI to fail on.
		reason := strings.TrimSpace(verifierTail(ve.Log, 1))
		if opts.VerifierLog != nil {
			writeVerifierLog(opts.VerifierLog, err)
		}
		if serr := spec.Variables["want_waiters"].Set(uint32(0)); serr != nil {
			return fmt.Errorf("set want_waiters: %w", serr)
		}
		if r.coll, err = ebpf.NewCollectionWithOptions(spec, lopts); err == nil {
			r.waitersErr = fmt.Errorf("this kernel's verifier rejects the code that reads blocked semop callers (%q; SEMUNDO_DEBUG_VERIFIER=1 shows its log): %w", reason, ErrNotSupported)
		}
	}
	if err != nil {
		if opts.VerifierLog != nil {
			writeVerifierLog(opts.VerifierLog, err)
		}
		return loadError(err)
	}
	ph.done("load")
	r.iter, err = link.AttachIter(link.IterOptions{Program: r.coll.Programs[prog]})
	if err != nil {
		r.coll.Close()
		r.coll = nil
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return fmt.Errorf("attach BPF task iterator: %w (%w)", ErrPermission, err)
		}
		return fmt.Errorf("attach BPF task iterator (needs Linux >= 5.8): %w (%w)", ErrNotSupported, err)
	}
	r.ring, err = ringbuf.NewReader(r.coll.Maps["records"])
	if err != nil {
		r.iter.Close()
		r.iter = nil
		r.coll.Close()
		r.coll = nil
		return fmt.Errorf("open BPF ring buffer: %w", err)
	}
	ph.done("attach")
	return nil
}

// haveHelper says whether BPF programs of this kernel may call fn. The
// probe loads a kprobe program: cilium/ebpf has no probe for Tracing
// programs (it answers every Tracing question with an error, which made
// the reader pick its bounded variant on every kernel), and the helpers
// the iterator calls (bpf_loop, bpf_task_pt_regs) came to kprobes in the
// same release as to iterators.
func haveHelper(fn asm.BuiltinFunc) error {
	return features.HaveProgramHelper(ebpf.Kprobe, fn)
}

// writeVerifierLog writes the whole verifier log carried by err, if any.
func writeVerifierLog(w io.Writer, err error) {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		fmt.Fprintf(w, "%+v\n", ve)
	}
}

func loadError(err error) error {
	// The verifier refuses a program with EACCES as well as EINVAL: when it
	// has said why, that is the reason, not a missing privilege (an
	// unprivileged load fails before the verifier runs, with no log).
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) && len(ve.Log) > 0 {
		return &rejectedError{ve: ve, msg: fmt.Sprintf("load BPF iterator: this kernel's verifier rejected it (SEMUNDO_DEBUG_VERIFIER=1 shows the whole log; please report it with the kernel version): %v; the verifier's last lines:\n%s", err, verifierTail(ve.Log, verifierTailLines))}
	}
	switch {
	case errors.Is(err, unix.EPERM), errors.Is(err, unix.EACCES):
		if l := lockdown(); l != "" && l != "none" {
			return fmt.Errorf("kernel lockdown (%s) forbids BPF programs that read kernel memory: boot with lockdown=none: %w", l, ErrPermission)
		}
		return fmt.Errorf("loading BPF needs root, or CAP_BPF and CAP_PERFMON: %w", ErrPermission)
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("load BPF iterator: %w (%w)", ErrNotSupported, err)
	}
	return fmt.Errorf("load BPF iterator: %w", err)
}

// rejectedError is a program the verifier refused. It is neither a missing
// privilege (whatever errno the verifier chose: EACCES must not read as
// one) nor ErrNotSupported (a rejection of the reader on a kernel it
// targets is a defect to report, and tests must fail on it, not skip):
// it unwraps to nothing, and errors.As still finds the
// *ebpf.VerifierError with the whole log.
type rejectedError struct {
	ve  *ebpf.VerifierError
	msg string
}

func (e *rejectedError) Error() string { return e.msg }

// As hands out the verifier's error.
func (e *rejectedError) As(target any) bool {
	if p, ok := target.(**ebpf.VerifierError); ok {
		*p = e.ve
		return true
	}
	return false
}

// verifierTailLines is how much of the verifier's log an error carries: the
// reason is at the end, and a full log runs to millions of lines.
const verifierTailLines = 20

// verifierTail returns the last n non-blank lines of a verifier log,
// indented, after a line saying how many earlier ones were left out. It
// walks from the end: a branch-level log runs to millions of lines.
func verifierTail(log []string, n int) string {
	var kept []string
	i := len(log) - 1
	for ; i >= 0 && len(kept) < n; i-- {
		if strings.TrimSpace(log[i]) != "" {
			kept = append(kept, log[i])
		}
	}
	omitted := 0
	for ; i >= 0; i-- {
		if strings.TrimSpace(log[i]) != "" {
			omitted++
		}
	}
	var b strings.Builder
	if omitted > 0 {
		fmt.Fprintf(&b, "\t(%d earlier lines omitted)", omitted)
	}
	for j := len(kept) - 1; j >= 0; j-- {
		if b.Len() > 0 {
			b.WriteByte('\n')
		}
		b.WriteString("\t" + kept[j])
	}
	return b.String()
}

// lockdown returns the active kernel lockdown mode, or "" when unknown.
func lockdown() string {
	b, err := os.ReadFile("/sys/kernel/security/lockdown")
	if err != nil {
		return ""
	}
	s := string(b)
	if i := strings.IndexByte(s, '['); i >= 0 {
		if j := strings.IndexByte(s[i:], ']'); j > 0 {
			return s[i+1 : i+j]
		}
	}
	return ""
}

// ownersSize sizes the map that tells shared lists apart: room for every
// task twice over, so that the LRU never evicts an entry of the current pass.
func ownersSize() uint32 {
	n := uint32(1 << 16)
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return n
	}
	// The fourth field is "running/total" scheduling entities.
	f := strings.Fields(string(b))
	if len(f) < 4 {
		return n
	}
	_, total, ok := strings.Cut(f[3], "/")
	if !ok {
		return n
	}
	t, err := strconv.ParseUint(total, 10, 32)
	if err == nil && uint32(4*t) > n {
		n = uint32(4 * t)
	}
	return n
}

// sleepersSize is the waiter table's size for a reader of these options.
func (o *Options) sleepersSize(owners uint32) uint32 {
	if o.sleepers != 0 {
		return o.sleepers
	}
	return sleepersSize(owners)
}

// sleepersSize sizes the waiter table: a power of two, so that the program
// can mask a hash into it, at least owners (ownersSize: four times the
// tasks).
func sleepersSize(owners uint32) uint32 {
	n := uint32(1)
	for n < owners {
		n <<= 1
	}
	return n
}

// pidnsLevel returns the depth of the caller's PID namespace as the NSpid
// line of its status in /proc counts it: the number of ids less one. A
// /proc of the caller's own namespace (a container's) counts no level above
// it: the open-coded scan loads with this guess and corrects it.
func pidnsLevel(p procfs.FS) (int, error) {
	st, err := p.SelfStatus()
	if err != nil {
		return 0, fmt.Errorf("read PID namespace level: %w", err)
	}
	// Kernels before 4.1 have no NSpid line; they are far below 5.8.
	return max(len(st.NSpid)-1, 0), nil
}

// Close detaches the iterator and frees its maps.
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	if r.ring != nil {
		errs = append(errs, r.ring.Close())
		r.ring = nil
	}
	if r.iter != nil {
		errs = append(errs, r.iter.Close())
		r.iter = nil
	}
	if r.coll != nil {
		r.coll.Close()
		r.coll = nil
	}
	if r.oc != nil {
		errs = append(errs, r.oc.Close())
		r.oc = nil
	}
	return errors.Join(errs...)
}

// closed says whether Close has run.
func (r *Reader) closed() bool { return r.iter == nil && r.oc == nil }

// Scan reads every undo list of every task in the caller's PID namespace.
func (r *Reader) Scan() (*Snapshot, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed() {
		return nil, errors.New("reader is closed")
	}
	r.taskInfo = iterTaskInfo{}
	var it iterOpener
	if r.iter != nil {
		it = r.iter
	}
	return r.scan(it, true)
}

// scan runs passes of it until every list read whole (or retries run out).
// full says it visits every task: only such a pass sizes the next one.
func (r *Reader) scan(it iterOpener, full bool) (*Snapshot, error) {
	snap, err := r.pass(it, readSize, full)
	if err != nil {
		return nil, err
	}
	for try := 0; try < retries && len(snap.unstable) > 0; try++ {
		again, err := r.pass(it, readSize, full)
		if err != nil {
			return nil, err
		}
		snap.merge(again)
	}
	if len(snap.unstable) > 0 {
		var pids []string
		for id := range snap.unstable {
			if l := snap.byID(id); l != nil {
				pids = append(pids, strconv.Itoa(l.PID()))
			}
		}
		return nil, fmt.Errorf("undo list of pid %s changed during each of %d reads; retry: %w", strings.Join(pids, ", "), retries+1, ErrIncomplete)
	}
	snap.finish()
	snap.WaitersErr = r.waitersErr
	if r.waitersErr == nil {
		coll := r.coll
		if r.oc != nil {
			coll = r.oc.coll
		}
		// The count of this scan's passes: cleared after each scan,
		// not compared with the last scan's, because the open-coded
		// scan's count starts again at 0 when its program loads again.
		var lost uint64
		if err := coll.Variables["sleepers_lost"].Get(&lost); err != nil {
			snap.WaitersErr = fmt.Errorf("read the waiter table's count of lost sleepers: %w", err)
		} else if lost != 0 {
			snap.WaitersErr = fmt.Errorf("the waiter table had no room for %d sleepers in this scan's passes, so blocked tasks are missing; retry: %w", lost, ErrIncomplete)
			if err := coll.Variables["sleepers_lost"].Set(uint64(0)); err != nil {
				return nil, fmt.Errorf("clear the waiter table's count of lost sleepers: %w", err)
			}
		}
	}
	return snap, nil
}

// WaitersErr is nil when the reader's snapshots carry the blocked semop
// callers, and otherwise says why not (ErrNotSupported when the kernel
// lacks what reading them needs).
func (r *Reader) WaitersErr() error { return r.waitersErr }

// Read returns the undo list of the process (or thread) pid, or nil when it
// has none. A pid that does not exist is ErrNoProcess. It scans every task,
// so the list names every process that shares it; ReadProcess costs less.
func (r *Reader) Read(pid int) (*List, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	if _, err := os.Stat(fmt.Sprintf("%s/%d", r.procf, pid)); err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	snap, err := r.Scan()
	if err != nil {
		return nil, err
	}
	return snap.ByPID(pid), nil
}

// ReadProcess returns the same entries as Read, visiting from Linux 6.1
// only the threads of process pid (or thread pid alone, when it is not its
// process's leader) instead of every task. The list's Processes then name
// only those: not the other processes that share it (CLONE_SYSVSEM without
// CLONE_THREAD), which only Read and Scan see. Before 6.1 it walks every
// task, as Read does; so does the open-coded scan, which reports only the
// tasks asked for.
func (r *Reader) ReadProcess(pid int) (*List, error) {
	if pid <= 0 {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	st, err := procfs.NewFS(r.procf).Status(pid)
	if err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed() {
		return nil, errors.New("reader is closed")
	}
	var it iterOpener = r.iter
	full := true
	r.taskInfo = iterTaskInfo{}
	if r.oc != nil {
		// The scan visits the process's tasks alone, as a
		// task-filtered link does, from the same filter.
		it = nil
		if !r.noTaskFilter {
			r.taskInfo = processFilter(pid, st.Tgid)
			full = false
		}
	} else if !r.noTaskFilter {
		f := processFilter(pid, st.Tgid)
		if f, err := r.taskIter(f.tid, f.pid); err == nil {
			defer f.Close()
			it, full = f, false
		}
	}
	snap, err := r.scan(it, full)
	if err != nil {
		return nil, err
	}
	return snap.ByPID(pid), nil
}

// processFilter is the task filter for pid, whose thread group is tgid: a
// process by its pid, all its threads, as a full walk finds them even when
// the leader has exited; a thread that is not a leader has no process of
// its pid: that thread alone.
func processFilter(pid, tgid int) iterTaskInfo {
	if tgid != pid {
		return iterTaskInfo{tid: uint32(pid)}
	}
	return iterTaskInfo{pid: uint32(pid)}
}

// readSize is the buffer for one read of the iterator: the seq file hands
// out at most 32 KiB a read on 4 KiB pages, more on larger ones.
const readSize = 256 << 10

// maxRead is the largest read size pass is given.
const maxRead = readSize

// openCodedTries bounds how often one pass grows the open-coded scan's ring
// buffer: it is sized to what the first try needed, twice over.
const openCodedTries = 3

// pass reads every list (and waiter) once: with the open-coded scan, or
// through the task iterator iter.
func (r *Reader) pass(iter iterOpener, readSize int, full bool) (*Snapshot, error) {
	// Sized from the last full pass, an eighth more.
	fresh := func() *builder {
		b := newBuilder(r.lastLists+r.lastLists/8+16, r.lastWaits+r.lastWaits/8, r.lists)
		r.lists = nil // the builder's now, until it is handed back
		return b
	}
	b := fresh()
	defer func() { r.lists = b.release() }()
	for try := 0; r.oc != nil; try++ {
		lost, err := r.oc.pass(b, r.taskInfo)
		if err != nil {
			return nil, err
		}
		if !lost {
			break
		}
		if try == openCodedTries {
			return nil, fmt.Errorf("undo lists outgrew the open-coded scan's BPF ring buffer in each of %d passes; retry: %w", openCodedTries+1, ErrIncomplete)
		}
		b = fresh()
	}
	if iter != nil {
		if err := r.iterPass(b, iter, readSize); err != nil {
			return nil, err
		}
		if b.lost && readSize > taskSize {
			// Too many chunks for the ring in one read: one task per read.
			return r.pass(iter, taskSize, full)
		}
	}
	if full {
		r.lastLists = len(b.lists)
		r.lastWaits = len(b.waits)
	}
	return b.snapshot()
}

// iterPass runs the iterator once, reading readSize bytes of task records
// at a time and draining the ring buffer after each read, so the ring only
// ever holds the entries of the tasks of one read.
func (r *Reader) iterPass(b *builder, iter iterOpener, readSize int) error {
	if err := r.drain(nil); err != nil {
		return err
	}
	it, err := iter.Open()
	if err != nil {
		return fmt.Errorf("open BPF task iterator: %w", err)
	}
	defer it.Close()

	if r.buf == nil {
		r.buf = make([]byte, maxRead)
	}
	buf := r.buf[:readSize]
	var pending []byte
	for {
		n, err := it.Read(buf)
		if n > 0 {
			data := buf[:n]
			if len(pending) > 0 {
				pending = append(pending, data...)
				data = pending
			}
			rest, perr := b.tasks(data)
			if perr != nil {
				return perr
			}
			pending = append(pending[:0], rest...)
			if r.ring.AvailableBytes() > 0 {
				if err := r.drain(b); err != nil {
					return err
				}
			}
		}
		if err == io.EOF || (n == 0 && err == nil) {
			break
		}
		if err != nil {
			return fmt.Errorf("read BPF task iterator: %w", err)
		}
	}
	if len(pending) != 0 {
		return fmt.Errorf("BPF task iterator ended inside a record (%d bytes left)", len(pending))
	}
	return r.drain(b)
}

// drain hands every record in the ring buffer to b (or drops them when b is
// nil) without blocking.
func (r *Reader) drain(b *builder) error {
	return drainRing(r.ring, &r.rec, func(raw []byte) error {
		if b == nil {
			return nil
		}
		return b.record(raw)
	})
}

// drainRing hands every record in ring to each, through rec, without
// blocking.
func drainRing(ring *ringbuf.Reader, rec *ringbuf.Record, each func(raw []byte) error) error {
	ring.SetDeadline(time.Unix(1, 0))
	for {
		err := ring.ReadInto(rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read BPF ring buffer: %w", err)
		}
		if err := each(rec.RawSample); err != nil {
			return err
		}
	}
}

// commString returns the NUL-terminated comm as a string.
func commString(c [16]int8) string {
	var b [16]byte
	n := 0
	for ; n < len(c) && c[n] != 0; n++ {
		b[n] = byte(c[n])
	}
	if utf8.Valid(b[:n]) {
		return string(b[:n])
	}
	return string(bytes.ToValidUTF8(b[:n], []byte("?")))
}

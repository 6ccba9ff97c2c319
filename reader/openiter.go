package reader

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/ringbuf"
)

// scanPath is how a Reader walks the tasks for their undo lists.
type scanPath int

const (
	// pathAuto: the open-coded scan where the kernel has it (and, for a
	// reader with waiters, its verifier takes the waiter code), the
	// seq_file task iterator otherwise.
	pathAuto scanPath = iota
	// pathSeq: the seq_file task iterator, one seq step per task.
	pathSeq
	// pathOpen: the open-coded scan, on any kernel that has it (Open
	// fails on one that does not).
	pathOpen
)

// testScanPath replaces pathAuto in every Open: the package's tests set it
// (export_test.go) to run themselves on either path.
var testScanPath = pathAuto

// errOpenIterMissing: the kernel lacks a kfunc the open-coded scan calls.
var errOpenIterMissing = errors.New("the kernel has no open-coded BPF task iterator (Linux >= 6.7 has)")

// openIterKfuncs are the kfuncs openiter.bpf.c calls.
var openIterKfuncs = []string{"bpf_iter_task_new", "bpf_iter_task_next", "bpf_iter_task_destroy", "bpf_rcu_read_lock", "bpf_rcu_read_unlock", "bpf_task_from_pid", "bpf_task_release"}

// openIterProbe caches, for the life of the process, whether the
// open-coded scan can be used: the kernel's answer does not change, and a
// load the verifier refused is not worth repeating in every Open.
var openIterProbe struct {
	mu   sync.Mutex
	done bool
	err  error
}

// openIterSupport says whether the kernel has every kfunc the open-coded
// scan calls, reading their names in the kernel's BTF (which the load needs
// anyway) instead of loading a probe program.
func openIterSupport(types *btf.Cache) error {
	openIterProbe.mu.Lock()
	defer openIterProbe.mu.Unlock()
	if openIterProbe.done {
		return openIterProbe.err
	}
	kernel, err := types.Kernel()
	if err != nil {
		return fmt.Errorf("read kernel BTF: %w (%w)", ErrNotSupported, err)
	}
	for _, name := range openIterKfuncs {
		var fn *btf.Func
		if err := kernel.TypeByName(name, &fn); err != nil {
			openIterProbe.err = fmt.Errorf("%w: no kfunc %s: %w", errOpenIterMissing, name, ErrNotSupported)
			break
		}
	}
	openIterProbe.done = true
	return openIterProbe.err
}

// openIterKnown returns the remembered reason the open-coded scan cannot
// be used, nil when there is none (yet).
func openIterKnown() error {
	openIterProbe.mu.Lock()
	defer openIterProbe.mu.Unlock()
	return openIterProbe.err
}

// openIterFailed remembers a load of the open-coded scan that failed, so
// that later Opens of the process go straight to the seq_file iterator.
func openIterFailed(err error) {
	openIterProbe.mu.Lock()
	defer openIterProbe.mu.Unlock()
	openIterProbe.done, openIterProbe.err = true, err
}

// openIter is the open-coded scan: one run of a BPF_PROG_TYPE_SYSCALL
// program walks every task and leaves the records of the pass in a ring
// buffer, in batches, which user space reads after the run.
type openIter struct {
	spec  *ebpf.CollectionSpec
	lopts ebpf.CollectionOptions
	coll  *ebpf.Collection
	ring  *ringbuf.Reader
	rec   ringbuf.Record
	size  uint32
	// kbtf: the load took the kfunc IDs and the CO-RE types from package
	// kbtf (kerneltypes.go), not from cilium/ebpf's decoding.
	kbtf bool
}

// scanPIDNSLevel is semundo_scan's SCAN_PIDNS_LEVEL.
const scanPIDNSLevel = 2

// openIterRingMin is the open-coded scan's smallest first ring buffer: a
// 10,000 holder pass with 2 entries of 8 semaphores each needs 1.3 MiB.
const openIterRingMin = 4 << 20

// openIterRingFirstMax bounds the first ring buffer (the kernel allocates
// all of it at once); lists that need more make it grow.
const openIterRingFirstMax = 64 << 20

// openIterRingSize sizes the first ring buffer for every task holding a
// short list (160 bytes: its record and two small entries), so that a
// command on a machine of many tasks does not pay for a pass that overflows
// and a second load: owners is ownersSize, four slots per task.
func openIterRingSize(owners uint32) uint32 {
	n := uint32(openIterRingMin)
	for uint64(n) < uint64(owners)/4*160 && n < openIterRingFirstMax {
		n <<= 1
	}
	return n
}

// openIterRingMax bounds how far a pass grows the ring buffer.
const openIterRingMax = 1 << 30

// openIterSpec is the open-coded scan's object for a reader at PID
// namespace depth level (pass corrects it when the program finds
// another).
func openIterSpec(level int) (*ebpf.CollectionSpec, error) {
	spec, err := loadOpeniter()
	if err != nil {
		return nil, fmt.Errorf("load open-coded BPF object: %w", err)
	}
	delete(spec.Programs, "semundo_scan_floor")
	if err := spec.Variables["pidns_level"].Set(uint32(level)); err != nil {
		return nil, fmt.Errorf("set pidns_level: %w", err)
	}
	return spec, nil
}

// loadOpenIter loads the open-coded scan of spec (openIterSpec), reading
// blocked semop callers too when sleepers, the size of their table, is not
// 0.
func loadOpenIter(spec *ebpf.CollectionSpec, types *btf.Cache, lopts ebpf.CollectionOptions, ring, sleepers uint32) (*openIter, error) {
	owners := ownersSize()
	spec.Maps["owners"].MaxEntries = owners
	if err := setWaiters(spec, sleepers); err != nil {
		return nil, err
	}
	lopts.Cache = types
	o := &openIter{spec: spec, lopts: lopts}
	if ring == 0 {
		ring = openIterRingSize(owners)
	}
	if err := o.load(ring); err != nil {
		return nil, err
	}
	return o, nil
}

// load (re)creates the collection with a ring buffer of size bytes.
func (o *openIter) load(size uint32) error {
	spec := o.spec.Copy()
	spec.Maps["records"].MaxEntries = size
	coll, err := ebpf.NewCollectionWithOptions(spec, o.lopts)
	if err != nil {
		return loadError(err)
	}
	ring, err := ringbuf.NewReader(coll.Maps["records"])
	if err != nil {
		coll.Close()
		return fmt.Errorf("open the open-coded scan's BPF ring buffer: %w", err)
	}
	o.Close()
	o.coll, o.ring, o.size = coll, ring, size
	return nil
}

// Close frees the program and its maps.
func (o *openIter) Close() error {
	var err error
	if o.ring != nil {
		err = o.ring.Close()
		o.ring = nil
	}
	if o.coll != nil {
		o.coll.Close()
		o.coll = nil
	}
	return err
}

// pass runs the program once over every task (or those f names) and hands
// the records to b. It reports lost when the ring buffer was too small for
// them, or the program was loaded for another PID namespace depth than the
// reader's: b is then incomplete, and the program ready for the next try.
func (o *openIter) pass(b *builder, f iterTaskInfo) (lost bool, err error) {
	vars := o.coll.Variables
	for name, v := range map[string]any{"filter_tid": f.tid, "filter_tgid": f.pid, "ring_bytes": uint64(0), "batches_lost": uint64(0)} {
		if err := vars[name].Set(v); err != nil {
			return false, fmt.Errorf("set %s: %w", name, err)
		}
	}
	ret, err := o.coll.Programs["semundo_scan"].Run(&ebpf.RunOptions{})
	if err != nil {
		return false, fmt.Errorf("run the open-coded BPF scan: %w", err)
	}
	switch ret {
	case 0:
	case scanPIDNSLevel:
		// The NSpid line counted the levels in a /proc of another PID
		// namespace (a container's own, which shows none above it): load
		// again with the depth the program found, and run again.
		var level uint32
		if err := vars["reader_level"].Get(&level); err != nil {
			return false, fmt.Errorf("read reader_level: %w", err)
		}
		if err := o.spec.Variables["pidns_level"].Set(level); err != nil {
			return false, fmt.Errorf("set pidns_level: %w", err)
		}
		return true, o.load(o.size)
	default:
		return false, fmt.Errorf("the open-coded BPF scan returned %d", ret)
	}
	if err := o.drain(b); err != nil {
		return false, err
	}
	var lostBatches, want uint64
	if err := vars["batches_lost"].Get(&lostBatches); err != nil {
		return false, fmt.Errorf("read batches_lost: %w", err)
	}
	if lostBatches == 0 && !b.lost {
		return false, nil
	}
	if err := vars["ring_bytes"].Get(&want); err != nil {
		return false, fmt.Errorf("read ring_bytes: %w", err)
	}
	size := o.size * 2
	for uint64(size) < 2*want && size < openIterRingMax {
		size *= 2
	}
	if size > openIterRingMax {
		return false, fmt.Errorf("the undo lists need %d bytes, more than the %d MiB the open-coded scan's ring buffer may take: %w", want, openIterRingMax>>20, ErrIncomplete)
	}
	return true, o.load(size)
}

// drain hands every record in the ring buffer to b without blocking.
func (o *openIter) drain(b *builder) error {
	return drainRing(o.ring, &o.rec, func(raw []byte) error {
		if len(raw) < batchSize || ne.Uint32(raw) != iterSemundoBatchMagic {
			return b.record(raw)
		}
		n := int(ne.Uint32(raw[4:]))
		if n > len(raw)-batchSize {
			return fmt.Errorf("BPF ring buffer batch claims %d bytes, has %d", n, len(raw)-batchSize)
		}
		// A batch holds whole records: the program flushes before one
		// that would not fit.
		rest, err := b.tasks(raw[batchSize : batchSize+n])
		if err != nil {
			return err
		}
		if len(rest) != 0 {
			return fmt.Errorf("BPF ring buffer batch ends inside a record (%d bytes left)", len(rest))
		}
		return nil
	})
}

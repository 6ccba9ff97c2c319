package reader

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/semundo/semundo/internal/kbtf"
)

// The open-coded scan needs three things of the kernel's BTF: the type IDs
// of the kfuncs it calls, its CO-RE relocations, and (for waiters) whether
// struct sem_queue exists. cilium/ebpf answers the first two by decoding
// the whole of the kernel's BTF, 20-30 ms on the machines of
// docs/benchmarks.md, two thirds of what a one-process `semundo show`
// costs. So the open-coded scan's load gets them from package kbtf
// instead: the kfunc calls carry their IDs when cilium/ebpf sees them (and
// no kfunc mark, so it does not look them up again), and the relocations
// run against kbtf's subset of the kernel's types (ProgramOptions.
// KernelTypes). The subset numbers its types anew, so the one kernel type
// ID the program needs besides the kfuncs', task_struct's, is a constant
// set at load (task_struct_btf_id). The task iterator's load does not
// take this path: cilium/ebpf finds an iterator's attach target in the
// kernel's BTF itself, with no way to hand it the ID.

// kernelTypes is what the open-coded scan's load needs of the kernel's BTF.
type kernelTypes struct {
	// spec is the subset CO-RE relocates against.
	spec *btf.Spec
	// semQueue: the kernel has struct sem_queue (waitersSupport).
	semQueue bool
}

// kfuncNames are the kfuncs spec's programs call.
func kfuncNames(spec *ebpf.CollectionSpec) []string {
	var names []string
	for _, p := range spec.Programs {
		for i := range p.Instructions {
			if ins := &p.Instructions[i]; ins.IsKfuncCall() {
				names = append(names, ins.Reference())
			}
		}
	}
	return names
}

// setKfuncIDs gives spec's kfunc calls their functions' type IDs in the
// kernel's BTF, which ids must all have, taking off cilium/ebpf's kfunc
// mark.
func setKfuncIDs(spec *ebpf.CollectionSpec, ids map[string]btf.TypeID) {
	for _, p := range spec.Programs {
		for i := range p.Instructions {
			ins := &p.Instructions[i]
			if !ins.IsKfuncCall() {
				continue
			}
			*ins = withoutKfuncMark(*ins)
			ins.Constant, ins.Offset = int64(ids[ins.Reference()]), 0
		}
	}
}

// taskStructID is struct task_struct's type ID in the kernel's BTF,
// decoded by cilium/ebpf into types.
func taskStructID(types *btf.Cache) (btf.TypeID, error) {
	kernel, err := types.Kernel()
	if err != nil {
		return 0, fmt.Errorf("read kernel BTF: %w (%w)", ErrNotSupported, err)
	}
	var task *btf.Struct
	if err := kernel.TypeByName("task_struct", &task); err != nil {
		return 0, fmt.Errorf("the kernel's BTF has no struct task_struct: %w (%w)", ErrNotSupported, err)
	}
	return kernel.TypeID(task)
}

// setTaskStructID sets the program's task_struct_btf_id, which it casts
// task pointers with.
func setTaskStructID(spec *ebpf.CollectionSpec, id btf.TypeID) error {
	if err := spec.Variables["task_struct_btf_id"].Set(uint32(id)); err != nil {
		return fmt.Errorf("set task_struct_btf_id: %w", err)
	}
	return nil
}

// withoutKfuncMark is ins with the metadata cilium/ebpf's loader reads
// (symbol, reference, source line, function and CO-RE information) but
// not the kfunc mark it sets in the ELF reader, which has no exported
// key: a call without it is marshalled as it is.
func withoutKfuncMark(ins asm.Instruction) asm.Instruction {
	out := asm.Instruction{OpCode: ins.OpCode, Dst: ins.Dst, Src: ins.Src, Offset: ins.Offset, Constant: ins.Constant}
	if s := ins.Symbol(); s != "" {
		out = out.WithSymbol(s)
	}
	if r := ins.Reference(); r != "" {
		out = out.WithReference(r)
	}
	if s := ins.Source(); s != nil {
		out = out.WithSource(s)
	}
	if fn := btf.FuncMetadata(&ins); fn != nil {
		out = btf.WithFuncMetadata(out, fn)
	}
	if relo := btf.CORERelocationMetadata(&ins); relo != nil {
		out = btf.WithCORERelocationMetadata(out, relo)
	}
	return out
}

// localTypeNames are the names of spec's named types, flavours
// (___suffix) cut off as CO-RE does: a superset of the types its
// relocations look up in the kernel.
func localTypeNames(spec *ebpf.CollectionSpec) []string {
	if spec.Types == nil {
		return nil
	}
	var names []string
	for typ, err := range spec.Types.All() {
		if err != nil {
			break
		}
		switch typ.(type) {
		case *btf.Struct, *btf.Union, *btf.Enum, *btf.Typedef, *btf.Fwd:
		default:
			continue
		}
		n := typ.TypeName()
		if i := strings.LastIndex(n, "___"); i > 0 {
			n = n[:i]
		}
		if n != "" {
			names = append(names, n)
		}
	}
	return names
}

// openIterKernel resolves spec's kfunc calls, sets its task_struct_btf_id
// and returns the kernel types its load relocates against. An error
// wrapping errOpenIterMissing means the kernel lacks the scan; any other,
// that kbtf could not read the kernel's BTF (the load then takes
// cilium/ebpf's way).
func openIterKernel(spec *ebpf.CollectionSpec) (*kernelTypes, error) {
	kt, err := kbtf.Open()
	if err != nil {
		return nil, err
	}
	defer kt.Close()
	names := localTypeNames(spec)
	kfuncs := kfuncNames(spec)
	found := kt.Find(kfuncs, append(names, "task_struct", "sem_queue"))
	for _, name := range kfuncs {
		if _, ok := found.Funcs[name]; !ok {
			return nil, fmt.Errorf("%w: no kfunc %s: %w", errOpenIterMissing, name, ErrNotSupported)
		}
	}
	var roots []btf.TypeID
	for _, n := range names {
		roots = append(roots, found.Types[n]...)
	}
	blob, err := kt.Subset(roots)
	if err != nil {
		return nil, err
	}
	s, err := btf.LoadSpecFromReader(bytes.NewReader(blob))
	if err != nil {
		return nil, fmt.Errorf("the subset of the kernel's BTF: %w", err)
	}
	var task btf.TypeID
	for _, id := range found.Types["task_struct"] {
		if kt.IsStruct(id) {
			task = id
			break
		}
	}
	if task == 0 {
		return nil, fmt.Errorf("the kernel's BTF has no struct task_struct: %w", ErrNotSupported)
	}
	// Last: the spec is changed only once kbtf has all it needs, so that
	// the fallback to cilium/ebpf's way gets it as it was.
	setKfuncIDs(spec, found.Funcs)
	if err := setTaskStructID(spec, task); err != nil {
		return nil, err
	}
	semQueue := false
	for _, id := range found.Types["sem_queue"] {
		semQueue = semQueue || kt.IsStruct(id)
	}
	return &kernelTypes{spec: s, semQueue: semQueue}, nil
}

// errKbtfOff: Options.noKbtf is set.
var errKbtfOff = errors.New("kbtf is turned off")

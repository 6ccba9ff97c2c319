// Package kbtf reads the little that loading semundo's open-coded scan needs
// from the kernel's BTF (/sys/kernel/btf/vmlinux), without decoding it all.
//
// cilium/ebpf decodes the whole of the kernel's BTF before it relocates a
// program against it or resolves a kfunc: it indexes every name (about
// 100,000 of them) and inflates every type reachable from the ones it
// looks up, pointers included, which from struct task_struct is a large
// part of the kernel. On the machines of docs/benchmarks.md that is 20-30
// ms, most of what a one-process `semundo show` costs. This package walks
// the raw types instead: Find gives the type IDs of functions (kfuncs) and
// named types, and Subset writes a small BTF blob for CO-RE relocation
// (ebpf.ProgramOptions.KernelTypes) with only the types a field relocation
// can look at: the named types asked for, and what they hold by value.
//
// A field relocation never follows a pointer (each load through a pointer
// is its own relocation, against the pointed-to type by name), and any two
// pointers are compatible for it. So a pointer is kept, and what it points
// to only when it is kept for itself; every other pointer points to void.
// The blob numbers its types anew: a type ID relocation
// (bpf_core_type_id_kernel) against it would give the wrong ID, and the
// program takes the IDs it needs from Find instead.
package kbtf

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// VMLinux is where the kernel exposes its BTF.
const VMLinux = "/sys/kernel/btf/vmlinux"

// ErrFormat: the data is not BTF this package can read (a malformed or
// truncated blob, an unknown kind, another byte order).
var ErrFormat = errors.New("not readable BTF")

// BTF kinds (include/uapi/linux/btf.h).
const (
	kindInt       = 1
	kindPtr       = 2
	kindArray     = 3
	kindStruct    = 4
	kindUnion     = 5
	kindEnum      = 6
	kindFwd       = 7
	kindTypedef   = 8
	kindVolatile  = 9
	kindConst     = 10
	kindRestrict  = 11
	kindFunc      = 12
	kindFuncProto = 13
	kindVar       = 14
	kindDatasec   = 15
	kindFloat     = 16
	kindDeclTag   = 17
	kindTypeTag   = 18
	kindEnum64    = 19
)

const (
	headerLen = 24
	recordLen = 12 // name_off, info, size or type
	magic     = 0xeb9f
)

var ne = binary.NativeEndian

// Types is a raw BTF blob indexed by type ID. It reads the blob in place:
// Parse's caller must keep it unchanged while Types is in use; Close
// unmaps the one Open mapped.
type Types struct {
	raw   []byte
	types []byte // the type section
	strs  []byte // the string section
	// offs[id] is where type id starts in types; offs[0] is void's.
	offs   []uint32
	munmap bool
}

// Open reads the kernel's BTF (mapped, not copied, where the kernel lets
// it be). Close releases it.
func Open() (*Types, error) {
	f, err := os.Open(VMLinux)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	raw, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_PRIVATE)
	mapped := err == nil
	if !mapped {
		if raw, err = os.ReadFile(VMLinux); err != nil {
			return nil, err
		}
	}
	t, err := Parse(raw)
	if err != nil {
		if mapped {
			unix.Munmap(raw)
		}
		return nil, fmt.Errorf("%s: %w", VMLinux, err)
	}
	t.munmap = mapped
	return t, nil
}

// Close releases the blob; t is unusable after it.
func (t *Types) Close() error {
	var err error
	if t.munmap && t.raw != nil {
		err = unix.Munmap(t.raw)
	}
	t.raw, t.types, t.strs, t.offs = nil, nil, nil, nil
	return err
}

// Parse indexes a raw BTF blob of the native byte order (not split BTF: a
// module's types start after vmlinux's).
func Parse(raw []byte) (*Types, error) {
	if len(raw) < headerLen {
		return nil, fmt.Errorf("%d bytes, shorter than a header: %w", len(raw), ErrFormat)
	}
	if ne.Uint16(raw) != magic {
		return nil, fmt.Errorf("magic %#x, want %#x in native byte order: %w", ne.Uint16(raw), magic, ErrFormat)
	}
	hdrLen := uint64(ne.Uint32(raw[4:]))
	typeOff, typeLen := uint64(ne.Uint32(raw[8:])), uint64(ne.Uint32(raw[12:]))
	strOff, strLen := uint64(ne.Uint32(raw[16:])), uint64(ne.Uint32(raw[20:]))
	size := uint64(len(raw))
	if hdrLen < headerLen || hdrLen > size ||
		hdrLen+typeOff+typeLen > size || hdrLen+strOff+strLen > size {
		return nil, fmt.Errorf("sections outside the blob's %d bytes: %w", size, ErrFormat)
	}
	t := &Types{
		raw:   raw,
		types: raw[hdrLen+typeOff : hdrLen+typeOff+typeLen],
		strs:  raw[hdrLen+strOff : hdrLen+strOff+strLen],
	}
	if len(t.strs) == 0 || t.strs[0] != 0 || t.strs[len(t.strs)-1] != 0 {
		return nil, fmt.Errorf("string section not a run of NUL-terminated strings: %w", ErrFormat)
	}
	// About one type per 25 bytes in the kernels seen.
	t.offs = make([]uint32, 1, len(t.types)/24+1)
	for off := 0; off < len(t.types); {
		n, err := t.recordSize(off)
		if err != nil {
			return nil, fmt.Errorf("type %d: %w", len(t.offs), err)
		}
		t.offs = append(t.offs, uint32(off))
		off += n
	}
	return t, nil
}

// recordSize is the size of the record at off in the type section, its
// kind's data included.
func (t *Types) recordSize(off int) (int, error) {
	if off+recordLen > len(t.types) {
		return 0, fmt.Errorf("record at %d runs past the type section: %w", off, ErrFormat)
	}
	info := ne.Uint32(t.types[off+4:])
	vlen := int(info & 0xffff)
	n := recordLen
	switch kind(info) {
	case kindInt, kindVar, kindDeclTag:
		n += 4
	case kindArray:
		n += 12
	case kindStruct, kindUnion, kindDatasec, kindEnum64:
		n += 12 * vlen
	case kindEnum, kindFuncProto:
		n += 8 * vlen
	case kindPtr, kindFwd, kindTypedef, kindVolatile, kindConst, kindRestrict, kindFunc, kindFloat, kindTypeTag:
	default:
		return 0, fmt.Errorf("unknown kind %d: %w", kind(info), ErrFormat)
	}
	if off+n > len(t.types) {
		return 0, fmt.Errorf("record at %d runs past the type section: %w", off, ErrFormat)
	}
	return n, nil
}

func kind(info uint32) int { return int(info>>24) & 0x1f }

// Len is the number of types, void (ID 0) included.
func (t *Types) Len() int { return len(t.offs) }

// name is the name of the record at off, nil for none or a bad offset.
func (t *Types) name(off uint32) []byte {
	return t.str(ne.Uint32(t.types[off:]))
}

// str is the string at offset no of the string section, nil for none or
// a bad offset.
func (t *Types) str(no uint32) []byte {
	if no == 0 || int(no) >= len(t.strs) {
		return nil
	}
	s := t.strs[no:]
	return s[:bytes.IndexByte(s, 0)]
}

// Found is what Find found, by name.
type Found struct {
	// Funcs is the type ID of each function (BTF_KIND_FUNC) asked for
	// that the kernel has, the first where several share a name.
	Funcs map[string]btf.TypeID
	// Types is every struct, union, enum, typedef and forward declaration
	// of each name asked for that the kernel has.
	Types map[string][]btf.TypeID
}

// Find walks the types once for the functions named in funcs and the named
// types (structs, unions, enums, typedefs, forward declarations) named in
// types.
func (t *Types) Find(funcs, types []string) Found {
	f := Found{Funcs: make(map[string]btf.TypeID, len(funcs)), Types: make(map[string][]btf.TypeID, len(types))}
	wantFn := make(map[string]bool, len(funcs))
	wantTy := make(map[string]bool, len(types))
	// Most names are neither: a name's length and first byte rule out
	// nearly all of them before a map lookup.
	var maybe [64][256]bool
	for _, n := range funcs {
		wantFn[n] = true
		if n != "" && len(n) < 64 {
			maybe[len(n)][n[0]] = true
		}
	}
	for _, n := range types {
		wantTy[n] = true
		if n != "" && len(n) < 64 {
			maybe[len(n)][n[0]] = true
		}
	}
	for id := 1; id < len(t.offs); id++ {
		off := t.offs[id]
		k := kind(ne.Uint32(t.types[off+4:]))
		switch k {
		case kindFunc, kindStruct, kindUnion, kindEnum, kindEnum64, kindTypedef, kindFwd:
		default:
			continue
		}
		n := t.name(off)
		if len(n) == 0 || len(n) < 64 && !maybe[len(n)][n[0]] {
			continue
		}
		if k == kindFunc {
			if _, dup := f.Funcs[string(n)]; !dup && wantFn[string(n)] {
				f.Funcs[string(n)] = btf.TypeID(id)
			}
		} else if wantTy[string(n)] {
			f.Types[string(n)] = append(f.Types[string(n)], btf.TypeID(id))
		}
	}
	return f
}

// IsStruct reports whether type id is a struct.
func (t *Types) IsStruct(id btf.TypeID) bool {
	return int(id) > 0 && int(id) < len(t.offs) && kind(ne.Uint32(t.types[t.offs[id]+4:])) == kindStruct
}

// Subset writes a BTF blob of the types roots and every type they hold by
// value, numbered anew from 1 in the order of their IDs, with a string
// section of their names alone. A pointer is kept but not followed: one to
// a type that is not kept points to void. See the package doc for why that
// is all a CO-RE field relocation looks at; the new IDs are not the
// kernel's, so a type ID relocation against the blob would be wrong.
func (t *Types) Subset(roots []btf.TypeID) ([]byte, error) {
	newID := make(map[btf.TypeID]uint32, 4*len(roots))
	queue := append([]btf.TypeID(nil), roots...)
	for len(queue) > 0 {
		id := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if id == 0 {
			continue
		}
		if _, ok := newID[id]; ok {
			continue
		}
		if int(id) >= len(t.offs) {
			return nil, fmt.Errorf("type ID %d past the last, %d: %w", id, len(t.offs)-1, ErrFormat)
		}
		newID[id] = 0
		t.byValue(id, func(ref btf.TypeID) { queue = append(queue, ref) })
	}
	kept := make([]btf.TypeID, 0, len(newID))
	for id := range newID {
		kept = append(kept, id)
	}
	slices.Sort(kept)
	for i, id := range kept {
		newID[id] = uint32(i + 1)
	}
	var types []byte
	strs := []byte{0}
	strOff := map[uint32]uint32{0: 0}
	name := func(p []byte) {
		no := ne.Uint32(p)
		if o, ok := strOff[no]; ok {
			ne.PutUint32(p, o)
			return
		}
		o := uint32(len(strs))
		strs = append(append(strs, t.str(no)...), 0)
		strOff[no] = o
		ne.PutUint32(p, o)
	}
	for _, id := range kept {
		at := len(types)
		off := int(t.offs[id])
		types = append(types, t.types[off:off+t.size(int(id))]...)
		rec := types[at:]
		name(rec)
		info := ne.Uint32(rec[4:])
		vlen := int(info & 0xffff)
		data := rec[recordLen:]
		switch kind(info) {
		case kindStruct, kindUnion, kindEnum64:
			for i := range vlen {
				name(data[12*i:])
			}
		case kindEnum, kindFuncProto:
			for i := range vlen {
				name(data[8*i:])
			}
		}
		var bad error
		t.refsOf(rec, true, func(ref *uint32) {
			n, ok := newID[btf.TypeID(*ref)]
			switch {
			case ok:
				*ref = n
			case *ref == 0:
			default:
				// Only a pointer's target is left out.
				if kind(info) != kindPtr {
					bad = fmt.Errorf("type %d refers to type %d, which was not kept: %w", id, *ref, ErrFormat)
				}
				*ref = 0
			}
		})
		if bad != nil {
			return nil, bad
		}
	}
	out := make([]byte, headerLen, headerLen+len(types)+len(strs))
	ne.PutUint16(out, magic)
	out[2] = 1 // version
	ne.PutUint32(out[4:], headerLen)
	ne.PutUint32(out[8:], 0)
	ne.PutUint32(out[12:], uint32(len(types)))
	ne.PutUint32(out[16:], uint32(len(types)))
	ne.PutUint32(out[20:], uint32(len(strs)))
	return append(append(out, types...), strs...), nil
}

// byValue calls f with each type that type id holds by value: those
// Subset follows.
func (t *Types) byValue(id btf.TypeID, f func(btf.TypeID)) {
	off := int(t.offs[id])
	// A copy: refsOf may write the record, and the blob may be a
	// read-only mapping.
	rec := append([]byte(nil), t.types[off:off+t.size(int(id))]...)
	t.refsOf(rec, false, func(ref *uint32) { f(btf.TypeID(*ref)) })
}

// refsOf calls f with a pointer to each type ID in the record rec (a copy,
// which f may rewrite): its type, array element and index, members,
// return type and parameters. A pointer's target is one only when pointers
// is set.
func (t *Types) refsOf(rec []byte, pointers bool, f func(*uint32)) {
	info := ne.Uint32(rec[4:])
	vlen := int(info & 0xffff)
	data := rec[recordLen:]
	ref := func(p []byte) {
		v := ne.Uint32(p)
		f(&v)
		ne.PutUint32(p, v)
	}
	switch kind(info) {
	case kindPtr:
		if pointers {
			ref(rec[8:])
		}
	case kindTypedef, kindVolatile, kindConst, kindRestrict, kindTypeTag, kindFuncProto:
		ref(rec[8:])
	}
	switch kind(info) {
	case kindArray:
		ref(data)
		ref(data[4:])
	case kindStruct, kindUnion:
		for i := range vlen {
			ref(data[12*i+4:])
		}
	case kindFuncProto:
		for i := range vlen {
			ref(data[8*i+4:])
		}
	}
}

// size is the record size of type id, whose record Parse checked.
func (t *Types) size(id int) int {
	if id+1 < len(t.offs) {
		return int(t.offs[id+1] - t.offs[id])
	}
	return len(t.types) - int(t.offs[id])
}

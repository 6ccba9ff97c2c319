package kbtf

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/cilium/ebpf/btf"
)

// fixture is a small BTF blob, marshalled by cilium/ebpf, with what Subset
// must keep and leave out: a struct holding an int, a struct by value, an
// array of a typedef'd struct, an enum, a pointer to a struct of its own,
// and a function.
func fixture(t testing.TB) (raw []byte, spec *btf.Spec) {
	t.Helper()
	i32 := &btf.Int{Name: "int", Size: 4, Encoding: btf.Signed}
	inner := &btf.Struct{Name: "inner", Size: 8, Members: []btf.Member{{Name: "x", Type: i32}, {Name: "y", Type: i32, Offset: 32}}}
	elem := &btf.Struct{Name: "elem", Size: 4, Members: []btf.Member{{Name: "v", Type: i32}}}
	elemT := &btf.Typedef{Name: "elem_t", Type: elem}
	color := &btf.Enum{Name: "color", Size: 4, Values: []btf.EnumValue{{Name: "RED", Value: 1}, {Name: "BLUE", Value: 2}}}
	far := &btf.Struct{Name: "far", Size: 4, Members: []btf.Member{{Name: "deep", Type: i32}}}
	outer := &btf.Struct{Name: "outer", Size: 48, Members: []btf.Member{
		{Name: "a", Type: i32},
		{Name: "in", Type: inner, Offset: 32},
		{Name: "arr", Type: &btf.Array{Index: i32, Type: elemT, Nelems: 4}, Offset: 96},
		{Name: "c", Type: color, Offset: 224},
		{Name: "p", Type: &btf.Pointer{Target: far}, Offset: 256},
		{Name: "q", Type: &btf.Pointer{Target: inner}, Offset: 320},
	}}
	fn := &btf.Func{Name: "kfunc_x", Type: &btf.FuncProto{Return: i32, Params: []btf.FuncParam{{Name: "o", Type: &btf.Pointer{Target: outer}}}}, Linkage: btf.GlobalFunc}
	b, err := btf.NewBuilder([]btf.Type{outer, fn, far}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err = b.Marshal(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	spec, err = btf.LoadSpecFromReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	return raw, spec
}

func idOf(t *testing.T, spec *btf.Spec, name string) btf.TypeID {
	t.Helper()
	typ, err := spec.AnyTypeByName(name)
	if err != nil {
		t.Fatal(err)
	}
	id, err := spec.TypeID(typ)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestFind(t *testing.T) {
	raw, spec := fixture(t)
	ty, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for range spec.All() {
		n++
	}
	if ty.Len() != n {
		t.Errorf("Len() = %d, cilium/ebpf decodes %d types", ty.Len(), n)
	}
	f := ty.Find([]string{"kfunc_x", "no_such_func", "outer"}, []string{"outer", "elem_t", "color", "kfunc_x", "nothing"})
	if got, want := f.Funcs["kfunc_x"], idOf(t, spec, "kfunc_x"); got != want {
		t.Errorf("Funcs[kfunc_x] = %d, want %d", got, want)
	}
	// Only functions are functions, and only types types.
	for _, n := range []string{"no_such_func", "outer"} {
		if id, ok := f.Funcs[n]; ok {
			t.Errorf("Funcs[%s] = %d, want none", n, id)
		}
	}
	for _, n := range []string{"outer", "elem_t", "color"} {
		if got, want := f.Types[n], idOf(t, spec, n); len(got) != 1 || got[0] != want {
			t.Errorf("Types[%s] = %v, want [%d]", n, got, want)
		}
	}
	for _, n := range []string{"kfunc_x", "nothing"} {
		if ids, ok := f.Types[n]; ok {
			t.Errorf("Types[%s] = %v, want none", n, ids)
		}
	}
	if !ty.IsStruct(idOf(t, spec, "outer")) || ty.IsStruct(idOf(t, spec, "elem_t")) || ty.IsStruct(0) || ty.IsStruct(btf.TypeID(ty.Len())) {
		t.Error("IsStruct: wrong for outer, elem_t, void or the ID past the last")
	}
}

func TestSubset(t *testing.T) {
	raw, spec := fixture(t)
	ty, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	blob, err := ty.Subset([]btf.TypeID{idOf(t, spec, "outer")})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := btf.LoadSpecFromReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatalf("cilium/ebpf cannot read the subset: %v", err)
	}
	// What outer holds by value is kept, as it was.
	for _, n := range []string{"outer", "inner", "elem_t", "elem", "color", "int"} {
		a, err := spec.AnyTypeByName(n)
		if err != nil {
			t.Fatal(err)
		}
		b, err := sub.AnyTypeByName(n)
		if err != nil {
			t.Errorf("the subset lost %s: %v", n, err)
			continue
		}
		if btf.CheckTypeCompatibility(a, b) != nil || a.TypeName() != b.TypeName() {
			t.Errorf("%s is %v in the subset, %v in the blob", n, b, a)
		}
	}
	var o *btf.Struct
	if err := sub.TypeByName("outer", &o); err != nil {
		t.Fatal(err)
	}
	var orig *btf.Struct
	if err := spec.TypeByName("outer", &orig); err != nil {
		t.Fatal(err)
	}
	if len(o.Members) != len(orig.Members) {
		t.Fatalf("outer has %d members in the subset, %d in the blob", len(o.Members), len(orig.Members))
	}
	for i, m := range o.Members {
		if m.Name != orig.Members[i].Name || m.Offset != orig.Members[i].Offset {
			t.Errorf("member %d is %s at %d in the subset, %s at %d in the blob", i, m.Name, m.Offset, orig.Members[i].Name, orig.Members[i].Offset)
		}
	}
	// A pointer is kept, and points to void unless its target is kept
	// for itself.
	if p, ok := o.Members[4].Type.(*btf.Pointer); !ok {
		t.Errorf("outer.p is %v, want a pointer", o.Members[4].Type)
	} else if _, ok := p.Target.(*btf.Void); !ok {
		t.Errorf("outer.p points to %v, want void (far is not kept)", p.Target)
	}
	if p, ok := o.Members[5].Type.(*btf.Pointer); !ok || p.Target.TypeName() != "inner" {
		t.Errorf("outer.q is %v, want a pointer to inner (kept by value)", o.Members[5].Type)
	}
	for _, n := range []string{"far", "kfunc_x"} {
		if _, err := sub.AnyTypeByName(n); !errors.Is(err, btf.ErrNotFound) {
			t.Errorf("the subset has %s (%v), which outer does not hold by value", n, err)
		}
	}
	// An ID past the last is an error, not a panic.
	if _, err := ty.Subset([]btf.TypeID{btf.TypeID(ty.Len())}); !errors.Is(err, ErrFormat) {
		t.Errorf("Subset of an ID past the last: %v, want ErrFormat", err)
	}
}

func TestParseRejects(t *testing.T) {
	raw, _ := fixture(t)
	// Every truncation: an error, never a panic. The type section ends
	// before the strings (marshalled in that order), so a cut anywhere is
	// a section outside the blob.
	for n := range len(raw) {
		if _, err := Parse(raw[:n]); !errors.Is(err, ErrFormat) {
			t.Fatalf("Parse of the first %d of %d bytes: %v, want ErrFormat", n, len(raw), err)
		}
	}
	bad := func(name string, edit func(b []byte)) {
		b := append([]byte(nil), raw...)
		edit(b)
		if _, err := Parse(b); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: %v, want ErrFormat", name, err)
		}
	}
	bad("wrong magic", func(b []byte) { b[0] ^= 0xff })
	bad("unknown kind", func(b []byte) { ne.PutUint32(b[headerLen+4:], 0x1f<<24) }) // the first record
	bad("strings not NUL-terminated", func(b []byte) { b[len(b)-1] = 'x' })
	bad("type section past the end", func(b []byte) { ne.PutUint32(b[12:], 1<<30) })
	bad("vlen past the type section", func(b []byte) {
		// The first record is the int: make it a struct of 65535 members.
		ne.PutUint32(b[headerLen+4:], kindStruct<<24|0xffff)
	})
}

// FuzzTypes: no input makes Parse, Find or Subset panic.
func FuzzTypes(f *testing.F) {
	raw, _ := fixture(f)
	f.Add(raw)
	f.Fuzz(func(t *testing.T, b []byte) {
		ty, err := Parse(b)
		if err != nil {
			return
		}
		found := ty.Find([]string{"kfunc_x"}, []string{"outer", "inner"})
		var roots []btf.TypeID
		for _, ids := range found.Types {
			roots = append(roots, ids...)
		}
		for id := range min(ty.Len(), 64) {
			roots = append(roots, btf.TypeID(id))
		}
		if blob, err := ty.Subset(roots); err == nil {
			if _, err := Parse(blob); err != nil {
				t.Errorf("Subset wrote a blob Parse refuses: %v", err)
			}
		}
	})
}

// TestKernel reads this kernel's BTF, when it has one, as semundo's reader
// does; the reader's tests compare what it finds with cilium/ebpf's full
// decoding.
func TestKernel(t *testing.T) {
	if _, err := os.Stat(VMLinux); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s: %v: CI's kernels have BTF", VMLinux, err)
		}
		t.Skipf("no kernel BTF: %v", err)
	}
	ty, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ty.Close()
	f := ty.Find(nil, []string{"task_struct"})
	var task btf.TypeID
	for _, id := range f.Types["task_struct"] {
		if ty.IsStruct(id) {
			task = id
		}
	}
	if task == 0 {
		t.Fatal("no struct task_struct in the kernel's BTF")
	}
	blob, err := ty.Subset([]btf.TypeID{task})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := btf.LoadSpecFromReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	full, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatal(err)
	}
	var s, want *btf.Struct
	if err := sub.TypeByName("task_struct", &s); err != nil {
		t.Fatalf("task_struct in the subset: %v", err)
	}
	if err := full.TypeByName("task_struct", &want); err != nil {
		t.Fatal(err)
	}
	if id, _ := full.TypeID(want); id != task {
		t.Errorf("task_struct is type %d, cilium/ebpf says %d", task, id)
	}
	if s.Size != want.Size || len(s.Members) != len(want.Members) {
		t.Fatalf("task_struct: %d bytes, %d members in the subset; %d, %d in the kernel", s.Size, len(s.Members), want.Size, len(want.Members))
	}
	for i, m := range s.Members {
		w := want.Members[i]
		if m.Name != w.Name || m.Offset != w.Offset || m.BitfieldSize != w.BitfieldSize {
			t.Errorf("task_struct member %d: %s at %d in the subset, %s at %d in the kernel", i, m.Name, m.Offset, w.Name, w.Offset)
		}
	}
}

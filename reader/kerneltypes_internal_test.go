package reader

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/semundo/semundo/internal/kbtf"
	"github.com/semundo/semundo/internal/testenv"
)

// TestKernelTypesAgree holds what the open-coded scan's load takes from
// package kbtf to what cilium/ebpf finds in its own decoding of the
// kernel's BTF: every kfunc call's type ID, task_struct's ID, and the
// outcome of every CO-RE relocation of the program (a kbtf subset that
// lost a member, an offset or a type would relocate differently). And the
// kfunc calls must have lost cilium/ebpf's kfunc mark, or its load would
// decode the kernel's BTF anyway. On a kernel without the scan's kfuncs
// (before Linux 6.7) kbtf must find missing the ones cilium/ebpf does not
// find either, and openIterKernel say the scan is missing.
func TestKernelTypesAgree(t *testing.T) {
	full, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatal(err)
	}
	// Which of the program's kfuncs the kernel has, as kbtf and as
	// cilium/ebpf see it: before Linux 6.7 some are missing, and kbtf must
	// say so, for the reader to take the task iterator.
	probe, err := openIterSpec(0)
	if err != nil {
		t.Fatal(err)
	}
	kt0, err := kbtf.Open()
	if err != nil {
		t.Fatal(err)
	}
	found := kt0.Find(kfuncNames(probe), nil)
	kt0.Close()
	complete := true
	for _, name := range kfuncNames(probe) {
		var fn *btf.Func
		inKernel := full.TypeByName(name, &fn) == nil
		if _, ok := found.Funcs[name]; ok != inKernel {
			t.Errorf("kfunc %s: kbtf finds it %v, cilium/ebpf %v", name, ok, inKernel)
		}
		complete = complete && inKernel
	}
	if complete != testenv.KernelAtLeast(t, 6, 7) {
		t.Errorf("every kfunc of the open-coded scan present: %v, on a kernel that is 6.7 or later: %v", complete, !complete)
	}
	if !complete {
		if _, err := openIterKernel(probe); !errors.Is(err, errOpenIterMissing) {
			t.Errorf("openIterKernel on a kernel without the open-coded scan's kfuncs: %v, want errOpenIterMissing", err)
		}
		return
	}

	fast, err := openIterSpec(0)
	if err != nil {
		t.Fatal(err)
	}
	kt, err := openIterKernel(fast)
	if err != nil {
		t.Fatal(err)
	}
	slow, err := openIterSpec(0)
	if err != nil {
		t.Fatal(err)
	}

	var task *btf.Struct
	if err := full.TypeByName("task_struct", &task); err != nil {
		t.Fatal(err)
	}
	taskID, err := full.TypeID(task)
	if err != nil {
		t.Fatal(err)
	}
	var got uint32
	if err := fast.Variables["task_struct_btf_id"].Get(&got); err != nil || btf.TypeID(got) != taskID {
		t.Errorf("task_struct_btf_id = %d (%v), cilium/ebpf says %d", got, err, taskID)
	}

	kfuncs := 0
	var relos []*btf.CORERelocation
	for name, sp := range slow.Programs {
		fp := fast.Programs[name]
		if len(fp.Instructions) != len(sp.Instructions) {
			t.Fatalf("program %s: %d instructions after kbtf, %d before", name, len(fp.Instructions), len(sp.Instructions))
		}
		for i := range sp.Instructions {
			s, f := &sp.Instructions[i], &fp.Instructions[i]
			if relo := btf.CORERelocationMetadata(f); relo != nil {
				relos = append(relos, relo)
			}
			if !s.IsKfuncCall() {
				if !reflect.DeepEqual(*s, *f) {
					t.Errorf("program %s, instruction %d changed: %v, was %v", name, i, f, s)
				}
				continue
			}
			kfuncs++
			var fn *btf.Func
			if err := full.TypeByName(s.Reference(), &fn); err != nil {
				t.Fatalf("kfunc %s: %v", s.Reference(), err)
			}
			id, err := full.TypeID(fn)
			if err != nil {
				t.Fatal(err)
			}
			if f.Constant != int64(id) || f.Offset != 0 || f.Src != asm.PseudoKfuncCall || f.Reference() != s.Reference() {
				t.Errorf("program %s, call of %s: %v, want the type ID %d in vmlinux", name, s.Reference(), f, id)
			}
			if !hasKfuncMark(s) || hasKfuncMark(f) {
				t.Errorf("program %s, call of %s: kfunc mark before %v, after %v; want true, false", name, s.Reference(), hasKfuncMark(s), hasKfuncMark(f))
			}
			if fmt.Sprint(f.Source()) != fmt.Sprint(s.Source()) || f.Symbol() != s.Symbol() || fmt.Sprint(btf.FuncMetadata(f)) != fmt.Sprint(btf.FuncMetadata(s)) {
				t.Errorf("program %s, call of %s lost its source line, symbol or function information", name, s.Reference())
			}
		}
	}
	if kfuncs == 0 || len(relos) == 0 {
		t.Fatalf("%d kfunc calls, %d CO-RE relocations: the comparison would be empty", kfuncs, len(relos))
	}

	local := func(typ btf.Type) (btf.TypeID, error) { return fast.Types.TypeID(typ) }
	want, err := btf.CORERelocate(relos, []*btf.Spec{full}, fast.ByteOrder, local)
	if err != nil {
		t.Fatal(err)
	}
	have, err := btf.CORERelocate(relos, []*btf.Spec{kt.spec}, fast.ByteOrder, local)
	if err != nil {
		t.Fatalf("CO-RE against kbtf's subset: %v", err)
	}
	for i := range want {
		if have[i].String() != want[i].String() {
			t.Errorf("relocation %v: %s against kbtf's subset, %s against the kernel's BTF", relos[i], have[i].String(), want[i].String())
		}
	}
	var q *btf.Struct
	if kt.semQueue != (full.TypeByName("sem_queue", &q) == nil) {
		t.Errorf("kbtf says struct sem_queue exists: %v; cilium/ebpf disagrees", kt.semQueue)
	}
}

// hasKfuncMark reports whether ins carries cilium/ebpf's kfunc metadata,
// found by the name of its key type, which is not exported.
func hasKfuncMark(ins *asm.Instruction) bool {
	e := reflect.ValueOf(ins.Metadata).Field(0) // head *metaElement
	for !e.IsNil() {
		el := e.Elem()
		if k := el.FieldByName("key"); k.IsValid() && !k.IsNil() && k.Elem().Type().Name() == "kfuncMetaKey" {
			return true
		}
		e = el.FieldByName("next")
	}
	return false
}

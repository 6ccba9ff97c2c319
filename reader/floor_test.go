package reader

import (
	"io"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// floorIter attaches the program that visits every task and emits nothing.
func floorIter(tb testing.TB) *link.Iter {
	tb.Helper()
	prog := loadProgram(tb, loadIter, "semundo_floor")
	it, err := link.AttachIter(link.IterOptions{Program: prog})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { it.Close() })
	return it
}

// floorPass runs the floor iterator over every task once.
func floorPass(tb testing.TB, it *link.Iter) {
	r, err := it.Open()
	if err != nil {
		tb.Fatal(err)
	}
	defer r.Close()
	if _, err := io.Copy(io.Discard, r); err != nil {
		tb.Fatal(err)
	}
}

// openFloorProg loads the open-coded walk that visits every task and emits
// nothing.
func openFloorProg(tb testing.TB) *ebpf.Program {
	tb.Helper()
	return loadProgram(tb, loadOpeniter, "semundo_scan_floor")
}

// openFloorPass runs the open-coded floor over every task once.
func openFloorPass(tb testing.TB, prog *ebpf.Program) {
	if _, err := prog.Run(&ebpf.RunOptions{}); err != nil {
		tb.Fatal(err)
	}
}

// loadProgram loads one program of a generated object, closed at cleanup.
func loadProgram(tb testing.TB, load func() (*ebpf.CollectionSpec, error), name string) *ebpf.Program {
	tb.Helper()
	spec, err := load()
	if err != nil {
		tb.Fatal(err)
	}
	prog, err := ebpf.NewProgram(spec.Programs[name])
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { prog.Close() })
	return prog
}

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
	spec, err := loadIter()
	if err != nil {
		tb.Fatal(err)
	}
	prog, err := ebpf.NewProgram(spec.Programs["semundo_floor"])
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { prog.Close() })
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

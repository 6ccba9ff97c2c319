// Package testreader gives tests one BPF reader per test binary: loading
// and verifying the iterator costs tens of milliseconds, too much to repeat
// in every test.
package testreader

import (
	"errors"
	"sync"
	"testing"

	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/reader"
)

var (
	once sync.Once
	rd   *reader.Reader
	err  error
)

// Open returns the shared reader. A kernel that lacks what the reader needs
// (reader.ErrNotSupported) stops the test as testenv.Missing does; any other
// error fails it, so that a program the verifier starts to reject, or any
// other regression of the reader, can never pass as a skip.
func Open(tb testing.TB) *reader.Reader {
	tb.Helper()
	testenv.RequireRoot(tb)
	once.Do(func() { rd, err = reader.Open(nil) })
	if err != nil {
		if errors.Is(err, reader.ErrNotSupported) {
			testenv.Missing(tb, "BPF task iterator", err.Error())
		}
		tb.Fatalf("open the BPF reader: %v", err)
	}
	return rd
}

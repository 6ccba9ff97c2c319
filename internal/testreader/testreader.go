// Package testreader gives tests one BPF reader per test binary: loading
// and verifying the iterator costs tens of milliseconds, too much to repeat
// in every test.
package testreader

import (
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

// Open returns the shared reader, or stops the test (as testenv.Missing
// does) when the machine cannot load it.
func Open(tb testing.TB) *reader.Reader {
	tb.Helper()
	testenv.RequireRoot(tb)
	once.Do(func() { rd, err = reader.Open(nil) })
	if err != nil {
		testenv.Missing(tb, "BPF task iterator", err.Error())
	}
	return rd
}

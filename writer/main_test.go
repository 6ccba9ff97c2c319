package writer_test

import (
	"os"
	"testing"

	"github.com/semundo/semundo/internal/holder"
)

// targetBin is the C target program (testdata/target.c), built once by the
// first test that needs it and removed after the tests.
var targetBin string

func TestMain(m *testing.M) {
	holder.MainWith(m, func() func() {
		return func() {
			if targetBin != "" {
				os.Remove(targetBin)
			}
		}
	})
}

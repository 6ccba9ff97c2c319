package testenv

import (
	"os"
	"testing"
)

// OwnFDs lists this process's open descriptors as "N -> what they are", to
// compare before and after an operation or look for one that leaked.
func OwnFDs(tb testing.TB) []string {
	tb.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		tb.Fatal(err)
	}
	var fds []string
	for _, e := range ents {
		l, _ := os.Readlink("/proc/self/fd/" + e.Name())
		fds = append(fds, e.Name()+" -> "+l)
	}
	return fds
}

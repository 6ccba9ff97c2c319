package reader

import (
	"fmt"
	"os"
)

// OpenFullWalk opens a reader whose ReadProcess walks every task, as it does on
// kernels before 6.1, whose task iterator takes no pid filter.
func OpenFullWalk() (*Reader, error) { return Open(&Options{noTaskFilter: true}) }

// SEMUNDO_TEST_SCAN=open runs the package's tests with every Reader reading
// the lists through the open-coded scan (waiters still through the task
// iterator), =seq through the task iterator; unset, each Open picks as it
// does outside tests.
func init() {
	switch v := os.Getenv("SEMUNDO_TEST_SCAN"); v {
	case "":
	case "open":
		testScanPath = pathOpen
	case "seq":
		testScanPath = pathSeq
	default:
		panic(fmt.Sprintf("SEMUNDO_TEST_SCAN=%q: want open or seq", v))
	}
}

// ScanPath names the path r reads the lists through: "open" or "seq".
func ScanPath(r *Reader) string {
	if r.oc != nil {
		return "open"
	}
	return "seq"
}

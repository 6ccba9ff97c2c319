package reader

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/semundo/semundo/sysvsem"
	"golang.org/x/sys/unix"
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

// envPIDNSChild makes the test binary, started by TestReaderInPIDNamespace
// as pid 1 of a new PID namespace, take an undo adjustment on the set it
// names and print what each path reads there (pidNSChild) instead of
// running tests.
const envPIDNSChild = "SEMUNDO_TEST_PIDNS_CHILD"

func init() {
	if v := os.Getenv(envPIDNSChild); v != "" {
		os.Exit(pidNSChild(v))
	}
}

// pidNSChild adds 3 to semaphore 1 of set semid with SEM_UNDO, then prints
// one line per path, "seq" and "open": the path, then the lists its reader
// (without waiters) scans and the list ReadProcess(1) reads, as JSON, or
// "error" and why. arg is the set's id, followed by ",proc" for a child
// that first mounts the /proc of its own PID namespace (in its own mount
// namespace), as a container does.
func pidNSChild(arg string) int {
	semid, proc := strings.CutSuffix(arg, ",proc")
	id, err := strconv.Atoi(semid)
	if err == nil && proc {
		err = unix.Mount("none", "/", "", unix.MS_REC|unix.MS_PRIVATE, "")
		if err == nil {
			err = unix.Mount("proc", "/proc", "proc", 0, "")
		}
	}
	if err == nil {
		err = sysvsem.Op(id, []sysvsem.Sembuf{{Num: 1, Op: 3, Flg: sysvsem.Undo}})
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, p := range []struct {
		name string
		path scanPath
	}{{"seq", pathSeq}, {"open", pathOpen}} {
		out, err := pidNSRead(p.path)
		if err != nil {
			fmt.Printf("%s error %v\n", p.name, err)
			continue
		}
		fmt.Printf("%s %s\n", p.name, out)
	}
	return 0
}

func pidNSRead(path scanPath) ([]byte, error) {
	r, err := Open(&Options{NoWaiters: true, path: path})
	if err != nil {
		return nil, err
	}
	defer r.Close()
	snap, err := r.Scan()
	if err != nil {
		return nil, err
	}
	one, err := r.ReadProcess(1)
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]any{"scan": snap.Lists, "pid1": one})
}

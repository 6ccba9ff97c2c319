package reader

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/sysvsem"
	"golang.org/x/sys/unix"
)

// OpenFullWalk opens a reader whose ReadProcess walks every task, as it does on
// kernels before 6.1, whose task iterator takes no pid filter.
func OpenFullWalk() (*Reader, error) { return Open(&Options{noTaskFilter: true}) }

// OpenSmallRing opens a reader whose open-coded scan, where Open takes it,
// starts with a ring buffer of one page, which a pass of more records must
// grow.
func OpenSmallRing() (*Reader, error) { return Open(&Options{ocRing: 4096}) }

// RingSize is the size of r's open-coded scan's ring buffer, 0 without
// that scan.
func RingSize(r *Reader) uint32 {
	if r.oc == nil {
		return 0
	}
	return r.oc.size
}

// SEMUNDO_TEST_SCAN=open runs the package's tests with every Reader reading
// through the open-coded scan, =seq through the task iterator; unset, each
// Open picks as it does outside tests.
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

// pidNSReaders are the readers pidNSChild reads with, by name: every path
// and program variant that numbers pids.
var pidNSReaders = []struct {
	name string
	opts Options
}{
	{"seq", Options{NoWaiters: true, path: pathSeq}},
	{"seq-bounded", Options{NoWaiters: true, Bounded: true}},
	{"seq-waiters", Options{path: pathSeq}},
	{"open", Options{NoWaiters: true, path: pathOpen}},
	{"open-waiters", Options{path: pathOpen}},
}

// pidNSResult is what pidNSChild prints for one reader.
type pidNSResult struct {
	// Scan are the lists a scan found, PID1 the list ReadProcess(1) read.
	Scan []List
	PID1 *List `json:"pid1"`
	// Waiters are those of the first scan that saw a waiter on the set
	// (the blocked thread, BlockedTID as it knows itself), or of the last
	// scan when none did; WaitersErr says why they are missing.
	Waiters    []Waiter
	WaitersErr string
	BlockedTID int
}

// pidNSChild adds 3 to semaphore 1 of set semid with SEM_UNDO, blocks a
// thread in a semop that waits for semaphore 0 (which a holder outside
// keeps at 1) to be zero, then prints one line per reader of
// pidNSReaders: its name, then a pidNSResult as JSON, or "error" and why.
// arg is the set's id, followed by ",proc" for a child that first mounts
// the /proc of its own PID namespace (in its own mount namespace), as a
// container does. The blocked thread ends with the process.
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
	blocked := make(chan int)
	go func() {
		runtime.LockOSThread()
		blocked <- unix.Gettid()
		sysvsem.Op(id, []sysvsem.Sembuf{{Num: 0, Op: 0}})
	}()
	tid := <-blocked
	for _, p := range pidNSReaders {
		out, err := pidNSRead(p.opts, id, tid)
		if err != nil {
			fmt.Printf("%s error %v\n", p.name, err)
			continue
		}
		fmt.Printf("%s %s\n", p.name, out)
	}
	return 0
}

func pidNSRead(opts Options, semid, tid int) ([]byte, error) {
	r, err := Open(&opts)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	res := pidNSResult{BlockedTID: tid}
	var serr error
	// The thread may not sleep in its semop yet: scan again until a scan
	// shows a waiter on the set (or says why it cannot), whatever pids it
	// carries: those are for the test to judge.
	testenv.Until(testenv.Patience, func() bool {
		var snap *Snapshot
		snap, serr = r.Scan()
		if serr != nil {
			return true
		}
		res.Scan, res.Waiters = snap.Lists, snap.Waiters
		if snap.WaitersErr != nil {
			res.WaitersErr = snap.WaitersErr.Error()
			return true
		}
		return slices.ContainsFunc(snap.Waiters, func(w Waiter) bool { return w.Semid == int32(semid) })
	})
	if serr != nil {
		return nil, serr
	}
	if res.PID1, err = r.ReadProcess(1); err != nil {
		return nil, err
	}
	return json.Marshal(res)
}

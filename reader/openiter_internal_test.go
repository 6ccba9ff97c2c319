package reader

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
)

// TestScanPathsAgree reads the same holders through the task iterator and
// the open-coded scan, with and without waiters, and through an open-coded
// scan whose ring buffer starts too small for a long list and must grow:
// every reader must find the same lists. The holders cover threads, a list
// too long to travel inline (ring buffer chunks) and a set of another IPC
// namespace with a semid the parent's namespace uses too. Open must pick
// the open-coded scan from Linux 6.7 on, with waiters or without, and the
// task iterator otherwise; before 6.7 it must refuse to force the
// open-coded scan, naming what is missing.
func TestScanPathsAgree(t *testing.T) {
	testenv.RequireRoot(t)
	openCoded := testenv.KernelAtLeast(t, 6, 7)
	readers := map[string]*Options{
		"seq":            {NoWaiters: true, path: pathSeq},
		"seq-waiters":    {path: pathSeq},
		"auto":           {NoWaiters: true},
		"auto-waiters":   {},
		"open":           {NoWaiters: true, path: pathOpen},
		"open-waiters":   {path: pathOpen},
		"open-smallring": {NoWaiters: true, path: pathOpen, ocRing: 4096},
		// Loaded through cilium/ebpf's decoding of the kernel's BTF
		// instead of package kbtf's (kerneltypes.go).
		"open-cilium":         {NoWaiters: true, path: pathOpen, noKbtf: true},
		"open-cilium-waiters": {path: pathOpen, noKbtf: true},
	}
	// The readers name their paths; "auto" means what Open picks by itself.
	forced := testScanPath
	testScanPath = pathAuto
	t.Cleanup(func() { testScanPath = forced })
	rs := map[string]*Reader{}
	for name, opts := range readers {
		r, err := Open(opts)
		if opts.path == pathOpen && !openCoded {
			if !errors.Is(err, errOpenIterMissing) {
				t.Fatalf("%s reader before Linux 6.7: %v, want the open-coded scan missing", name, err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("open the %s reader: %v", name, err)
		}
		t.Cleanup(func() { r.Close() })
		rs[name] = r
	}
	for _, name := range []string{"auto", "auto-waiters"} {
		if got := rs[name].oc != nil; got != openCoded {
			t.Errorf("%s reader on the open-coded scan: %v, want %v (Linux >= 6.7)", name, got, openCoded)
		}
	}
	for name, r := range rs {
		if r.oc != nil && r.oc.kbtf == readers[name].noKbtf {
			t.Errorf("%s reader loaded with package kbtf's types: %v, want %v", name, r.oc.kbtf, !readers[name].noKbtf)
		}
	}
	if openCoded && rs["open-cilium-waiters"].WaitersErr() != nil != (rs["open-waiters"].WaitersErr() != nil) {
		t.Errorf("waiters through kbtf: %v; through cilium/ebpf: %v", rs["open-waiters"].WaitersErr(), rs["open-cilium-waiters"].WaitersErr())
	}
	// bpf_loop and bpf_task_pt_regs: TestWaitersSupported checks that the
	// reader says so where they are missing.
	if err := rs["auto-waiters"].WaitersErr(); err != nil && testenv.KernelAtLeast(t, 5, 17) {
		t.Errorf("the reader with waiters reads none: %v", err)
	}

	threads := holder.NewSet(t, 2)
	h := holder.Start(t, "wait", []holder.Op{{Semid: threads, Num: 1, Val: 2, Undo: true}}, nil)
	var long []holder.Op
	for i := range 300 {
		long = append(long, holder.Op{Semid: holder.NewSet(t, 30), Num: uint16(i % 30), Val: int16(i%7 + 1), Undo: true})
	}
	hl := holder.Start(t, "wait", long, nil)
	hn := holder.StartNS(t, threads, 5, []holder.Op{{Semid: -1, Num: 4, Val: 6, Undo: true}})
	pids := []int{h.PID, hl.PID, hn.PID}
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", h.PID))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range tasks {
		tid, _ := strconv.Atoi(d.Name())
		pids = append(pids, tid)
	}

	want := lists(t, rs["seq"], pids)
	for name, r := range rs {
		if got := lists(t, r, pids); !reflect.DeepEqual(got, want) {
			t.Errorf("%s reader found %+v, the task iterator %+v", name, got, want)
		}
		if name == "open-smallring" && r.oc.size <= 4096 {
			t.Errorf("the open-coded scan's ring buffer stayed at %d bytes for a list of 300 entries", r.oc.size)
		}
	}
}

// lists scans with r and returns the lists of pids, as a scan and as
// ReadProcess find them.
func lists(t testing.TB, r *Reader, pids []int) []List {
	t.Helper()
	snap, err := r.Scan()
	if err != nil {
		t.Fatal(err)
	}
	var out []List
	for _, pid := range pids {
		l := snap.ByPID(pid)
		if l == nil {
			t.Fatalf("a scan found no list for pid %d", pid)
		}
		one, err := r.ReadProcess(pid)
		if err != nil {
			t.Fatal(err)
		}
		if one == nil {
			t.Fatalf("ReadProcess(%d) found no list", pid)
		}
		// id is the tid of the task that carried the list in its pass:
		// not part of what a list is.
		a, b := *l, *one
		a.id, b.id = 0, 0
		out = append(out, a, b)
	}
	return out
}

// TestReaderInPIDNamespace runs readers (every path and program variant,
// with and without waiters: pidNSReaders) as pid 1 of a new PID namespace
// that holds an undo list and has a thread blocked in semop, while a holder
// outside it holds another: each must report the list of pid 1 alone, and
// the blocked thread, with the pids of its own namespace. The open-coded
// scan walks every task of the machine, and keeps those of the reader's
// namespace itself. With the namespace's own /proc mounted (as in a
// container), whose NSpid line counts no level above it, every path must
// still number pids in the reader's namespace: each takes its depth from
// the reader's task.
func TestReaderInPIDNamespace(t *testing.T) {
	testenv.RequireRoot(t)
	s := holder.NewSet(t, 2)
	outside := holder.Start(t, "wait", []holder.Op{{Semid: s, Num: 0, Val: 1, Undo: true}}, nil)
	openCoded := testenv.KernelAtLeast(t, 6, 7)
	// bpf_loop and bpf_task_pt_regs: TestWaitersSupported checks that the
	// reader says so where they are missing.
	waiters := testenv.KernelAtLeast(t, 5, 17)
	for _, c := range []struct{ name, arg string }{
		{"host-proc", strconv.Itoa(s)},
		{"own-proc", strconv.Itoa(s) + ",proc"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := runPIDNSChild(t, c.arg, c.name == "own-proc")
			for _, rd := range pidNSReaders {
				if rd.opts.path == pathOpen && !openCoded {
					continue // TestScanPathsAgree checks that Open says why
				}
				checkPIDNSRead(t, rd.name, got[rd.name], s, outside.PID, waiters && !rd.opts.NoWaiters)
			}
		})
	}
}

// runPIDNSChild runs the test binary as pid 1 of a new PID namespace (and
// mount namespace, with mountNS) in pidNSChild's mode, with arg, and
// returns what it printed for each reader.
func runPIDNSChild(t *testing.T, arg string, mountNS bool) map[string]string {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envPIDNSChild+"="+arg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if mountNS {
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWNS
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("reader in a new PID namespace: %v\n%s", err, stderr.Bytes())
	}
	got := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		name, rest, _ := strings.Cut(line, " ")
		got[name] = rest
	}
	return got
}

// checkPIDNSRead checks what a reader read as pid 1 of a new PID
// namespace: its own list alone, adj -3 on semaphore 1 of set semid, and,
// with waiters, its thread blocked on that set alone.
func checkPIDNSRead(t *testing.T, name, res string, semid, outside int, waiters bool) {
	t.Helper()
	var r pidNSResult
	if err := json.Unmarshal([]byte(res), &r); err != nil || r.PID1 == nil {
		t.Errorf("%s reader in a new PID namespace: %s", name, res)
		return
	}
	// The threads are not compared: the Go runtime of pid 1 may start
	// one between two reads.
	for _, l := range append(r.Scan, *r.PID1) {
		if len(l.Processes) != 1 || l.Processes[0].PID != 1 || l.Entry(int32(semid)) == nil || l.Entry(int32(semid)).Adj[1] != -3 {
			t.Errorf("%s reader in a new PID namespace read %+v, want pid 1's list alone (adj -3 on semaphore 1; holder %d outside left out)", name, l, outside)
		}
	}
	if len(r.Scan) != 1 {
		t.Errorf("%s reader in a new PID namespace found %d lists, want 1", name, len(r.Scan))
	}
	if !waiters {
		return
	}
	if r.WaitersErr != "" {
		t.Errorf("%s reader in a new PID namespace read no waiters: %s", name, r.WaitersErr)
		return
	}
	if len(r.Waiters) != 1 || r.Waiters[0].PID != 1 || r.Waiters[0].TID != r.BlockedTID || r.Waiters[0].Semid != int32(semid) {
		t.Errorf("%s reader in a new PID namespace read waiters %+v, want pid 1's thread %d alone, on set %d", name, r.Waiters, r.BlockedTID, semid)
	}
}

// TestOpenIterRingSize: the first ring buffer holds a short list for every
// task, in a power of two from 4 to 64 MiB.
func TestOpenIterRingSize(t *testing.T) {
	for _, c := range []struct{ owners, want uint32 }{
		{1 << 16, 4 << 20},      // the least ownersSize gives
		{4 * 100000, 16 << 20},  // 100,000 tasks: 16 MB
		{4 * 1000000, 64 << 20}, // 1,000,000 tasks: at most 64 MiB
	} {
		if got := openIterRingSize(c.owners); got != c.want {
			t.Errorf("openIterRingSize(%d) = %d, want %d", c.owners, got, c.want)
		}
	}
}

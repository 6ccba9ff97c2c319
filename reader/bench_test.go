package reader

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/sysvsem"
	"golang.org/x/sys/unix"
)

// BenchmarkScan measures a full scan through the Go API with N processes,
// each holding 2 entries on 8-semaphore sets, next to two baselines measured
// in the same run: reading /proc/<pid>/stat of the same N pids (the least
// any per-pid proc file such as the seed's costs) and a pass of an iterator
// that visits every task and emits nothing (the floor). The scan runs on
// each path: the task iterator with waiters (what Open(nil) loads), the
// task iterator without them, and the open-coded scan (Linux >= 6.7,
// always without waiters), each next to its own floor. It also runs the
// semundo command (show PID, ps) and reports its wall time and peak RSS.
func BenchmarkScan(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("N=%d", n), func(b *testing.B) { benchScan(b, n) })
	}
}

func benchScan(b *testing.B, n int) {
	pids := startHolders(b, n)

	r, err := Open(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	snap, err := r.Scan()
	if err != nil {
		b.Fatal(err)
	}
	for _, pid := range pids {
		if l := snap.ByPID(pid); l == nil || len(l.Entries) != 2 || len(l.Entries[0].Adj) != 8 {
			b.Fatalf("pid %d: list %+v, want 2 entries of 8", pid, l)
		}
	}
	undoOnly, err := Open(&Options{NoWaiters: true, path: pathSeq})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { undoOnly.Close() })
	open, err := Open(&Options{NoWaiters: true, path: pathOpen})
	if err != nil {
		b.Fatalf("the open-coded scan (Linux >= 6.7): %v", err)
	}
	b.Cleanup(func() { open.Close() })
	if got, want := lists(b, open, pids[:100]), lists(b, r, pids[:100]); !reflect.DeepEqual(got, want) {
		b.Fatalf("the open-coded scan found %+v, the task iterator %+v", got, want)
	}
	floor := floorIter(b)
	openFloor := openFloorProg(b)
	statBuf := make([]byte, 4096)

	// Each pass in turn, so that load on this shared machine weighs on
	// them alike.
	passes := []struct {
		name string
		run  func()
		t    time.Duration
	}{
		{"scan", func() { scanOrFail(b, r) }, 0},
		{"scan-undo-only", func() { scanOrFail(b, undoOnly) }, 0},
		{"scan-open", func() { scanOrFail(b, open) }, 0},
		// The same scan in two parts: the program's run, then the
		// decoding of its records in Go.
		{"open-run", func() { openRun(b, open) }, 0},
		{"open-decode", func() { openDecode(b, open) }, 0},
		{"procstat", func() {
			for _, pid := range pids {
				readStat(b, pid, statBuf)
			}
		}, 0},
		{"floor", func() { floorPass(b, floor) }, 0},
		{"floor-open", func() { openFloorPass(b, openFloor) }, 0},
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range passes {
			t0 := time.Now()
			passes[j].run()
			passes[j].t += time.Since(t0)
		}
	}
	b.StopTimer()
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) / 1000 }
	t := map[string]time.Duration{}
	for _, p := range passes {
		b.ReportMetric(per(p.t), p.name+"-ms")
		t[p.name] = p.t
	}
	ratio := func(a, b time.Duration) float64 { return float64(a) / float64(b) }
	b.ReportMetric(ratio(t["procstat"], t["scan"]), "x-faster-than-procstat")
	b.ReportMetric(ratio(t["procstat"], t["scan-undo-only"]), "x-undo-only-faster-than-procstat")
	b.ReportMetric(ratio(t["procstat"], t["scan-open"]), "x-open-faster-than-procstat")
	b.ReportMetric(ratio(t["procstat"], t["floor"]), "x-floor-faster-than-procstat")
	b.ReportMetric(ratio(t["procstat"], t["floor-open"]), "x-floor-open-faster-than-procstat")
	b.ReportMetric(ratio(t["scan"], t["floor"]), "x-floor")
	b.ReportMetric(ratio(t["scan-open"], t["floor-open"]), "x-floor-open")

	bin := buildCommand(b)
	for _, args := range [][]string{{"show", strconv.Itoa(pids[n/2])}, {"ps"}} {
		wall := runCommand(b, bin, args...)
		b.ReportMetric(float64(wall.Microseconds())/1000, "cmd-"+args[0]+"-ms")
		if rss := peakRSS(b, bin, args...); rss >= 0 {
			b.ReportMetric(float64(rss)/1024, "cmd-"+args[0]+"-maxrss-MiB")
		}
	}
}

// startHolders starts n processes (holdmany), each holding 2 entries on
// 8-semaphore sets, and returns their pids.
func startHolders(b *testing.B, n int) []int {
	testenv.RequireRoot(b)
	holdmany := testenv.BuildC(b, "holdmany", mustRead(b, "testdata/holdmany.c"))
	var sets [2]int
	for i := range sets {
		id, err := sysvsem.Get(sysvsem.Private, 8, unix.IPC_CREAT|0o600)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { sysvsem.Remove(id) })
		sets[i] = id
	}
	return startMany(b, holdmany, n, fmt.Sprintf("%d:0:1", sets[0]), fmt.Sprintf("%d:5:1", sets[1]))
}

// BenchmarkCommands runs `semundo show PID`, `semundo ps` and `semundo ps
// --json` as whole processes with N = 10,000 holders, each iteration next to
// a C program that reads /proc/<pid>/stat of the same 10,000 pids (the
// baseline), and reports each command's wall time, its ratio to the
// baseline (ps --json: to ps), and its phases as SEMUNDO_DEBUG_PHASES
// prints them ("rest" is the wall time the phases leave: the Go runtime's
// start and exit, flag parsing).
func BenchmarkCommands(b *testing.B) {
	const n = 10000
	pids := startHolders(b, n)
	procstat := testenv.BuildC(b, "procstat", mustRead(b, "testdata/procstat.c"))
	pidFile := filepath.Join(b.TempDir(), "pids")
	var list []byte
	for _, pid := range pids {
		list = strconv.AppendInt(list, int64(pid), 10)
		list = append(list, '\n')
	}
	if err := os.WriteFile(pidFile, list, 0o600); err != nil {
		b.Fatal(err)
	}
	type command struct {
		name, bin string
		args      []string
	}
	var cmds []command
	bins := [][2]string{{"", buildCommand(b)}}
	// SEMUNDO_BENCH_BEFORE names another build of semundo (an earlier
	// commit's) to run in the same iterations, as "before-*".
	if other := os.Getenv("SEMUNDO_BENCH_BEFORE"); other != "" {
		bins = append(bins, [2]string{"before-", other})
	}
	for _, bin := range bins {
		cmds = append(cmds,
			command{bin[0] + "show", bin[1], []string{"show", strconv.Itoa(pids[n/2])}},
			command{bin[0] + "ps", bin[1], []string{"ps"}},
			command{bin[0] + "psjson", bin[1], []string{"ps", "--json"}})
	}
	var baseT time.Duration
	wall := make([]time.Duration, len(cmds))
	phases := make([]map[string]time.Duration, len(cmds))
	for i := range phases {
		phases[i] = map[string]time.Duration{}
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := runCommand(b, procstat, pidFile)
		baseT += d
		for c, cmd := range cmds {
			d, ph := runPhases(b, cmd.bin, cmd.args...)
			wall[c] += d
			var sum time.Duration
			for k, v := range ph {
				phases[c][k] += v
				if k != "open" {
					sum += v
				}
			}
			phases[c]["rest"] += d - sum
		}
	}
	b.StopTimer()
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) / 1000 }
	b.ReportMetric(ms(baseT), "procstat-ms")
	for c, cmd := range cmds {
		b.ReportMetric(ms(wall[c]), cmd.name+"-ms")
		for k, v := range phases[c] {
			b.ReportMetric(ms(v), cmd.name+"-"+k+"-ms")
		}
	}
	b.ReportMetric(float64(wall[0])/float64(baseT), "x-show-vs-procstat")
	b.ReportMetric(float64(wall[1])/float64(baseT), "x-ps-vs-procstat")
	b.ReportMetric(float64(wall[2])/float64(wall[1]), "x-psjson-vs-ps")
}

// runPhases runs the command with SEMUNDO_DEBUG_PHASES=1 and returns its
// wall time and the phases it printed on standard error.
func runPhases(tb testing.TB, bin string, args ...string) (time.Duration, map[string]time.Duration) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), "SEMUNDO_DEBUG_PHASES=1")
	cmd.Stdout = io.Discard
	var stderr strings.Builder
	cmd.Stderr = &stderr
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s %v: %v\n%s", bin, args, err, stderr.String())
	}
	d := time.Since(t0)
	ph := map[string]time.Duration{}
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		if line == "" {
			continue // a build without SEMUNDO_DEBUG_PHASES
		}
		name, v, ok := strings.Cut(line, " ")
		ms, err := strconv.ParseFloat(strings.TrimSuffix(v, "ms"), 64)
		if !ok || err != nil {
			tb.Fatalf("%s %v: phase line %q", bin, args, line)
		}
		ph[name] += time.Duration(ms * float64(time.Millisecond))
	}
	return d, ph
}

// openRun runs r's open-coded scan once and leaves its records in the ring
// buffer for openDecode.
func openRun(tb testing.TB, r *Reader) {
	if _, err := r.oc.coll.Programs["semundo_scan"].Run(&ebpf.RunOptions{}); err != nil {
		tb.Fatal(err)
	}
}

// openDecode decodes the records openRun left into lists.
func openDecode(tb testing.TB, r *Reader) {
	b := newBuilder(r.lastLists+r.lastLists/8+16, 0, nil)
	if err := r.oc.drain(b); err != nil {
		tb.Fatal(err)
	}
	if _, err := b.snapshot(); err != nil {
		tb.Fatal(err)
	}
}

func scanOrFail(tb testing.TB, r *Reader) {
	if _, err := r.Scan(); err != nil {
		tb.Fatal(err)
	}
}

func mustRead(tb testing.TB, path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	return string(b)
}

func readStat(tb testing.TB, pid int, buf []byte) {
	fd, err := unix.Open("/proc/"+strconv.Itoa(pid)+"/stat", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := unix.Read(fd, buf); err != nil {
		tb.Fatal(err)
	}
	unix.Close(fd)
}

// startMany runs holdmany and returns its children's pids; all are killed
// and reaped at cleanup.
func startMany(tb testing.TB, bin string, n int, ops ...string) []int {
	cmd := exec.Command(bin, append([]string{strconv.Itoa(n)}, ops...)...)
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || sc.Text() != "ready" {
		tb.Fatalf("holdmany: %q", sc.Text())
	}
	pids := make([]int, 0, n)
	for len(pids) < n && sc.Scan() {
		pid, err := strconv.Atoi(sc.Text())
		if err != nil {
			tb.Fatal(err)
		}
		pids = append(pids, pid)
	}
	if len(pids) != n {
		tb.Fatalf("holdmany started %d of %d", len(pids), n)
	}
	go io.Copy(io.Discard, stdout)
	return pids
}

func buildCommand(tb testing.TB) string {
	out := filepath.Join(tb.TempDir(), "semundo")
	cmd := exec.Command("go", "build", "-o", out, "../cmd/semundo")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// runCommand runs the command and returns its wall time.
func runCommand(tb testing.TB, bin string, args ...string) time.Duration {
	cmd := exec.Command(bin, args...)
	cmd.Stdout = io.Discard
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s %v: %v", bin, args, err)
	}
	return time.Since(t0)
}

// peakRSS runs the command under GNU time and returns its peak RSS (KiB),
// or -1 without GNU time. Not from the rusage of a child of this process:
// Go starts children with CLONE_VM, and exec records the peak RSS of the
// memory it leaves, the benchmark's own, as the child's.
func peakRSS(tb testing.TB, bin string, args ...string) int64 {
	gnuTime, err := exec.LookPath("/usr/bin/time")
	if err != nil {
		return -1
	}
	out := filepath.Join(tb.TempDir(), "rss")
	cmd := exec.Command(gnuTime, append([]string{"-f", "%M", "-o", out, bin}, args...)...)
	cmd.Stdout = io.Discard
	if err := cmd.Run(); err != nil {
		tb.Fatalf("%s %v: %v", bin, args, err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		tb.Fatal(err)
	}
	kib, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		tb.Fatalf("GNU time wrote %q: %v", b, err)
	}
	return kib
}

// BenchmarkScanWaiters measures a scan with 10,000 threads blocked in semop
// (10 processes of 1,000 threads, each process on its own semaphore of one
// set) next to the undo-only scan of the same machine in the same run: a
// reader opened with NoWaiters, which visits the same tasks.
func BenchmarkScanWaiters(b *testing.B) {
	testenv.RequireRoot(b)
	const procs, threads = 10, 1000
	set := holder.NewSetVal(b, procs, 0)
	for i := range procs {
		holder.StartWaiter(b, fmt.Sprintf("threads:%d", threads), fmt.Sprintf("wait:%d:%d:-1", set, i))
	}
	for i := range procs {
		holder.BlockedOn(b, set, i, threads, false)
	}
	full, err := Open(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { full.Close() })
	undoOnly, err := Open(&Options{NoWaiters: true})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { undoOnly.Close() })
	// The undo-only scan through the same seq_file task iterator as the
	// waiter scan: what the waiters alone add to that walk. On kernels
	// without the open-coded scan it is undoOnly's path already.
	undoSeq, err := Open(&Options{NoWaiters: true, path: pathSeq})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { undoSeq.Close() })
	// Threads the kernel counts as waiting may still be on their way to
	// sleep; a scan reports sleepers only.
	testenv.EventuallyErr(b, fmt.Sprintf("a scan that sees the %d waiters", procs*threads), func() (bool, error) {
		snap, err := full.Scan()
		if err == nil {
			err = snap.WaitersErr
		}
		return err == nil && len(snap.WaitersOf(0, int32(set))) == procs*threads, err
	})

	var fullT, undoT, seqT time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := time.Now()
		if _, err := full.Scan(); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		if _, err := undoOnly.Scan(); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		if _, err := undoSeq.Scan(); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		fullT += t1.Sub(t0)
		undoT += t2.Sub(t1)
		seqT += t3.Sub(t2)
	}
	b.StopTimer()
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) / 1000 }
	b.ReportMetric(per(fullT), "scan-waiters-ms")
	b.ReportMetric(per(undoT), "scan-undo-only-ms")
	b.ReportMetric(float64(fullT)/float64(undoT), "x-undo-only")
	b.ReportMetric(per(seqT), "scan-undo-only-seq-ms")
	b.ReportMetric(float64(fullT)/float64(seqT), "x-undo-only-seq")
	b.Logf("undo-only scan through %s; the waiter scan through %s", ScanPath(undoOnly), ScanPath(full))
}

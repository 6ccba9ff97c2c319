//go:build amd64 || arm64

// The writer injects into other processes on x86-64 and arm64 (package inject).

package writer_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/semundo/semundo/inject"
	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/sysvsem"
	"github.com/semundo/semundo/undo"
	"github.com/semundo/semundo/writer"
	"golang.org/x/sys/unix"
)

// BenchmarkSet writes 2 sets of 8 semaphores into each of 1,000 sleeping
// targets (that already hold entries on both) and reports each target's
// stop time (interrupt stop to detach) at p50 and p99 and the wall time for
// all, next to a bare PTRACE_SEIZE/INTERRUPT/DETACH cycle per target
// measured in the same run (the floor). The targets are the children of
// reader/testdata/holdmany.c; in the kernel-matrix VM, which has no
// compiler, those of its Go twin (holder.StartMany): forked children of a
// Go process, one thread each, asleep in ppoll as holdmany's are on arm64.
func BenchmarkSet(b *testing.B) {
	r := openReader(b)
	const n = 1000
	a, c := newSetB(b, 8), newSetB(b, 8)
	var pids []int
	if testenv.InVM() {
		pids = holder.StartMany(b, n, []holder.Op{{Semid: a, Num: 0, Val: 1, Undo: true}, {Semid: c, Num: 7, Val: 1, Undo: true}})
	} else {
		src, err := os.ReadFile("../reader/testdata/holdmany.c")
		if err != nil {
			b.Fatal(err)
		}
		bin := testenv.BuildC(b, "holdmany", string(src))
		pids = startMany(b, bin, n, fmt.Sprintf("%d:0:1", a), fmt.Sprintf("%d:7:1", c))
	}

	var setStops, floorStops []time.Duration
	var setWall, floorWall time.Duration
	for i := 0; i < b.N; i++ {
		writes := make([]writer.Write, n)
		for j, pid := range pids {
			l, err := undo.Parse([]byte(fmt.Sprintf("%d %d 1 2 3 4 5 6 -7\n%d 0 0 0 0 0 0 %d -9\n", a, i%5-2, c, j%100)))
			if err != nil {
				b.Fatal(err)
			}
			writes[j] = writer.Write{PID: pid, List: l}
		}
		var mu sync.Mutex // the writes run in parallel
		opts := &writer.Options{Stats: func(pid int, st inject.Stats) { mu.Lock(); setStops = append(setStops, st.StopTime); mu.Unlock() }}
		t0 := time.Now()
		if err := writer.WriteProcesses(r, writes, opts); err != nil {
			b.Fatal(err)
		}
		setWall += time.Since(t0)

		t0 = time.Now()
		for _, pid := range pids {
			s, err := inject.Seize(pid)
			if err != nil {
				b.Fatal(err)
			}
			if err := s.Detach(); err != nil {
				b.Fatal(err)
			}
			floorStops = append(floorStops, s.Stats().StopTime)
		}
		floorWall += time.Since(t0)
	}
	b.ReportMetric(pct(setStops, 50), "set-stop-p50-us")
	b.ReportMetric(pct(setStops, 99), "set-stop-p99-us")
	b.ReportMetric(float64(setWall.Milliseconds())/float64(b.N), "set-all-ms")
	b.ReportMetric(pct(floorStops, 50), "floor-stop-p50-us")
	b.ReportMetric(pct(floorStops, 99), "floor-stop-p99-us")
	b.ReportMetric(float64(floorWall.Milliseconds())/float64(b.N), "floor-all-ms")
}

func pct(d []time.Duration, p int) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return float64(s[(len(s)-1)*p/100].Nanoseconds()) / 1000
}

func newSetB(b *testing.B, n int) int {
	b.Helper()
	id, err := sysvsemGet(n)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { sysvsemRemove(id) })
	return id
}

// startMany runs holdmany (see reader/testdata) and returns its children.
func startMany(b *testing.B, bin string, n int, ops ...string) []int {
	cmd := exec.Command(bin, append([]string{strconv.Itoa(n)}, ops...)...)
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { stdin.Close(); cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	if !sc.Scan() || sc.Text() != "ready" {
		b.Fatalf("holdmany: %q", sc.Text())
	}
	var pids []int
	for len(pids) < n && sc.Scan() {
		pid, err := strconv.Atoi(sc.Text())
		if err != nil {
			b.Fatal(err)
		}
		pids = append(pids, pid)
	}
	return pids
}

func sysvsemGet(n int) (int, error) { return sysvsem.Get(sysvsem.Private, n, unix.IPC_CREAT|0o600) }
func sysvsemRemove(id int)          { sysvsem.Remove(id) }

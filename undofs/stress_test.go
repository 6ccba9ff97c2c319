package undofs

import (
	"errors"
	"io/fs"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/undo"
)

// Readers loop over the files of processes that exit under them: every
// read either succeeds with text in the format or fails with ENOENT.
func TestReadersRaceExits(t *testing.T) {
	f := mountT(t, nil)
	set := holder.NewSet(t, 3)
	const n = 24
	helpers := make([]*holder.Helper, n)
	pids := make([]int, n)
	for i := range helpers {
		helpers[i] = holder.Start(t, "wait", []holder.Op{{Semid: set, Num: uint16(i % 3), Val: 1, Undo: true}}, nil)
		pids[i] = helpers[i].PID
	}
	dur := 2 * time.Second
	if testing.Short() {
		dur = time.Second
	}
	var stop atomic.Bool
	var reads, gone, listed atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	for r := 0; r < 4; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				pid := pids[rand.IntN(n)]
				b, err := readConcurrent(path(f, pid))
				switch {
				case errors.Is(err, fs.ErrNotExist):
					gone.Add(1)
				case err != nil:
					errc <- err
					return
				default:
					if _, perr := undo.Parse(b); perr != nil {
						errc <- perr
						return
					}
					reads.Add(1)
				}
				if rand.IntN(20) == 0 {
					if _, err := os.ReadDir(f.Dir()); err != nil {
						errc <- err
						return
					}
					listed.Add(1)
				}
			}
		}()
	}
	// Kill the helpers one by one across the run, in random order.
	for _, i := range rand.Perm(n) {
		time.Sleep(dur / n)
		helpers[i].Cmd.Process.Kill()
		helpers[i].Cmd.Wait()
	}
	stop.Store(true)
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Errorf("reader: %v (only ENOENT may fail a read)", err)
	}
	t.Logf("%d reads, %d ENOENT, %d listings", reads.Load(), gone.Load(), listed.Load())
	if gone.Load() == 0 || reads.Load() == 0 {
		t.Errorf("the race did not happen: %d reads, %d ENOENT", reads.Load(), gone.Load())
	}
	// The daemon still serves.
	h, _, _ := startHolder(t)
	if b, err := os.ReadFile(path(f, h.PID)); err != nil || string(b) != listText(t, f, h.PID) {
		t.Errorf("read after the race: %q, %v", b, err)
	}
}

// 1,000 open/read/close a second for 10 s (2 s with -short): the daemon's
// open files and goroutines must not grow.
func TestSoakOpenReadClose(t *testing.T) {
	f := mountT(t, nil)
	h, _, _ := startHolder(t)
	p := path(f, h.PID)
	want := listText(t, f, h.PID)
	secs := 10
	if testing.Short() {
		secs = 2
	}
	const rate = 1000
	var failed atomic.Int64
	one := func() {
		b, err := readConcurrent(p)
		if err != nil || string(b) != want {
			if failed.Add(1) == 1 {
				t.Errorf("read %s: %q, %v; want %q", p, b, err, want)
			}
		}
	}
	// Warm up, so that pools and reader goroutines reach their steady size.
	for range 200 {
		one()
	}
	runtime.GC()
	fds0, gs0 := countFDs(t), runtime.NumGoroutine()
	// Four clients, each paced at a quarter of the rate: a file every 4 ms
	// each; one that falls behind goes on at once.
	const clients = 4
	total := secs * rate
	var behind atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; i < total; i += clients {
				if d := time.Until(start.Add(time.Duration(i) * time.Second / rate)); d > 0 {
					time.Sleep(d)
				} else if d < -10*time.Millisecond {
					behind.Add(1)
				}
				one()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	runtime.GC()
	fds1, gs1 := countFDs(t), runtime.NumGoroutine()
	t.Logf("%d open/read/close in %v: %.0f a second (target %d); %d of them more than 10 ms late", total, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(), rate, behind.Load())
	t.Logf("open files %d -> %d, goroutines %d -> %d", fds0, fds1, gs0, gs1)
	if failed.Load() > 0 {
		t.Fatalf("%d reads failed", failed.Load())
	}
	// Slack: go-fuse keeps a small pool of pipes for splice.
	if fds1 > fds0+4 {
		t.Errorf("open files grew from %d to %d", fds0, fds1)
	}
	if gs1 > gs0+8 {
		t.Errorf("goroutines grew from %d to %d", gs0, gs1)
	}
	// The kernel sends RELEASE after close(2) has returned: give the last
	// ones a moment to arrive.
	var open, dirs int
	if !testenv.Until(testenv.Patience, func() bool {
		f.raw.mu.Lock()
		open, dirs = len(f.raw.files), len(f.raw.dirs)
		f.raw.mu.Unlock()
		return open == 0 && dirs == 0
	}) {
		t.Errorf("%v after all files were closed the daemon holds %d file and %d directory handles", testenv.Patience, open, dirs)
	}
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

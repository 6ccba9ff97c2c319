package reader_test

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
)

// TestChurn: 200 processes at a time create sets, take SEM_UNDO adjustments,
// remove the sets and exit, while scans run in a loop for 10 seconds (2 with
// -short, longer until a scan has seen a churn entry). No scan may fail,
// show an entry for a set whose removal had completed before the scan
// began, or give a wrong nsems.
func TestChurn(t *testing.T) {
	r := openReader(t)
	run := 10 * time.Second
	if testing.Short() {
		run = 2 * time.Second
	}
	const live = 200
	base := 0x5e000000 + rand.IntN(1<<10)<<18

	var mu sync.Mutex
	removed := map[int32]bool{}
	onRemoved := func(key int) { mu.Lock(); removed[int32(key)] = true; mu.Unlock() }

	// entries counts the churn entries the scans saw. Where starting a
	// process is slow (the kernel matrix's emulated guests) a churn process
	// may hold its entries in none of the scans of a short run: then the
	// run goes on until one was seen, within testenv.Patience.
	var entries atomic.Int64
	stop := make(chan struct{})
	var procs sync.WaitGroup
	var startErr error
	var started int
	go func() {
		defer close(stop)
		sem := make(chan struct{}, live)
		deadline, limit := time.Now().Add(run), time.Now().Add(testenv.Patience)
		for seq := 0; time.Now().Before(deadline) || (entries.Load() == 0 && time.Now().Before(limit)); seq++ {
			sem <- struct{}{}
			nsems := 1 + seq%63
			wait, err := holder.StartChurn(holder.ChurnKey(base, seq, nsems), nsems, onRemoved)
			if err != nil {
				startErr = err
				<-sem
				return
			}
			started++
			procs.Add(1)
			go func() {
				defer procs.Done()
				defer func() { <-sem }()
				if err := wait(); err != nil {
					t.Errorf("churn process: %v", err)
				}
			}()
		}
	}()

	scans := 0
	for done := false; !done; {
		select {
		case <-stop:
			done = true
		default:
		}
		mu.Lock()
		gone := make(map[int32]bool, len(removed))
		for k := range removed {
			gone[k] = true
		}
		mu.Unlock()
		snap, err := r.Scan()
		if err != nil {
			t.Fatalf("scan %d: %v", scans, err)
		}
		scans++
		for _, l := range snap.Lists {
			for _, e := range l.Entries {
				if int(e.Key)&^(1<<18-1) != base {
					continue
				}
				entries.Add(1)
				if gone[e.Key] {
					t.Errorf("scan %d: entry for set %d (key %#x), removed before the scan", scans, e.Semid, e.Key)
				}
				if want := int(e.Key) & 63; len(e.Adj) != want {
					t.Errorf("scan %d: set %d has %d values, want nsems %d", scans, e.Semid, len(e.Adj), want)
				}
			}
		}
	}
	procs.Wait()
	if startErr != nil {
		t.Fatal(startErr)
	}
	t.Logf("%d scans, %d churn processes, %d churn entries seen, %d sets removed", scans, started, entries.Load(), len(removed))
	if scans < 10 || entries.Load() == 0 || len(removed) < started/2 {
		t.Fatalf("churn did not happen: %d scans, %d entries, %d of %d sets removed", scans, entries.Load(), len(removed), started)
	}
}

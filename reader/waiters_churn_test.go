package reader_test

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/sysvsem"
)

// TestWaitersChurn scans in a loop for 10 s (1 s with -short) while waiters
// come and go on one set: threads whose semtimedop times out every few
// milliseconds and waits again (semaphore 0), threads that acquire
// semaphore 1 as the test posts it and wait again, and processes that wait
// for semaphore 2 to be zero and are killed a few scans later. No scan may
// fail, and every waiter a scan reports on the set must be one of the
// test's blocked threads with exactly the operations it was given.
func TestWaitersChurn(t *testing.T) {
	r := openReader(t)
	limit := 10 * time.Second
	if testing.Short() {
		limit = time.Second
	}
	set := holder.NewSetVal(t, 3, 0)
	if err := sysvsem.SetVal(set, 2, 1); err != nil {
		t.Fatal(err)
	}
	want := map[int][]sysvsem.Sembuf{} // by pid: the operations its threads wait with
	for range 3 {
		p := holder.StartWaiter(t, "threads:4", "timed:3", "loop", fmt.Sprintf("wait:%d:0:-1", set))
		want[p.PID] = []sysvsem.Sembuf{{Num: 0, Op: -1}}
	}
	for range 2 {
		p := holder.StartWaiter(t, "threads:4", "loop", fmt.Sprintf("wait:%d:1:-1", set))
		want[p.PID] = []sysvsem.Sembuf{{Num: 1, Op: -1}}
	}
	stop := make(chan struct{})
	var posts sync.WaitGroup
	posts.Add(1)
	go func() {
		defer posts.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Microsecond):
				sysvsem.Op(set, []sysvsem.Sembuf{{Num: 1, Op: 1, Flg: sysvsem.NoWait}})
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		posts.Wait()
	})

	var killed []*holder.Waiter
	seen := map[int16]int{} // waiters seen, by semaphore
	scans := 0
	for start := time.Now(); time.Since(start) < limit; scans++ {
		if scans%5 == 0 {
			p := holder.StartWaiter(t, "threads:2", fmt.Sprintf("wait:%d:2:0", set))
			want[p.PID] = []sysvsem.Sembuf{{Num: 2, Op: 0}}
			killed = append(killed, p)
		}
		if len(killed) > 3 {
			killed[0].Kill()
			killed = killed[1:]
		}
		snap, err := r.Scan()
		if err != nil {
			t.Fatalf("scan %d: %v", scans, err)
		}
		if snap.WaitersErr != nil {
			testenv.Missing(t, "reading blocked semop callers", snap.WaitersErr.Error())
		}
		for _, w := range snap.WaitersOf(0, int32(set)) {
			ops, ok := want[w.PID]
			if !ok {
				t.Fatalf("scan %d: waiter %+v on set %d is none of the test's processes", scans, w, set)
			}
			if !slices.Equal(w.Ops, ops) || w.TID == w.PID || w.Comm != "semwait" {
				t.Fatalf("scan %d: waiter %+v, want a non-main thread of semwait waiting with %v", scans, w, ops)
			}
			seen[int16(w.Ops[0].Num)]++
		}
	}
	// Each kind of waiter must have been seen, or the loop tested nothing.
	for num, what := range []string{"timing out", "acquiring", "killed"} {
		if seen[int16(num)] == 0 {
			t.Errorf("%d scans never saw a %s waiter (semaphore %d)", scans, what, num)
		}
	}
	t.Logf("%d scans, waiters seen by semaphore: %v", scans, seen)
}

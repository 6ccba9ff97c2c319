package reader

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/semundo/semundo/internal/holder"
	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/sysvsem"
)

// TestWaiterTableFull: more sleepers than the waiter table holds make the
// scan say that waiters are missing (ErrIncomplete), never pass a partial
// list of waiters as whole; the undo lists are read all the same.
func TestWaiterTableFull(t *testing.T) {
	testenv.RequireRoot(t)
	const slots, threads = 16, 40
	r, err := Open(&Options{sleepers: slots})
	if err != nil {
		if errors.Is(err, ErrNotSupported) {
			testenv.Missing(t, "BPF task iterator", err.Error())
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	if err := r.WaitersErr(); err != nil {
		if errors.Is(err, ErrNotSupported) {
			testenv.Missing(t, "reading blocked semop callers", err.Error())
		}
		t.Fatal(err)
	}
	id := holder.NewSetVal(t, 1, 0)
	done := make(chan error, threads)
	for range threads {
		go func() {
			runtime.LockOSThread()
			done <- sysvsem.Op(id, []sysvsem.Sembuf{{Num: 0, Op: -1}})
		}()
	}
	// Removing the set ends every call (EIDRM); NewSetVal's cleanup
	// removes it again, harmlessly.
	t.Cleanup(func() {
		sysvsem.Remove(id)
		for range threads {
			<-done
		}
	})
	testenv.Eventually(t, fmt.Sprintf("the kernel to count %d threads waiting on set %d", threads, id), func() bool {
		n, err := sysvsem.GetNcnt(id, 0)
		return err == nil && n == threads
	})
	var last error
	testenv.EventuallyErr(t, "a scan that says the waiter table is full", func() (bool, error) {
		snap, err := r.Scan()
		if err != nil {
			return false, err
		}
		last = snap.WaitersErr
		if last == nil {
			if n := len(snap.Waiters); n >= threads {
				return false, fmt.Errorf("a table of %d slots reported %d waiters with no error", slots, n)
			}
			return false, nil
		}
		if !errors.Is(last, ErrIncomplete) || !strings.Contains(last.Error(), "the waiter table had no room") {
			return false, fmt.Errorf("waiters error %v, want ErrIncomplete saying the table is full", last)
		}
		return true, nil
	})
	// Every later scan says so too, with the count of its own pass, also
	// after the open-coded scan loads its program again (as a ring buffer
	// that must grow makes it), whose count starts again at 0: a count
	// compared with the last scan's called such a scan complete, or
	// reported a wrapped difference.
	for i := range 3 {
		if i == 0 && r.oc != nil {
			if err := r.oc.load(r.oc.size); err != nil {
				t.Fatal(err)
			}
		}
		snap, err := r.Scan()
		if err != nil {
			t.Fatal(err)
		}
		var lost int
		if !errors.Is(snap.WaitersErr, ErrIncomplete) {
			t.Errorf("scan %d after the first with a full table: waiters error %v with %d waiters, want ErrIncomplete", i+1, snap.WaitersErr, len(snap.Waiters))
		} else if _, err := fmt.Sscanf(snap.WaitersErr.Error(), "the waiter table had no room for %d sleepers", &lost); err != nil || lost < 1 || lost > threads {
			t.Errorf("scan %d after the first with a full table: %v, want a count of 1 to %d missing", i+1, snap.WaitersErr, threads)
		}
	}
}

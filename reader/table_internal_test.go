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
		if !errors.Is(last, ErrIncomplete) || !strings.Contains(last.Error(), "no room in the waiter table") {
			return false, fmt.Errorf("waiters error %v, want ErrIncomplete saying the table is full", last)
		}
		return true, nil
	})
}

package plan

import (
	"errors"
	"testing"

	"github.com/semundo/semundo/sysvsem"
)

// TestTouch: for every value at the edges and inside, the call runs (in
// the kernel's model) without blocking or ERANGE on a semaphore without an
// adjustment and leaves value and adjustment as they were; every op has
// SEM_UNDO and IPC_NOWAIT and none is zero.
func TestTouch(t *testing.T) {
	for _, v := range []int{0, 1, 2, 100, sysvsem.SemVMX / 2, sysvsem.SemVMX - 1, sysvsem.SemVMX} {
		call, err := Touch(3, v)
		if err != nil {
			t.Fatalf("Touch(value %d): %v", v, err)
		}
		if len(call) != 2 {
			t.Fatalf("Touch(value %d) = %v, want two ops", v, call)
		}
		for _, op := range call {
			if op.Num != 3 || op.Op == 0 || op.Flg != sysvsem.Undo|sysvsem.NoWait {
				t.Fatalf("Touch(value %d): op %+v", v, op)
			}
		}
		values := []int{0, 0, 0, v}
		adj := []int16{0, 0, 0, 0}
		if err := Apply(values, adj, call, 500); err != nil {
			t.Fatalf("Touch(value %d) = %v: %v", v, call, err)
		}
		if values[3] != v || adj[3] != 0 {
			t.Fatalf("Touch(value %d): value %d, adj %d after", v, values[3], adj[3])
		}
	}
	var re *RangeError
	if _, err := Touch(0, sysvsem.SemVMX+1); !errors.As(err, &re) || !errors.Is(err, ErrRange) {
		t.Errorf("Touch of value %d: %v, want a RangeError", sysvsem.SemVMX+1, err)
	}
}

package par

import (
	"fmt"
	"sync/atomic"
	"testing"
)

func TestEach(t *testing.T) {
	for _, c := range []struct{ n, workers int }{{0, 4}, {1, 4}, {5, 1}, {5, 0}, {100, 2}, {3, 8}, {1000, 7}} {
		calls := make([]atomic.Int32, c.n)
		Each(c.n, c.workers, func(i int) { calls[i].Add(1) })
		for i := range calls {
			if got := calls[i].Load(); got != 1 {
				t.Errorf("Each(%d, %d): f(%d) called %d times, want 1", c.n, c.workers, i, got)
			}
		}
	}
	// One worker: in order, on the calling goroutine.
	var order []int
	Each(4, 1, func(i int) { order = append(order, i) })
	for i, v := range order {
		if v != i {
			t.Fatalf("Each(4, 1) called %v, want 0 1 2 3 in order", order)
		}
	}
}

func TestMap(t *testing.T) {
	sq, err := Map(50, 3, func(i int) (int, error) { return i * i, nil })
	if err != nil || len(sq) != 50 {
		t.Fatalf("Map = %d results, %v", len(sq), err)
	}
	for i, v := range sq {
		if v != i*i {
			t.Fatalf("Map result %d = %d, want %d", i, v, i*i)
		}
	}
	// The lowest failing index's error, whichever goroutine failed first.
	_, err = Map(50, 4, func(i int) (int, error) {
		if i == 7 || i == 30 {
			return 0, fmt.Errorf("failed at %d", i)
		}
		return i, nil
	})
	if err == nil || err.Error() != "failed at 7" {
		t.Fatalf("Map error %v, want the first failure in order (7)", err)
	}
}

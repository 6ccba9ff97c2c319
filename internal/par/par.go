// Package par runs the iterations of a loop on several goroutines: the
// checks and /proc reads that semundo makes for each process of a tree
// while CRIU holds it stopped, which are independent and mostly wait on
// the kernel.
package par

import (
	"sync"
	"sync/atomic"
)

// Each calls f(0) to f(n-1), each once, on up to workers goroutines, and
// returns when all have returned. With workers <= 1 it calls them in
// order on the calling goroutine. f must be safe to call concurrently;
// results go into slots indexed by i.
func Each(n, workers int, f func(i int)) {
	if workers > n {
		workers = n
	}
	if workers <= 1 {
		for i := range n {
			f(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				f(i)
			}
		}()
	}
	wg.Wait()
}

// Map is Each for an f with a result: it returns the n results in order,
// or the error of the lowest i that failed, as a loop that stops at its
// first error would (every f still runs).
func Map[T any](n, workers int, f func(i int) (T, error)) ([]T, error) {
	out := make([]T, n)
	errs := make([]error, n)
	Each(n, workers, func(i int) { out[i], errs[i] = f(i) })
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

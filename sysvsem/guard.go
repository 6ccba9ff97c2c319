//go:build linux

package sysvsem

import (
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// GETALL and SETALL carry no length: the kernel copies as many values as
// the set it finds has. A set id can name a different, larger set by the
// time the call runs (sem_next_id, which checkpoint/restore uses, recreates
// a given id; the 16-bit sequence number also wraps). With an ordinary Go
// buffer that would be a silent overwrite of the Go heap; so the values
// are placed to end exactly where an inaccessible page begins, and the
// kernel's copy faults (EFAULT) instead.
//
// Mapping a fresh guarded buffer per call costs tens of microseconds
// (BenchmarkGetAll), mostly munmap; one mapping is therefore kept for the
// life of the process and reused by whoever holds its lock.

// guardMap is an anonymous mapping: data bytes of read-write memory
// followed by one PROT_NONE page.
type guardMap struct {
	mem  []byte
	data int
}

func mapGuard(data int) (*guardMap, error) {
	page := os.Getpagesize()
	data = (data + page - 1) / page * page
	mem, err := unix.Mmap(-1, 0, data+page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	if err := unix.Mprotect(mem[data:], unix.PROT_NONE); err != nil {
		_ = unix.Munmap(mem)
		return nil, err
	}
	return &guardMap{mem: mem, data: data}, nil
}

// values returns room for n values ending at the guard page, and the
// address to give the kernel (valid also for n == 0, where the slice is
// empty). The memory is not Go-managed, so it neither moves nor is freed
// until unmap.
func (g *guardMap) values(n int) ([]uint16, unsafe.Pointer) {
	p := unsafe.Pointer(&g.mem[g.data-2*n])
	return unsafe.Slice((*uint16)(p), n), p
}

func (g *guardMap) unmap() { _ = unix.Munmap(g.mem) }

// guardCacheBytes covers sets of up to 32768 semaphores, more than the
// default SEMMSL (32000); only the pages the values touch get memory.
const guardCacheBytes = 64 << 10

var guardCache struct {
	sync.Mutex
	m *guardMap
}

// withGuard calls f with n zeroed values that end at a guard page, and the
// address of the first one.
func withGuard(n int, f func(vals []uint16, p unsafe.Pointer) error) error {
	if n < 0 || n > maxInt32 {
		return unix.EINVAL
	}
	// A busy cache means a concurrent call: map a private buffer rather
	// than wait behind a GETALL of a large set.
	if 2*n <= guardCacheBytes && guardCache.TryLock() {
		defer guardCache.Unlock()
		if guardCache.m == nil {
			m, err := mapGuard(guardCacheBytes)
			if err != nil {
				return err
			}
			guardCache.m = m
		}
		vals, p := guardCache.m.values(n)
		clear(vals) // no values of an earlier call may leak into this one
		return f(vals, p)
	}
	m, err := mapGuard(2 * n)
	if err != nil {
		return err
	}
	defer m.unmap()
	vals, p := m.values(n)
	return f(vals, p)
}

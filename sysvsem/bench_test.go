//go:build linux

package sysvsem

import (
	"strconv"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// BenchmarkGetAll prices GetAll's safety: "guarded" is GetAll (IPC_STAT,
// GETALL into the cached guarded mapping, IPC_STAT again), "heap-baseline"
// a bare GETALL into a Go slice, the unsafe way this package avoids.
// Compare the two in one run.
func BenchmarkGetAll(b *testing.B) {
	for _, n := range []int{4, 1000} {
		id, _ := newSet(b, n)
		b.Run("guarded/nsems="+strconv.Itoa(n), func(b *testing.B) {
			for b.Loop() {
				if _, err := GetAll(id); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("heap-baseline/nsems="+strconv.Itoa(n), func(b *testing.B) {
			buf := make([]uint16, n)
			for b.Loop() {
				if _, _, e := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), 0, CmdGetAll, uintptr(unsafe.Pointer(&buf[0])), 0, 0); e != 0 {
					b.Fatal(e)
				}
			}
		})
	}
}

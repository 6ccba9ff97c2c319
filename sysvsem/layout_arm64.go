//go:build linux

package sysvsem

import "unsafe"

// semid64DS mirrors asm-generic/sembuf.h for a 64-bit architecture, which
// arm64 uses (it has no asm/sembuf.h of its own): sem_otime and sem_ctime
// are plain longs with no padding words. Sizes and offsets below were read
// from the header with clang -target aarch64-linux-gnu.
type semid64DS struct {
	Perm  ipc64Perm
	Otime int64
	Ctime int64
	Nsems uint64
	_     uint64
	_     uint64
}

// Compile-time layout checks: an array length underflows if a field moved.
var (
	_ [88 - unsafe.Sizeof(semid64DS{})]struct{}
	_ [unsafe.Sizeof(semid64DS{}) - 88]struct{}
	_ [48 - unsafe.Offsetof(semid64DS{}.Otime)]struct{}
	_ [unsafe.Offsetof(semid64DS{}.Otime) - 48]struct{}
	_ [56 - unsafe.Offsetof(semid64DS{}.Ctime)]struct{}
	_ [unsafe.Offsetof(semid64DS{}.Ctime) - 56]struct{}
	_ [64 - unsafe.Offsetof(semid64DS{}.Nsems)]struct{}
	_ [unsafe.Offsetof(semid64DS{}.Nsems) - 64]struct{}
)

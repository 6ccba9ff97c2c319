//go:build linux

package sysvsem

import "unsafe"

// semid64DS mirrors x86-64's struct semid64_ds (arch/x86/include/uapi/asm/
// sembuf.h): unlike asm-generic, each time is followed by an unused word.
// Sizes and offsets below were read from the header with gcc.
type semid64DS struct {
	Perm  ipc64Perm
	Otime int64
	_     uint64
	Ctime int64
	_     uint64
	Nsems uint64
	_     uint64
	_     uint64
}

// Compile-time layout checks: an array length underflows if a field moved.
var (
	_ [104 - unsafe.Sizeof(semid64DS{})]struct{}
	_ [unsafe.Sizeof(semid64DS{}) - 104]struct{}
	_ [48 - unsafe.Offsetof(semid64DS{}.Otime)]struct{}
	_ [unsafe.Offsetof(semid64DS{}.Otime) - 48]struct{}
	_ [64 - unsafe.Offsetof(semid64DS{}.Ctime)]struct{}
	_ [unsafe.Offsetof(semid64DS{}.Ctime) - 64]struct{}
	_ [80 - unsafe.Offsetof(semid64DS{}.Nsems)]struct{}
	_ [unsafe.Offsetof(semid64DS{}.Nsems) - 80]struct{}
)

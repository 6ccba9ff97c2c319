//go:build linux

package sysvsem

import (
	"fmt"
	"time"
	"unsafe"
)

// Sembuf is one semaphore operation, laid out exactly like the kernel's
// struct sembuf (6 bytes) so a []Sembuf is passed to semop unchanged.
type Sembuf struct {
	Num uint16 // semaphore index within the set (sem_num)
	Op  int16  // >0 adds, <0 waits until it can subtract, 0 waits for zero (sem_op)
	Flg int16  // NoWait and/or Undo (sem_flg)
}

// The kernel copies nsops*6 bytes from the slice: any padding would shift
// every element after the first.
var _ [6 - unsafe.Sizeof(Sembuf{})]struct{}
var _ [unsafe.Sizeof(Sembuf{}) - 6]struct{}

// Perm is the ownership and permission part of a set (struct ipc64_perm).
type Perm struct {
	Key  int32  // key given to semget (0 for IPC_PRIVATE)
	UID  uint32 // owner's user id
	GID  uint32 // owner's group id
	CUID uint32 // creator's user id
	CGID uint32 // creator's group id
	Mode uint32 // permission bits (0o777 mask)
	Seq  uint16 // slot usage sequence number, part of the set's id
}

// SemidDS is a decoded struct semid64_ds, the result of IPC_STAT, SEM_STAT
// and SEM_STAT_ANY.
type SemidDS struct {
	Perm Perm
	// Otime is the time of the last successful semop on any semaphore of
	// the set; the zero Time if there has been none.
	Otime time.Time
	// Ctime is the time the set was created or last changed by IPC_SET,
	// SETVAL or SETALL.
	Ctime time.Time
	// Nsems is the number of semaphores in the set.
	Nsems int
}

// Seminfo is struct seminfo as filled by IPC_INFO ([Info]) and SEM_INFO
// ([SemInfo]). The layout matches the kernel's (ten C ints).
type Seminfo struct {
	Semmap int32 // SEMMAP; not used by Linux
	Semmni int32 // SEMMNI: most sets in the IPC namespace
	Semmns int32 // SEMMNS: most semaphores in all sets of the namespace
	Semmnu int32 // SEMMNU; not used by Linux
	Semmsl int32 // SEMMSL: most semaphores in one set
	Semopm int32 // SEMOPM: most operations in one semop call
	Semume int32 // SEMUME; not used by Linux
	// Semusz is SEMUSZ (20) for IPC_INFO; for SEM_INFO it is the number of
	// sets that exist in the namespace.
	Semusz int32
	Semvmx int32 // SEMVMX: largest semaphore value (32767)
	// Semaem is SEMAEM (32767) for IPC_INFO; for SEM_INFO it is the total
	// number of semaphores in all sets of the namespace.
	Semaem int32
}

var _ [40 - unsafe.Sizeof(Seminfo{})]struct{}
var _ [unsafe.Sizeof(Seminfo{}) - 40]struct{}

// ipc64Perm mirrors struct ipc64_perm from asm-generic/ipcbuf.h, which both
// x86-64 and arm64 use: mode_t is 32 bits there, so __pad1 is empty, and
// the compiler inserts 4 bytes before the first unsigned long.
type ipc64Perm struct {
	Key  int32
	UID  uint32
	GID  uint32
	CUID uint32
	CGID uint32
	Mode uint32
	Seq  uint16
	_    uint16
	_    uint64
	_    uint64
}

var _ [48 - unsafe.Sizeof(ipc64Perm{})]struct{}
var _ [unsafe.Sizeof(ipc64Perm{}) - 48]struct{}

func (r *semid64DS) decode() SemidDS {
	return SemidDS{
		Perm: Perm{
			Key:  r.Perm.Key,
			UID:  r.Perm.UID,
			GID:  r.Perm.GID,
			CUID: r.Perm.CUID,
			CGID: r.Perm.CGID,
			Mode: r.Perm.Mode,
			Seq:  r.Perm.Seq,
		},
		Otime: unixTime(r.Otime),
		Ctime: unixTime(r.Ctime),
		Nsems: int(min(r.Nsems, uint64(maxInt32))),
	}
}

// unixTime maps the kernel's "never" (0) to the zero Time so IsZero works.
func unixTime(sec int64) time.Time {
	if sec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, 0)
}

const maxInt32 = 1<<31 - 1

// SemidDSSize is the size in bytes of the kernel's struct semid64_ds on
// this architecture: the buffer IPC_STAT fills.
const SemidDSSize = int(unsafe.Sizeof(semid64DS{}))

// DecodeSemidDS decodes a struct semid64_ds that IPC_STAT wrote into b, for
// callers that run semctl elsewhere (in another process, by injection).
func DecodeSemidDS(b []byte) (SemidDS, error) {
	if len(b) < SemidDSSize {
		return SemidDS{}, fmt.Errorf("sysvsem: semid64_ds of %d bytes, want %d: %w", len(b), SemidDSSize, ErrMalformed)
	}
	var raw semid64DS
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&raw)), SemidDSSize), b)
	return raw.decode(), nil
}

// SeminfoSize is the size in bytes of struct seminfo (IPC_INFO, SEM_INFO).
const SeminfoSize = int(unsafe.Sizeof(Seminfo{}))

// DecodeSeminfo decodes a struct seminfo that IPC_INFO or SEM_INFO wrote
// into b.
func DecodeSeminfo(b []byte) (Seminfo, error) {
	if len(b) < SeminfoSize {
		return Seminfo{}, fmt.Errorf("sysvsem: seminfo of %d bytes, want %d: %w", len(b), SeminfoSize, ErrMalformed)
	}
	var si Seminfo
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&si)), SeminfoSize), b)
	return si, nil
}

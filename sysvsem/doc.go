//go:build linux

// Package sysvsem wraps the System V semaphore system calls (semget, semop,
// semtimedop, semctl) for Linux in pure Go.
//
// golang.org/x/sys/unix has the syscall numbers and the generic IPC_*
// constants but no semaphore wrappers, no SEM_UNDO, no semctl commands
// (GETVAL, GETALL, SETALL, SEM_STAT, SEM_INFO, ...) and no struct
// semid64_ds. semundo reads and writes semaphore undo lists, so it needs all
// of them with exact kernel semantics; this package supplies them and
// nothing else.
//
// Every call reports failure as an [*OpError] naming the operation and the
// set, wrapping the kernel's errno, so errors.Is(err, unix.EIDRM) and the
// like work. [Limits] reads /proc/sys/kernel/sem through a root-relative
// [FS] so its parser can be tested against fixture files.
//
// ABI notes, verified against the kernel source (ipc/sem.c) and on Linux 6.18:
//
//   - On amd64 and arm64 semctl is a direct system call that always uses the
//     64-bit structure layout (ksys_semctl is called with IPC_64). The IPC_64
//     flag (0x100) must NOT be or'ed into the command there: only the
//     old_semctl entry point of 32-bit architectures strips it, and the
//     direct call rejects 0x100|IPC_STAT with EINVAL. glibc likewise defines
//     __IPC_64 as 0 on these architectures.
//   - struct semid64_ds differs between the two: x86-64 keeps an unused
//     64-bit word after each of sem_otime and sem_ctime (104 bytes), arm64
//     uses asm-generic/sembuf.h without them (88 bytes). The per-architecture
//     files check the size and offsets at compile time.
//
// Only linux/amd64 and linux/arm64 are supported; other architectures fail
// to compile rather than guess a layout.
package sysvsem

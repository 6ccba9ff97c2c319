// Package sample holds no code: its tests check that a kernel-matrix VM
// offers what semundo's integration tests need (System V semaphores with
// SEM_UNDO, re-executed helper processes, kernel BTF, the bpf syscall) and
// log the kernel release they ran on. They pass on the host as well.
package sample

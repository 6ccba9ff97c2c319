// Package reader reads the System V semaphore undo lists (semadj) of every
// task on the machine with a BPF task iterator, on stock kernels from 5.8 on
// with BTF.
//
// The kernel keeps, for each process that called semop with SEM_UNDO, a list
// of adjustments that it applies when the process exits. No file or system
// call shows them; the 2008 patches that proposed /proc/<pid>/semundo were
// never merged. This package loads a small CO-RE BPF program that walks each
// task's list under RCU, as the kernel's own exit path does, and takes each
// set's size and key from the task's own IPC namespace.
//
// A Reader holds the loaded program; Scan returns every list at once and
// Read the list of one process. Lists are grouped as the kernel shares them:
// all threads of a process (and any task cloned with CLONE_SYSVSEM) share one
// list, reported once with every process that shares it.
package reader

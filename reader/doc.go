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
// list, reported once with every process that shares it. ReadProcess reads
// one process's list without visiting the other tasks (Linux >= 6.1: the
// task iterator's pid filter), naming only that process.
//
// From Linux 6.7 a Reader reads the lists with an open-coded task iterator
// instead (bpf_iter_task_* kfuncs): one run of a BPF_PROG_TYPE_SYSCALL
// program walks every task and leaves the same records in a ring buffer,
// sparing the seq_file step and the read that the task iterator costs per
// task. Open picks it when the kernel's BTF has those kfuncs and the
// program loads, and the task iterator otherwise; the lists are the same
// either way.
//
// Most of what Open costs is reading the kernel's BTF, which cilium/ebpf
// decodes whole (20-30 ms) to relocate a program and find its kfuncs and
// attach target. The open-coded scan's load takes what it needs (its
// kfuncs' type IDs, and the types its CO-RE relocations look at) from
// package kbtf instead, which reads them from the raw BTF in a few
// milliseconds; the task iterator's load still takes cilium/ebpf's way,
// which finds an iterator's attach target itself.
//
// The same pass reports the tasks blocked in semop or semtimedop
// (Snapshot.Waiters): a task's saved registers say which call it sleeps in
// and on which set; that set's queues are walked once a pass, and a queued
// entry is believed only for the task it names as its sleeper when that
// task's own registers name the same set, because the entries live on the
// sleepers' stacks and a woken sleeper's entry is soon garbage; and it is
// read only while that task provably does not run (off every run queue and
// every CPU, its voluntary context switches unchanged across the reads; on
// arm64, which may reorder loads, the reads are chained by address
// dependencies so that none escapes that window). This needs
// Linux 5.17 (bpf_loop, bpf_task_pt_regs); on older kernels
// Snapshot.WaitersErr says so and the lists are read as before.
package reader

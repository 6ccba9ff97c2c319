/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The few kernel types semundo's iterator reads, declared by hand instead of
 * a generated vmlinux.h: preserve_access_index makes every field access a
 * CO-RE relocation, so only the fields named here must exist in the running
 * kernel's BTF, at whatever offset it has them.
 */
#ifndef SEMUNDO_KERNEL_H
#define SEMUNDO_KERNEL_H

typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;

enum {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_ANY = 0,
	BPF_RB_NO_WAKEUP = 1,
};

struct list_head {
	struct list_head *next, *prev;
} __attribute__((preserve_access_index));

/* Only its name matters: sem_undo_list.refcnt is one, and its first four
 * bytes are the count (refcount_t -> atomic_t -> int). */
struct refcount_struct {
	int refs;
} __attribute__((preserve_access_index));

struct sem_undo_list {
	struct refcount_struct refcnt;
	struct list_head list_proc;
} __attribute__((preserve_access_index));

/* Since Linux 6.4 semadj is a flexible array at the end of the struct. */
struct sem_undo {
	struct list_head list_proc;
	int semid;
	short semadj[];
} __attribute__((preserve_access_index));

/* Before, it was a pointer to an array allocated right behind the struct. */
struct sem_undo___ptr {
	struct list_head list_proc;
	int semid;
	short *semadj;
} __attribute__((preserve_access_index));

struct sysv_sem {
	struct sem_undo_list *undo_list;
} __attribute__((preserve_access_index));

struct xarray {
	void *xa_head;
} __attribute__((preserve_access_index));

struct xa_node {
	unsigned char shift;
	void *slots[64];
} __attribute__((preserve_access_index));

struct idr {
	struct xarray idr_rt;
	unsigned int idr_base;
} __attribute__((preserve_access_index));

struct ipc_ids {
	int in_use;
	struct idr ipcs_idr;
} __attribute__((preserve_access_index));

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct ipc_namespace {
	struct ipc_ids ids[3];
	struct ns_common ns;
} __attribute__((preserve_access_index));

struct nsproxy {
	struct ipc_namespace *ipc_ns;
} __attribute__((preserve_access_index));

/* One semaphore of a set: its value and its own queues of blocked
 * single-operation semops. */
struct sem {
	int semval;
	struct list_head pending_alter;
	struct list_head pending_const;
} __attribute__((preserve_access_index));

struct sembuf {
	unsigned short sem_num;
	short sem_op;
	short sem_flg;
};

/* A blocked semop: lives on the sleeper's kernel stack, linked into one of
 * its set's queues while the sleeper waits. */
struct sem_queue {
	struct list_head list;
	struct task_struct *sleeper;
	struct sembuf *sops;
	struct sembuf *blocking;
	int nsops;
} __attribute__((preserve_access_index));

/* The registers a task entered the kernel with, in each architecture's
 * names: CO-RE keeps the one that matches the running kernel. */
struct pt_regs___x86 {
	unsigned long r10;
	unsigned long dx;
	unsigned long si;
	unsigned long di;
	unsigned long orig_ax;
} __attribute__((preserve_access_index));

struct pt_regs___arm64 {
	__u64 regs[31];
	__u64 orig_x0;
	__s32 syscallno;
} __attribute__((preserve_access_index));

struct pt_regs;

struct kern_ipc_perm {
	bool deleted;
	int id;
	int key;
} __attribute__((preserve_access_index));

struct sem_array {
	struct kern_ipc_perm sem_perm;
	struct list_head pending_alter;
	struct list_head pending_const;
	int sem_nsems;
	struct sem sems[];
} __attribute__((preserve_access_index));

struct pid_namespace {
	struct ns_common ns;
} __attribute__((preserve_access_index));

struct upid {
	int nr;
	struct pid_namespace *ns;
} __attribute__((preserve_access_index));

struct pid {
	unsigned int level;
	struct upid numbers[1];
} __attribute__((preserve_access_index));

struct task_struct {
	unsigned int __state;
	unsigned int flags;
	int on_cpu;
	int on_rq;
	unsigned long nvcsw;
	int pid;
	int tgid;
	char comm[16];
	struct sysv_sem sysvsem;
	struct nsproxy *nsproxy;
	struct pid *thread_pid;
	struct task_struct *group_leader;
} __attribute__((preserve_access_index));

struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
} __attribute__((preserve_access_index));

struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
} __attribute__((preserve_access_index));

#endif

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * semundo's reader: a task iterator that reports every live System V
 * semaphore undo entry (semadj) of every task, with the size and key of the
 * set it belongs to, taken from the task's own IPC namespace.
 *
 * Each task with an undo list writes one record to the iterator's seq file,
 * followed by the list's entries when the task carries the list and they
 * fit. A seq file holds at most 32 KiB for one task and rolls back (then
 * shows again) a task whose output overflows, so a list too long for that
 * goes to a ring buffer in chunks, tagged with a nonce that the task's seq
 * record repeats: chunks of a rolled-back run have no record and user space
 * drops them.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "records.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Task records go to the iterator's seq file. */
static __always_inline void emit(void *out, const void *data, __u32 len)
{
	bpf_seq_write((struct seq_file *)out, (void *)data, len);
}

/* The level of the reader's PID namespace (0 for the initial one), whose
 * tasks the iterator walks (the namespace of the task that opened its seq
 * file) and whose pids the records carry (lists.h's pid_level), and the
 * pass that read it. From the reader's own task, which reads the seq file:
 * not from user space, which can only count the levels in the NSpid line
 * of a /proc, and a container's own /proc shows none above it (the records
 * carried the pids of the initial namespace). bpf_get_current_task (the
 * _btf one came in Linux 5.11) and probe reads, for the bounded program of
 * 5.8-5.16. Read once a pass: every task with a list or in semop asks. */
__u64 reader_pidns_session = 0;
__u32 reader_pidns_level = 0;

static __always_inline __u32 pid_level(__u64 session)
{
	if (reader_pidns_session != session) {
		struct task_struct *me = (struct task_struct *)bpf_get_current_task();
		reader_pidns_level = BPF_CORE_READ(me, thread_pid, level);
		reader_pidns_session = session;
	}
	return reader_pidns_level;
}

#include "lists.h"

#include "waiters.h"

/* For kernels with bpf_loop (5.17+): any list length. */
SEC("iter/task")
int semundo_tasks(struct bpf_iter__task *ctx)
{
	struct task_struct *task = ctx->task;

	if (want_waiters && task) {
		/* The task's address as a number, read as one. */
		__u64 key = 0;
		if (!bpf_probe_read_kernel(&key, sizeof(key), &ctx->task))
			waiter(ctx->meta->seq, ctx->meta->session_id, task, key, (void *)bpf_task_pt_regs(task));
	}
	/* Declared after the waiter's part, whose stack it may then share:
	 * the verifier allows 512 bytes for a program and the callbacks it
	 * calls together, and Linux 6.1 counted 544 and refused the waiter
	 * code when this record was live across it. */
	struct semundo_task rec = {};
	struct walk *w = begin(ctx->meta->seq, ctx->meta->session_id, task, &rec);
	if (!w)
		return 0;
	__u64 first = w->pos;
	long n = bpf_loop(SEMUNDO_MAX_ENTRIES, walk_step, 0, 0);
	end(ctx->meta->seq, &rec, first, n >= SEMUNDO_MAX_ENTRIES);
	return 0;
}

/* For older kernels: the verifier unrolls a bounded loop, and it gives up
 * on some thousands of iterations. */
SEC("iter/task")
int semundo_tasks_bounded(struct bpf_iter__task *ctx)
{
	struct semundo_task rec = {};
	struct walk *w = begin(ctx->meta->seq, ctx->meta->session_id, ctx->task, &rec);
	int i;

	if (!w)
		return 0;
	__u64 first = w->pos;
	for (i = 0; i < SEMUNDO_MAX_ENTRIES_BOUNDED; i++)
		if (step())
			break;
	end(ctx->meta->seq, &rec, first, i == SEMUNDO_MAX_ENTRIES_BOUNDED);
	return 0;
}

/* Visits every task and emits nothing: the floor a scan is measured
 * against in the benchmarks. Never loaded otherwise. */
SEC("iter/task")
int semundo_floor(struct bpf_iter__task *ctx)
{
	return 0;
}

/* Keep the record types in BTF for bpf2go's -type. */
const struct semundo_task *unused_task __attribute__((unused));
const struct semundo_entry *unused_entry __attribute__((unused));
const struct semundo_chunk *unused_chunk __attribute__((unused));
const struct semundo_wait *unused_wait __attribute__((unused));

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * semundo's reader: a task iterator that reports every live System V
 * semaphore undo entry (semadj) of every task, with the size and key of the
 * set it belongs to, taken from the task's own IPC namespace.
 *
 * Output goes two ways. The iterator's seq file gets one small fixed record
 * per task that has an undo list; the entries themselves go to a ring buffer.
 * A seq file holds at most 32 KiB for one task and rolls back a task whose
 * output overflows, while one entry alone can carry 128 KiB of adjustments;
 * the ring buffer has no such limit, and writing the task record first (and
 * nothing else to the seq file) means a rolled-back task has sent nothing to
 * the ring buffer yet.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "records.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The level of the reader's PID namespace (0 for the initial one): the
 * iterator walks the tasks of that namespace, and pids are reported as the
 * reader sees them there. */
const volatile __u32 pidns_level = 0;

/* The task's pid number at the reader's PID namespace level. */
static __always_inline __u32 pid_at_level(struct task_struct *task)
{
	struct pid *p = BPF_CORE_READ(task, thread_pid);
	__u32 lvl = pidns_level;
	int nr = 0;

	if (!p || lvl > BPF_CORE_READ(p, level) || lvl > 63)
		return 0;
	/* The local struct upid is smaller than the kernel's: index by the
	 * kernel's size, not by C's. */
	bpf_probe_read_kernel(&nr, sizeof(nr),
			      (void *)p + bpf_core_field_offset(struct pid, numbers) +
				      lvl * bpf_core_type_size(struct upid) +
				      bpf_core_field_offset(struct upid, nr));
	return nr;
}

/* IPC ids carry the index in their low bits: 15 of them, or 24 when the
 * kernel was booted with ipcmni_extend. */
#define IPCMNI_SHIFT 15
#define IPCMNI_EXTEND_SHIFT 24
#define IPC_SEM_IDS 0

/* A list is shared by every task cloned with CLONE_SYSVSEM (all threads of a
 * process). The first task of a pass to show a list owns it and sends its
 * entries; later tasks only name the owner. Keyed by the list's address,
 * which never leaves the kernel. */
struct owner {
	__u64 session;
	__u32 tid;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536); /* resized by the loader */
	__type(key, __u64);
	__type(value, struct owner);
} owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20); /* resized by the loader */
} records SEC(".maps");

struct scratch {
	struct semundo_rec rec;
	short adj[SEMUNDO_MAX_NSEMS + 1];
};

/* One slot is enough: the loader runs one pass at a time. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

/* The live set with this id in ns, found the way ipc_obtain_object_idr does:
 * through the namespace's IDR, an xarray whose nodes fan out by
 * XA_CHUNK_SIZE slots. */
static __always_inline struct sem_array *find_set(struct ipc_namespace *ns, int semid, int shift)
{
	struct idr *idr = &ns->ids[IPC_SEM_IDS].ipcs_idr;
	unsigned long mask = bpf_core_field_size(((struct xa_node *)0)->slots) / sizeof(void *) - 1;
	unsigned long idx = (unsigned long)(semid & ((1 << shift) - 1)) - BPF_CORE_READ(idr, idr_base);
	unsigned long entry = (unsigned long)BPF_CORE_READ(idr, idr_rt.xa_head);
	int level;

	if ((entry & 3) != 2 || entry <= 4096) {
		/* A head that is not a node holds index 0 alone. */
		if (idx != 0)
			return 0;
	} else {
		for (level = 0; level < 8; level++) {
			struct xa_node *node = (struct xa_node *)(entry - 2);
			unsigned char nshift = BPF_CORE_READ(node, shift);
			unsigned long off = idx >> nshift;

			if (level == 0 && off > mask)
				return 0;
			off &= mask;
			if (bpf_probe_read_kernel(&entry, sizeof(entry), &node->slots[off]))
				return 0;
			if ((entry & 3) != 2 || entry <= 4096)
				break;
		}
	}
	/* Internal entries (a retry entry while the tree shrinks) are no set. */
	if (!entry || (entry & 3) == 2)
		return 0;

	struct sem_array *sma = (struct sem_array *)(entry - bpf_core_field_offset(struct sem_array, sem_perm));
	if (BPF_CORE_READ(sma, sem_perm.id) != semid || BPF_CORE_READ(sma, sem_perm.deleted))
		return 0;
	return sma;
}

/* Sends one undo entry. A global function, so the verifier checks it once
 * rather than once per iteration of the list walk. Returns 1 when an entry
 * was sent, 0 when the entry is dead, -1 when the ring buffer is full. */
__attribute__((noinline)) int send_entry(__u64 un_addr, __u64 ns_addr, __u32 list)
{
	struct sem_undo *un = (struct sem_undo *)un_addr;
	struct ipc_namespace *ns = (struct ipc_namespace *)ns_addr;
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	int semid;

	if (!s || !un)
		return 0;
	semid = BPF_CORE_READ(un, semid);
	/* freeary marks the entries of a removed set before unlinking them. */
	if (semid < 0)
		return 0;

	s->rec.kind = SEMUNDO_REC_ENTRY;
	s->rec.list = list;
	s->rec.semid = semid;
	s->rec.nsems = 0;
	s->rec.key = 0;
	s->rec.flags = 0;

	struct sem_array *sma = find_set(ns, semid, IPCMNI_SHIFT);
	if (!sma)
		sma = find_set(ns, semid, IPCMNI_EXTEND_SHIFT);
	if (!sma) {
		s->rec.flags = SEMUNDO_ENTRY_NOSET;
		if (bpf_ringbuf_output(&records, &s->rec, sizeof(s->rec), BPF_RB_NO_WAKEUP))
			return -1;
		return 1;
	}

	__u32 nsems = BPF_CORE_READ(sma, sem_nsems);
	s->rec.nsems = nsems;
	s->rec.key = BPF_CORE_READ(sma, sem_perm.key);
	if (nsems > SEMUNDO_MAX_NSEMS) {
		s->rec.flags = SEMUNDO_ENTRY_TOOBIG;
		if (bpf_ringbuf_output(&records, &s->rec, sizeof(s->rec), BPF_RB_NO_WAKEUP))
			return -1;
		return 1;
	}

	const void *src;
	if (bpf_core_field_exists(((struct sem_undo___ptr *)0)->semadj))
		src = BPF_CORE_READ((struct sem_undo___ptr *)un, semadj);
	else
		src = (const void *)un + bpf_core_field_offset(struct sem_undo, semadj);

	__u32 n = (nsems * sizeof(short)) & 0x1ffff;
	if (n && bpf_probe_read_kernel(s->adj, n, src))
		return 0;
	if (bpf_ringbuf_output(&records, s, sizeof(s->rec) + n, BPF_RB_NO_WAKEUP))
		return -1;
	return 1;
}

static __always_inline void send_end(__u32 list, __u32 count, __u32 flags)
{
	struct semundo_rec end = {
		.kind = SEMUNDO_REC_END,
		.list = list,
		.nsems = count,
		.flags = flags,
	};
	bpf_ringbuf_output(&records, &end, sizeof(end), 0);
}

/* The state of one list walk. */
struct walk {
	struct list_head *head;
	struct list_head *pos;
	__u64 ns;
	__u32 list;
	__u32 count;
	__u32 flags;
};

/* Sends the entry at w->pos and steps to the next; 1 ends the walk. */
static long walk_step(__u64 i, void *data)
{
	struct walk *w = data;

	if (!w->pos || w->pos == w->head)
		return 1;
	int r = send_entry((__u64)w->pos - bpf_core_field_offset(struct sem_undo, list_proc), w->ns,
			   w->list);
	if (r < 0) {
		w->flags |= SEMUNDO_END_LOST;
		return 1;
	}
	w->count += r;
	/* Through a local: BPF_CORE_READ(w->pos, ...) would relocate struct
	 * walk's own fields against the kernel's BTF, where it does not exist. */
	struct list_head *pos = w->pos;
	w->pos = BPF_CORE_READ(pos, next);
	return 0;
}

/* Writes the task's record and, when the task owns its list, sends the list.
 * Returns the walk to run, or 0 when there is nothing to send. */
static __always_inline int begin(struct bpf_iter__task *ctx, struct walk *w)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	struct semundo_task rec = {};

	if (!task)
		return 0;
	struct sem_undo_list *ulp = BPF_CORE_READ(task, sysvsem.undo_list);
	if (!ulp)
		return 0;
	struct ipc_namespace *ns = BPF_CORE_READ(task, nsproxy, ipc_ns);
	if (!ns)
		return 0; /* exiting; exit_sem has run or is running */

	__u64 session = ctx->meta->session_id;
	__u64 key = (__u64)ulp;
	struct owner *o = bpf_map_lookup_elem(&owners, &key);
	int fresh = !o || o->session != session;

	if (pidns_level == 0) {
		rec.tid = BPF_CORE_READ(task, pid);
		rec.tgid = BPF_CORE_READ(task, tgid);
	} else {
		rec.tid = pid_at_level(task);
		rec.tgid = pid_at_level(BPF_CORE_READ(task, group_leader));
	}
	rec.list = fresh ? rec.tid : o->tid;
	rec.ipcns = BPF_CORE_READ(ns, ns.inum);
	/* A task that the previous read rolled back comes again: it owns. */
	if (rec.list == rec.tid)
		rec.flags = SEMUNDO_TASK_OWNER;
	bpf_probe_read_kernel(rec.comm, sizeof(rec.comm), task->comm);

	/* Overflow: the next read shows this task again, so send nothing now. */
	if (bpf_seq_write(seq, &rec, sizeof(rec)))
		return 0;
	if (!(rec.flags & SEMUNDO_TASK_OWNER))
		return 0;
	if (fresh) {
		struct owner nv = { .session = session, .tid = rec.tid };
		bpf_map_update_elem(&owners, &key, &nv, BPF_ANY);
	}
	struct list_head *head = &ulp->list_proc;
	w->head = head;
	w->pos = BPF_CORE_READ(head, next);
	w->ns = (__u64)ns;
	w->list = rec.list;
	return 1;
}

/* lookup_undo moves the entry it uses to the front of the list without
 * waiting for readers, so a walk that races it can miss that entry: a
 * changed first entry tells user space to look again. */
static __always_inline void end(struct walk *w, struct list_head *first, int truncated)
{
	if (truncated)
		w->flags |= SEMUNDO_END_TRUNCATED;
	struct list_head *head = w->head;

	if (BPF_CORE_READ(head, next) != first)
		w->flags |= SEMUNDO_END_UNSTABLE;
	send_end(w->list, w->count, w->flags);
}

/* For kernels with bpf_loop (5.17+): any list length. */
SEC("iter/task")
int semundo_tasks(struct bpf_iter__task *ctx)
{
	struct walk w = {};

	if (!begin(ctx, &w))
		return 0;
	struct list_head *first = w.pos;
	long n = bpf_loop(SEMUNDO_MAX_ENTRIES, walk_step, &w, 0);
	end(&w, first, n >= SEMUNDO_MAX_ENTRIES && w.pos != w.head);
	return 0;
}

/* For older kernels: the verifier unrolls a bounded loop, and it gives up
 * on some thousands of iterations. */
SEC("iter/task")
int semundo_tasks_bounded(struct bpf_iter__task *ctx)
{
	struct walk w = {};
	int i;

	if (!begin(ctx, &w))
		return 0;
	struct list_head *first = w.pos;
	for (i = 0; i < SEMUNDO_MAX_ENTRIES_BOUNDED; i++)
		if (walk_step(i, &w))
			break;
	end(&w, first, i == SEMUNDO_MAX_ENTRIES_BOUNDED && w.pos != w.head);
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
const struct semundo_rec *unused_rec __attribute__((unused));

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * semundo's reader on Linux >= 6.7: one run of a BPF_PROG_TYPE_SYSCALL
 * program (BPF_PROG_TEST_RUN) walks every task with the open-coded task
 * iterator (bpf_iter_task_*) and reports the same records as the seq_file
 * task iterator of semundo.bpf.c, without a seq_file step and a read per
 * task: the records are gathered in batches of up to 64 KiB and sent
 * through the ring buffer, next to the chunks of lists too long to send
 * inline. Loaded on its own, and only where the kernel has the kfuncs: on
 * older kernels its load would fail, and the seq_file reader does not
 * depend on it.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "records.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct bpf_iter_task {
	__u64 __opaque[3];
} __attribute__((aligned(8)));

/* bpf_iter_task_new's flags: enum bpf_iter_task_type of
 * kernel/bpf/task_iter.c, which the kernel's BTF does not carry (no CO-RE
 * relocation can look it up); its values are ABI. */
#define BPF_TASK_ITER_ALL_THREADS 1
#define BPF_TASK_ITER_PROC_THREADS 2

extern int bpf_iter_task_new(struct bpf_iter_task *it, struct task_struct *task, unsigned int flags) __ksym;
extern struct task_struct *bpf_iter_task_next(struct bpf_iter_task *it) __ksym;
extern void bpf_iter_task_destroy(struct bpf_iter_task *it) __ksym;
extern struct task_struct *bpf_task_from_pid(__s32 pid) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;
extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;

/* Appends a task record (and the entries behind it) to the run's batch;
 * defined below, after the ring buffer it flushes to. */
static __always_inline void emit(void *out, const void *data, __u32 len);

/* The type ID of struct task_struct in the kernel's BTF, for
 * bpf_rdonly_cast, set at load: not bpf_core_type_id_kernel, so that the
 * program's CO-RE relocations need only the kernel's types and not their
 * IDs (a load relocates against a subset of them: kerneltypes.go). */
const volatile __u32 task_struct_btf_id = 0;

/* The level of the reader's PID namespace (0 for the initial one), a
 * constant of the load: pids are reported as the reader sees them there. */
const volatile __u32 pidns_level = 0;

/* lists.h's level of the pids in records: the constant, which the
 * verifier follows. */
static __always_inline __u32 pid_level(__u64 session)
{
	return pidns_level;
}

#include "lists.h"
#include "waiters.h"

#define BATCH_SIZE (1 << 16)

/* The batch being filled: a semundo_batch header, then records. Twice
 * BATCH_SIZE so that a record of up to 32 KiB appended below BATCH_SIZE
 * provably fits. */
struct batch {
	__u32 off;
	__u32 pad;
	char buf[2 * BATCH_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct batch);
} batches SEC(".maps");

/* Batches that did not fit in the ring buffer this run; user space sizes
 * the ring to ring_bytes and runs again. */
__u64 batches_lost = 0;

static __always_inline void flush_batch(struct batch *b)
{
	struct semundo_batch *h = (struct semundo_batch *)b->buf;
	__u32 n = b->off & (2 * BATCH_SIZE - 1);

	h->magic = SEMUNDO_BATCH_MAGIC;
	h->bytes = n - sizeof(*h);
	ring_bytes += ((n + 7) & ~7) + 8; /* the ring's header and padding */
	if (bpf_ringbuf_output(&records, b->buf, n, BPF_RB_NO_WAKEUP))
		batches_lost++;
	b->off = sizeof(*h);
}

static __always_inline void emit(void *out, const void *data, __u32 len)
{
	struct batch *b = out;

	len &= 0x7fff;
	if (b->off + len > BATCH_SIZE)
		flush_batch(b);
	__u32 off = b->off & (BATCH_SIZE - 1);
	if (bpf_probe_read_kernel(b->buf + off, len, data))
		return;
	b->off = off + len;
}



/* semundo_scan's return values besides 0. */
#define SCAN_NO_BATCH 1
/* The reader's PID namespace is not pidns_level deep (reader_level is):
 * user space counted the levels in the NSpid line of a /proc of another
 * namespace, and loads the program again with the right one. */
#define SCAN_PIDNS_LEVEL 2

/* The depth of the reader's PID namespace, as its task has it. */
__u32 reader_level = 0;

/* Set by user space before a run: visit only this thread (filter_tid) or
 * the threads of this process (filter_tgid), pids of the reader's
 * namespace; 0 for every task. In the initial namespace the run walks only
 * the threads of that process; in another (the kfunc that finds a task by
 * pid takes the initial namespace's numbers) every task, keeping those the
 * filter names. */
__u32 filter_tid = 0;
__u32 filter_tgid = 0;

/* Numbers the runs: the session of the maps' entries. */
__u64 sessions = 0;

/* The address of the PID namespace at level pidns_level the task has a
 * pid in, 0 when it has none that deep. */
static __always_inline __u64 pidns_of(struct task_struct *task)
{
	__u64 ns = 0;
	void *u = upid_at_level(task, pidns_level);

	if (u)
		bpf_probe_read_kernel(&ns, sizeof(ns), u + bpf_core_field_offset(struct upid, ns));
	return ns;
}

/* 1 when the pass reports the task: it has a pid in the reader's PID
 * namespace, mine (0 for the initial one), and the filter, if any, names
 * it. The iterator walks every task of the machine, not only those of the
 * reader's namespace as the task iterator does. */
static __always_inline int wanted(struct task_struct *task, __u64 mine)
{
	if (mine && pidns_of(task) != mine)
		return 0;
	if (filter_tid && pid_at_level(task, pidns_level) != filter_tid)
		return 0;
	if (filter_tgid && pid_at_level(BPF_CORE_READ(task, group_leader), pidns_level) != filter_tgid)
		return 0;
	return 1;
}

/* Reports the task when it is a blocked semop caller (waiters.h); a global
 * function, checked once, like visit. */
__attribute__((noinline)) int visit_waiter(__u64 task_addr, __u64 regs, __u64 session, __u64 mine)
{
	struct task_struct *task = bpf_rdonly_cast((void *)task_addr, task_struct_btf_id);
	__u32 zero = 0;
	struct batch *out = bpf_map_lookup_elem(&batches, &zero);

	if (out && task && wanted(task, mine))
		waiter(out, session, task, task_addr, (void *)regs);
	return 0;
}

/* Reports the task's list (its record, at least) when it has a pid in the
 * reader's PID namespace, mine (0 for the initial one). A global function,
 * which the verifier checks once: inlined in the iterator's loop, it was
 * checked for every state of the loop, 90 ms of each load. It takes the
 * task as a number (a global function takes no kernel pointer before Linux
 * 6.8) and reads it through an untrusted pointer, as under RCU it may. */
__attribute__((noinline)) int visit(__u64 task_addr, __u64 session, __u64 mine)
{
	struct task_struct *task = bpf_rdonly_cast((void *)task_addr, task_struct_btf_id);
	struct semundo_task rec = {};
	__u32 zero = 0;
	struct batch *out = bpf_map_lookup_elem(&batches, &zero);

	if (!out || !task || !wanted(task, mine))
		return 0;
	struct walk *w = begin(out, session, task, &rec);
	if (!w)
		return 0;
	__u64 first = w->pos;
	long n = bpf_loop(SEMUNDO_MAX_ENTRIES, walk_step, 0, 0);
	end(out, &rec, first, n >= SEMUNDO_MAX_ENTRIES);
	return 0;
}

SEC("syscall")
int semundo_scan(void *ctx)
{
	struct bpf_iter_task it;
	struct task_struct *task;
	__u32 zero = 0;
	struct batch *out = bpf_map_lookup_elem(&batches, &zero);

	if (!out)
		return SCAN_NO_BATCH;
	out->off = sizeof(struct semundo_batch);
	__u64 session = ++sessions;
	/* The reader's namespace from its own task, not from user space,
	 * which counts the levels in the NSpid line of a /proc that may be
	 * another namespace's: a level counted wrong would show the tasks of
	 * the whole machine, with the pids of another namespace. The level
	 * stays a constant of the load, which keeps the verifier's work
	 * small. */
	struct task_struct *me = bpf_get_current_task_btf();
	reader_level = BPF_CORE_READ(me, thread_pid, level);
	if (reader_level != pidns_level)
		return SCAN_PIDNS_LEVEL;
	__u64 mine = pidns_level ? pidns_of(me) : 0;
	bpf_rcu_read_lock();
	/* A filter in the initial PID namespace, whose numbers
	 * bpf_task_from_pid takes: the threads of that one process. */
	struct task_struct *start = 0;
	__u32 flags = BPF_TASK_ITER_ALL_THREADS;
	__u32 pid = filter_tgid ? filter_tgid : filter_tid;
	if (pid && !pidns_level) {
		start = bpf_task_from_pid(pid);
		if (!start) {
			bpf_rcu_read_unlock();
			return 0;
		}
		flags = BPF_TASK_ITER_PROC_THREADS;
	}
	bpf_iter_task_new(&it, start, flags);
	while ((task = bpf_iter_task_next(&it))) {
		/* Most tasks stop here, with a direct load. Through an
		 * untrusted alias (the cast costs no instruction): a load of
		 * a pointer through a trusted one makes the verifier search
		 * the kernel's BTF for the type's trusted fields by name. */
		struct task_struct *t = bpf_rdonly_cast(task, task_struct_btf_id);
		int waits = want_waiters && may_wait(t);
		if (!waits && !t->sysvsem.undo_list)
			continue;
		__u64 addr = 0;
		bpf_probe_read_kernel(&addr, sizeof(addr), &task);
		if (waits) {
			/* The registers from the trusted task, which
			 * bpf_task_pt_regs takes, as a number. */
			long regs = bpf_task_pt_regs(task);
			__u64 ra = 0;
			bpf_probe_read_kernel(&ra, sizeof(ra), &regs);
			visit_waiter(addr, ra, session, mine);
		}
		if (t->sysvsem.undo_list)
			visit(addr, session, mine);
	}
	bpf_iter_task_destroy(&it);
	if (start)
		bpf_task_release(start);
	bpf_rcu_read_unlock();
	if (out->off > sizeof(struct semundo_batch))
		flush_batch(out);
	return 0;
}

/* Visits every task and emits nothing: the floor of this walk in the
 * benchmarks. Never loaded otherwise. */
SEC("syscall")
int semundo_scan_floor(void *ctx)
{
	struct bpf_iter_task it;

	bpf_rcu_read_lock();
	bpf_iter_task_new(&it, 0, BPF_TASK_ITER_ALL_THREADS);
	while (bpf_iter_task_next(&it))
		;
	bpf_iter_task_destroy(&it);
	bpf_rcu_read_unlock();
	return 0;
}

/* Keep the batch header in BTF for bpf2go's -type. */
const struct semundo_batch *unused_batch __attribute__((unused));

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Reading blocked semop callers: the part of semundo's reader that the
 * seq_file task iterator (semundo.bpf.c) and the open-coded one
 * (openiter.bpf.c) share. Included after lists.h, whose emit() and
 * pid_level() a waiter record goes through too.
 */
#ifndef SEMUNDO_WAITERS_H
#define SEMUNDO_WAITERS_H

/* Blocked semop callers. A task whose registers say it sleeps in semop or
 * semtimedop names the set; the first such task of a pass walks all of that
 * set's queues once and notes each queued sleeper here, keyed by its
 * task_struct address, with its queue entry. Every such task then looks
 * itself up: an entry is reported only when the task's own registers name
 * the same set and the entry still names the task as its sleeper, so a
 * stale entry (its sleeper woke, its stack moved on) is never believed. */
const volatile __u32 want_waiters = 0;
/* The running architecture's semop and semtimedop numbers, set by the
 * loader. */
const volatile __u32 nr_semop = 0;
const volatile __u32 nr_semtimedop = 0;

struct sleeper {
	__u64 task; /* struct task_struct * */
	__u64 session;
	__u64 q; /* struct sem_queue * */
	__s32 semid;
	__u32 ipcns;
};

/* An open-addressed table, not a hash map: a walk notes every sleeper of a
 * queue, and a hash map's update (its locks, its free lists) cost as much
 * as the rest of a waiter together. A slot of an earlier session is free;
 * within a session slots only fill, so a lookup stops at a free one. The
 * loader makes the size a power of two at least four times the tasks. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 65536); /* resized by the loader */
	__type(key, __u32);
	__type(value, struct sleeper);
} sleepers SEC(".maps");

const volatile __u32 sleepers_mask = 65535;

#define SLEEPER_PROBES 16

/* Sleepers that found no slot in SLEEPER_PROBES probes (a table four times
 * the tasks makes that next to impossible): user space reads the count and
 * calls the pass's waiters incomplete when it grew. */
__u64 sleepers_lost = 0;

static __always_inline __u32 sleeper_hash(__u64 task)
{
	return (__u32)(((task >> 6) * 0x9E3779B97F4A7C15ULL) >> 32);
}

/* The slot of task in this session, or a free one to take; 0 when the
 * probes met neither. */
static __always_inline struct sleeper *sleeper_slot(__u64 task, __u64 session, int take)
{
	__u32 h = sleeper_hash(task);
	for (int i = 0; i < SLEEPER_PROBES; i++) {
		__u32 slot = (h + i) & sleepers_mask;
		struct sleeper *e = bpf_map_lookup_elem(&sleepers, &slot);
		if (!e)
			return 0;
		if (e->session != session)
			return take ? e : 0;
		if (e->task == task)
			return e;
	}
	return 0;
}

/* The sets whose queues a pass has walked, direct-mapped like sets: a
 * collision only costs a second walk. */
struct walked {
	__u64 session;
	__u64 ns;
	__s32 semid;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SET_CACHE);
	__type(key, __u32);
	__type(value, struct walked);
} walked SEC(".maps");

/* One queue walk: heads 0 and 1 are the set's own queues (operations on
 * several semaphores), 2 + 2i and 3 + 2i those of semaphore i. */
struct qwalk {
	__u64 sma;
	__u64 head;
	__u64 pos;
	__u64 session;
	__u32 h;
	__s32 semid;
	__u32 nheads;
	__u32 ipcns;
};

struct wscratch {
	struct qwalk w;
	/* A copy of the queue entry being checked: in the map, not on the
	 * stack, which the verifier allows 512 bytes for the program and
	 * the callbacks it calls together. */
	char qb[128];
	char buf[sizeof(struct semundo_wait) + 8192 + 64];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct wscratch);
} wscratch SEC(".maps");

/* A walk meets at most this many heads and entries: a queue that a stale
 * pointer turned into a cycle ends here. */
#define QWALK_MAX (1 << 22)

/* One step of a queue walk: moves to the next head, or notes the entry at
 * the walk's position; 1 ends the walk. */
__attribute__((noinline)) int qstep(void)
{
	__u32 zero = 0;
	struct wscratch *s = bpf_map_lookup_elem(&wscratch, &zero);

	if (!s)
		return 1;
	struct qwalk *w = &s->w;
	if (!w->pos || w->pos == w->head) {
		if (w->h >= w->nheads)
			return 1;
		__u64 head;
		if (w->h < 2) {
			head = w->sma + (w->h ? bpf_core_field_offset(struct sem_array, pending_const)
					      : bpf_core_field_offset(struct sem_array, pending_alter));
		} else {
			__u32 i = (w->h - 2) / 2;
			head = w->sma + bpf_core_field_offset(struct sem_array, sems) +
			       (__u64)i * bpf_core_type_size(struct sem) +
			       ((w->h & 1) ? bpf_core_field_offset(struct sem, pending_const)
					   : bpf_core_field_offset(struct sem, pending_alter));
		}
		w->h++;
		w->head = head;
		w->pos = 0;
		bpf_probe_read_kernel(&w->pos, sizeof(w->pos), (void *)head);
		return 0;
	}
	struct sem_queue *q = (struct sem_queue *)(w->pos - bpf_core_field_offset(struct sem_queue, list));
	/* The entry's link and sleeper in one read when they are near each
	 * other, as in every kernel so far (list, then sleeper). */
	__u64 qb[4] = {}, next = 0, task = 0, back = 0;
	__u32 lo = bpf_core_field_offset(struct sem_queue, list.next);
	__u32 so = bpf_core_field_offset(struct sem_queue, sleeper);
	if (so >= lo && so - lo < sizeof(qb) && !((so - lo) & 7)) {
		if (bpf_probe_read_kernel(qb, so - lo + 8, (void *)q + lo))
			goto unlinked;
		next = qb[0];
		task = qb[((so - lo) >> 3) & 3];
	} else {
		if (bpf_probe_read_kernel(&next, sizeof(next), (void *)q + lo))
			goto unlinked;
		task = (__u64)BPF_CORE_READ(q, sleeper);
	}
	if (bpf_probe_read_kernel(&back, sizeof(back), &((struct list_head *)next)->prev) || back != w->pos) {
unlinked:
		/* Unlinked under us: this queue's rest is not to be trusted. */
		w->pos = 0;
		return 0;
	}
	struct sleeper *e = task ? sleeper_slot(task, w->session, 1) : 0;
	if (task && !e)
		sleepers_lost++;
	if (e) {
		e->task = task;
		e->session = w->session;
		e->q = (__u64)q;
		e->semid = w->semid;
		e->ipcns = w->ipcns;
	}
	w->pos = next;
	return 0;
}

static long qwalk_step(__u64 i, void *data)
{
	return qstep() != 0;
}

/* Walks the queues of set semid in ns, once a pass. */
static __always_inline void walk_queues(__u64 session, struct ipc_namespace *ns, int semid)
{
	__u32 slot = ((__u32)semid ^ (__u32)((__u64)ns >> 10)) & (SET_CACHE - 1);
	struct walked *c = bpf_map_lookup_elem(&walked, &slot);
	__u32 zero = 0;

	if (!c || (c->session == session && c->ns == (__u64)ns && c->semid == semid))
		return;
	struct sem_array *sma = find_set(ns, semid, IPCMNI_SHIFT);
	if (!sma)
		sma = find_set(ns, semid, IPCMNI_EXTEND_SHIFT);
	if (!sma)
		return;
	c->session = session;
	c->ns = (__u64)ns;
	c->semid = semid;
	struct wscratch *s = bpf_map_lookup_elem(&wscratch, &zero);
	if (!s)
		return;
	__u32 nsems = BPF_CORE_READ(sma, sem_nsems);
	if (nsems > SEMUNDO_MAX_NSEMS)
		nsems = SEMUNDO_MAX_NSEMS;
	s->w.sma = (__u64)sma;
	s->w.head = 0;
	s->w.pos = 0;
	s->w.h = 0;
	s->w.session = session;
	s->w.semid = semid;
	s->w.nheads = 2 + 2 * nsems;
	s->w.ipcns = BPF_CORE_READ(ns, ns.inum);
	bpf_loop(QWALK_MAX, qwalk_step, 0, 0);
}

/* The syscall a task sleeps in and its first and fourth arguments, from its
 * user registers (bpf_task_pt_regs). */
static __always_inline int syscall_of(void *regs, __u64 *arg0, __u64 *arg3)
{
	if (!regs)
		return -1;
	if (bpf_core_field_exists(((struct pt_regs___x86 *)0)->orig_ax)) {
		struct pt_regs___x86 *r = regs;
		/* di and orig_ax are neighbours: one read. r10 (semtimedop's
		 * timeout) only matters for semtimedop. */
		__u64 b[2] = {};
		__u32 di = bpf_core_field_offset(struct pt_regs___x86, di);
		if (bpf_core_field_offset(struct pt_regs___x86, orig_ax) == di + 8) {
			if (bpf_probe_read_kernel(b, sizeof(b), regs + di))
				return -1;
			*arg0 = b[0];
			if ((int)b[1] == nr_semtimedop)
				*arg3 = BPF_CORE_READ(r, r10);
			return (int)b[1];
		}
		*arg0 = BPF_CORE_READ(r, di);
		*arg3 = BPF_CORE_READ(r, r10);
		return (int)BPF_CORE_READ(r, orig_ax);
	}
	if (bpf_core_field_exists(((struct pt_regs___arm64 *)0)->syscallno)) {
		struct pt_regs___arm64 *r = regs;
		*arg0 = BPF_CORE_READ(r, orig_x0);
		*arg3 = BPF_CORE_READ(r, regs[3]);
		return BPF_CORE_READ(r, syscallno);
	}
	return -1;
}

/* zero_of returns 0, computed from v by an instruction the compiler cannot
 * see through. A load whose address adds it depends on the load that gave
 * v: arm64 performs such a load after that one (address dependencies are
 * ordered, like every dependency there: syntactically, whatever the value),
 * where two independent loads may be performed in either order. The JITs
 * keep the instruction (arm64 cannot encode an AND with 0 as an immediate
 * and ANDs with a register holding 0). x86 orders loads anyway. */
static __always_inline __u64 zero_of(__u64 v)
{
	asm volatile("%0 &= 0" : "+r"(v));
	return v;
}

/* 1 when the task is on no run queue and runs on no CPU. on_cpu exists
 * on SMP kernels; without it only this CPU runs, and it runs this. Its
 * loads come after the load that gave after (see zero_of), on_cpu's after
 * on_rq's, and *dep is 0 computed from the last, for the load that must
 * follow them. */
static __always_inline int off_cpu(struct task_struct *task, __u64 after, __u64 *dep)
{
	task = (void *)task + zero_of(after);
	int v = *(volatile int *)&task->on_rq;
	/* Taken before the test: after it the compiler knows v is 0, and
	 * would pass the constant instead of the loaded register. */
	__u64 z = zero_of(v);
	if (v)
		return 0;
	if (bpf_core_field_exists(task->on_cpu)) {
		task = (void *)task + z;
		v = *(volatile int *)&task->on_cpu;
		z = zero_of(v);
		if (v)
			return 0;
	}
	*dep = z;
	return 1;
}

/* switches reads the task's voluntary switch count after the load that gave
 * dep. */
static __always_inline unsigned long switches(struct task_struct *task, __u64 dep)
{
	task = (void *)task + dep;
	return *(volatile unsigned long *)&task->nvcsw;
}

/* What fold_op_word ORs the copied operations into. */
struct fold_ctx {
	__u64 fold;
	__u32 words;
};

/* The words of copied operations the waiter check folds inline. */
#define FOLD_INLINE 8

/* bpf_loop callback: ORs word FOLD_INLINE + i of the operations copied
 * after the waiter record into the fold (see waiter). */
static long fold_op_word(__u32 i, void *c)
{
	struct fold_ctx *fc = c;
	__u32 zero = 0;
	struct wscratch *s = bpf_map_lookup_elem(&wscratch, &zero);

	i += FOLD_INLINE;
	if (!s || i >= fc->words)
		return 1;
	fc->fold |= *(__u64 *)(s->buf + sizeof(struct semundo_wait) + 8 * (i & 1023));
	return 0;
}

#define TASK_INTERRUPTIBLE 1
#define PF_KTHREAD 0x00200000

/* 1 when the task may be a blocked semop caller: a user task in an
 * interruptible sleep. */
static __always_inline int may_wait(struct task_struct *task)
{
	return (task->__state & TASK_INTERRUPTIBLE) && !(task->flags & PF_KTHREAD);
}

/* Writes a waiter record to out when the task sleeps in semop on a set
 * whose queue holds it. key is the task's address, as a number (it is
 * hashed, and the verifier allows no shifts of a pointer), regs its user
 * registers (bpf_task_pt_regs, which takes only a trusted task). */
static __always_inline void waiter(void *out, __u64 session, struct task_struct *task, __u64 key, void *regs)
{
	__u64 arg0 = 0, arg3 = 0;
	__u32 zero = 0;

	if (!may_wait(task))
		return;
	int nr = syscall_of(regs, &arg0, &arg3);
	if (nr < 0 || (nr != nr_semop && nr != nr_semtimedop))
		return;
	struct nsproxy *nsp = task->nsproxy;
	if (!nsp)
		return;
	/* The namespace's address as a number (it is hashed), read as one:
	 * the verifier allows no shifts of a pointer. */
	__u64 ns_addr = 0;
	if (bpf_probe_read_kernel(&ns_addr, sizeof(ns_addr), &nsp->ipc_ns) || !ns_addr)
		return;
	struct ipc_namespace *ns = (struct ipc_namespace *)ns_addr;
	int semid = (int)arg0;
	walk_queues(session, ns, semid);

	struct sleeper *v = sleeper_slot(key, session, 0);
	if (!v || v->session != session || v->semid != semid)
		return;
	struct sem_queue *q = (struct sem_queue *)v->q;
	/* The entry lives on the task's stack and is rewritten when the task
	 * wakes and calls semop again: read it only while the task provably
	 * does not run. A task off every run queue and off every CPU has
	 * slept since its entry was complete; if it wakes, it is back on a run
	 * queue until it sleeps again, which counts a voluntary switch. Off
	 * the run queue is not enough: a task going back to sleep leaves it
	 * before the switch is counted, and runs on until the switch (idle
	 * balancing can take a while there), so a check then would pass while
	 * what was read came from its run; on_cpu covers that stretch, and is
	 * cleared only after the count. */
	__u64 dep = 0;
	if (!off_cpu(task, 0, &dep))
		return;
	unsigned long csw = switches(task, dep);
	/* Every read of the stack comes after the count: this one by its
	 * address, the later ones by addresses read here. And every value
	 * kept from the stack goes into fold, which the checks after the
	 * reads depend on (see zero_of): on arm64 a load not so ordered could
	 * be performed after those checks, in a run they did not see. */
	struct wscratch *s = bpf_map_lookup_elem(&wscratch, &zero);
	if (!s)
		return;
	char *qb = s->qb;
	__u32 qsize = bpf_core_type_size(struct sem_queue);
	if (qsize > sizeof(s->qb) || bpf_probe_read_kernel(qb, qsize & 127, (void *)q + zero_of(csw)))
		return;
	__u64 sleeper = *(__u64 *)(qb + (bpf_core_field_offset(struct sem_queue, sleeper) & 120));
	__u64 sops = *(__u64 *)(qb + (bpf_core_field_offset(struct sem_queue, sops) & 120));
	__u64 next = *(__u64 *)(qb + (bpf_core_field_offset(struct sem_queue, list.next) & 120));
	int nsops = *(int *)(qb + (bpf_core_field_offset(struct sem_queue, nsops) & 124));
	__u64 back = 0;
	/* Still queued: a woken sleeper's entry is unlinked first. */
	if (sleeper != key || nsops <= 0 ||
	    bpf_probe_read_kernel(&back, sizeof(back), &((struct list_head *)next)->prev) ||
	    back != (__u64)q + bpf_core_field_offset(struct sem_queue, list))
		return;
	__u64 fold = sleeper | sops | next | (__u32)nsops | back;
	struct semundo_wait *rec = (struct semundo_wait *)s->buf;
	__u32 lvl = pid_level(session);
	rec->tid = lvl ? pid_at_level(task, lvl) : task->pid;
	rec->tgid = lvl ? pid_at_level(BPF_CORE_READ(task, group_leader), lvl) : task->tgid;
	rec->list = 0;
	rec->ipcns = v->ipcns;
	rec->flags = SEMUNDO_TASK_WAITER;
	rec->semid = semid;
	rec->wflags = 0;
	rec->blocking = -1;
	rec->pad = 0;
	if (bpf_core_field_exists(q->blocking)) {
		__u64 b = *(__u64 *)(qb + (bpf_core_field_offset(struct sem_queue, blocking) & 120));
		fold |= b;
		if (b >= sops && b < sops + (__u64)nsops * sizeof(struct sembuf))
			rec->blocking = (b - sops) / sizeof(struct sembuf);
	}
	bpf_probe_read_kernel(rec->comm, sizeof(rec->comm), task->comm);
	rec->nsops = nsops;
	if (nsops > SEMUNDO_MAX_WAIT_OPS) {
		nsops = SEMUNDO_MAX_WAIT_OPS;
		rec->wflags |= SEMUNDO_WAIT_TRUNC;
	}
	if (nr == nr_semtimedop && arg3)
		rec->wflags |= SEMUNDO_WAIT_TIMED;
	__u32 n = (__u32)nsops * sizeof(struct sembuf);
	if (bpf_probe_read_kernel(s->buf + sizeof(*rec), n & 8191, (void *)sops))
		return;
	/* The first 8 words (10 operations) inline, past the copy's end too
	 * (what lies there only adds to the fold); the rest, if any, in a
	 * callback, verified once: a loop with a break the verifier unrolled
	 * added some 12 ms to every load. */
	for (int i = 0; i < FOLD_INLINE; i++)
		fold |= *(__u64 *)(s->buf + sizeof(*rec) + 8 * i);
	__u32 words = ((n & 8191) + 7) / 8;
	if (words > FOLD_INLINE) {
		struct fold_ctx fc = { .fold = fold, .words = words };
		bpf_loop(words - FOLD_INLINE, fold_op_word, &fc, 0);
		fold = fc.fold;
	}
	/* Did not run meanwhile: what was read is one call's, whole. The
	 * switch count is read last, after the task is seen off the CPU. */
	if (!off_cpu(task, fold, &dep) || switches(task, dep) != csw)
		return;
	rec->ops = nsops;
	__u32 size = (sizeof(*rec) + (n & 8191) + 3) & ~3;
	emit(out, s->buf, size & 16383);
}

#endif

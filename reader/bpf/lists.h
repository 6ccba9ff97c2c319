/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Reading one task's undo list: the part of semundo's reader that the
 * seq_file task iterator (semundo.bpf.c) and the open-coded one
 * (openiter.bpf.c) share. Before including this file the includer
 * defines emit(), which writes a task record (and the entries behind it)
 * to wherever its pass sends them, and pid_level(), the level of the
 * reader's PID namespace (0 for the initial one), whose pids the records
 * carry.
 */
#ifndef SEMUNDO_LISTS_H
#define SEMUNDO_LISTS_H

/* IPC ids carry the index in their low bits: 15 of them, or 24 when the
 * kernel was booted with ipcmni_extend. */
#define IPCMNI_SHIFT 15
#define IPCMNI_EXTEND_SHIFT 24
#define IPC_SEM_IDS 0

/* A list shared by several tasks is carried by the first of them a pass
 * shows; the others name it. Keyed by the list's address, which never
 * leaves the kernel. Only lists with more than one reference go here. */
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

/* The state of one list walk: in the scratch map, not on the stack, so
 * that the step is a global function the verifier checks once. */
struct walk {
	__u64 head; /* struct list_head * */
	__u64 pos;  /* struct list_head * */
	__u64 ns;
	__u64 session;
	__u64 nonce;
	__u32 list;
	__u32 off;     /* bytes in scratch: a 64-byte header, then entries */
	__u32 entries; /* entries sent in all */
	__u32 pending; /* entries in scratch */
	__u32 chunks;
	__u32 flags;
};

#define SCRATCH_SIZE (1 << 18)

struct scratch {
	struct walk w;
	char buf[SCRATCH_SIZE];
};

/* One slot is enough: the loader runs one pass at a time. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch SEC(".maps");

/* The sets a pass has found, so that the thousand lists that name one set
 * look it up once. Direct-mapped; an entry is valid for its session only. */
struct set_info {
	__u64 session;
	__u64 ns;
	__s32 semid;
	__u32 nsems;
	__s32 key;
	__u32 found;
};

#define SET_CACHE 4096

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SET_CACHE);
	__type(key, __u32);
	__type(value, struct set_info);
} sets SEC(".maps");

/* The lists carried without the owners map (nobody else held them), by
 * tid: tid << 32 | low bits of the session. A thread created after its
 * leader was shown finds here that the leader carries their list. */
#define SHOWN 65536

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SHOWN);
	__type(key, __u32);
	__type(value, __u64);
} shown SEC(".maps");

/* Tags the ring buffer chunks of one program run. Passes never overlap. */
__u64 nonce_counter = 0;

/* Bytes a pass sent (or tried to send) through the ring buffer, headers
 * included: what the open-coded scan sizes its ring by. */
__u64 ring_bytes = 0;

/* The address of the task's struct upid at PID namespace level lvl > 0, 0
 * when its pid has no number that deep. The local struct upid is smaller
 * than the kernel's: index by the kernel's size, not by C's. */
static __always_inline void *upid_at_level(struct task_struct *task, __u32 lvl)
{
	struct pid *p = BPF_CORE_READ(task, thread_pid);

	if (!p || lvl > BPF_CORE_READ(p, level) || lvl > 63)
		return 0;
	return (void *)p + bpf_core_field_offset(struct pid, numbers) + lvl * bpf_core_type_size(struct upid);
}

/* The task's pid number in its PID namespace of level lvl: the reader's
 * (0 for the initial one), where pids are reported as the reader sees
 * them. */
static __always_inline __u32 pid_at_level(struct task_struct *task, __u32 lvl)
{
	int nr = 0;

	if (lvl == 0)
		return BPF_CORE_READ(task, pid);
	void *u = upid_at_level(task, lvl);
	if (!u)
		return 0;
	bpf_probe_read_kernel(&nr, sizeof(nr), u + bpf_core_field_offset(struct upid, nr));
	return nr;
}

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

/* Fills in the size and key of set semid in ns; false when no live set has
 * that id. A global function: the verifier checks it once, not once per
 * call site. */
__attribute__((noinline)) int lookup_set(__u64 session, __u64 ns_addr, int semid)
{
	__u32 slot = ((__u32)semid ^ (__u32)(ns_addr >> 10)) & (SET_CACHE - 1);
	struct set_info *c = bpf_map_lookup_elem(&sets, &slot);

	if (!c)
		return 0;
	if (c->session == session && c->ns == ns_addr && c->semid == semid)
		return c->found;

	struct ipc_namespace *ns = (struct ipc_namespace *)ns_addr;
	struct sem_array *sma = find_set(ns, semid, IPCMNI_SHIFT);
	if (!sma)
		sma = find_set(ns, semid, IPCMNI_EXTEND_SHIFT);
	c->session = session;
	c->ns = ns_addr;
	c->semid = semid;
	c->found = sma != 0;
	c->nsems = sma ? BPF_CORE_READ(sma, sem_nsems) : 0;
	c->key = sma ? BPF_CORE_READ(sma, sem_perm.key) : 0;
	return c->found;
}

/* Sends the entries gathered in scratch as one ring buffer chunk. */
static __always_inline int flush(struct walk *w, struct scratch *s)
{
	struct semundo_chunk *c = (struct semundo_chunk *)s->buf;
	__u32 n = w->off & (SCRATCH_SIZE - 1);

	c->magic = SEMUNDO_CHUNK_MAGIC;
	c->list = w->list;
	c->nonce = w->nonce;
	c->index = w->chunks;
	c->entries = w->pending;
	if (n < sizeof(*c))
		n = sizeof(*c);
	ring_bytes += ((n + 7) & ~7) + 8; /* the ring's header and padding */
	if (bpf_ringbuf_output(&records, s->buf, n, 0)) {
		w->flags |= SEMUNDO_TASK_LOST;
		return -1;
	}
	w->chunks++;
	w->flags |= SEMUNDO_TASK_RING;
	w->off = sizeof(*c);
	w->pending = 0;
	return 0;
}

/* Appends the entry at the walk's position to scratch and steps to the
 * next; 1 ends the walk. */
__attribute__((noinline)) int step(void)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);

	if (!s)
		return 1;
	struct walk *w = &s->w;
	struct list_head *pos = (struct list_head *)w->pos;
	if (!pos || w->pos == w->head)
		return 1;
	w->pos = (__u64)BPF_CORE_READ(pos, next);

	struct sem_undo *un = (struct sem_undo *)((void *)pos - bpf_core_field_offset(struct sem_undo, list_proc));
	int semid = BPF_CORE_READ(un, semid);
	/* freeary marks the entries of a removed set before unlinking them. */
	if (semid < 0)
		return 0;

	struct semundo_entry e = { .semid = semid };
	if (!lookup_set(w->session, w->ns, semid)) {
		e.flags = SEMUNDO_ENTRY_NOSET;
	} else {
		__u32 slot = ((__u32)semid ^ (__u32)(w->ns >> 10)) & (SET_CACHE - 1);
		struct set_info *c = bpf_map_lookup_elem(&sets, &slot);
		if (!c)
			return 1;
		e.nsems = c->nsems;
		e.key = c->key;
		if (e.nsems > SEMUNDO_MAX_NSEMS) {
			e.flags = SEMUNDO_ENTRY_TOOBIG;
			e.nsems = 0;
		}
	}

	__u32 n = (e.nsems * sizeof(short)) & 0x1ffff;
	__u32 size = sizeof(e) + ((n + 3) & ~3);
	if (w->pending && w->off + size > SEMUNDO_INLINE_MAX && flush(w, s))
		return 1;

	__u32 off = w->off & 0x7fff;
	*(struct semundo_entry *)(s->buf + off) = e;
	if (n) {
		const void *src;
		if (bpf_core_field_exists(((struct sem_undo___ptr *)0)->semadj))
			src = BPF_CORE_READ((struct sem_undo___ptr *)un, semadj);
		else
			src = (const void *)un + bpf_core_field_offset(struct sem_undo, semadj);
		if (bpf_probe_read_kernel(s->buf + off + sizeof(e), n, src))
			return 0; /* the entry went away under RCU: skip it */
		/* Zero the padding rather than leak old scratch bytes. */
		*(__u16 *)(s->buf + ((off + sizeof(e) + n) & (SCRATCH_SIZE - 2))) = 0;
	}
	w->off += size;
	w->pending++;
	w->entries++;
	if (w->off > SEMUNDO_INLINE_MAX && flush(w, s))
		return 1;
	return 0;
}

static long walk_step(__u64 i, void *data)
{
	return step() != 0;
}

/* The list address, and the tid of the task that carries it this pass;
 * 0 when the task has no list. */
static __always_inline __u32 owner_of(struct task_struct *task, struct sem_undo_list *ulp, __u64 session,
				     __u32 tid, __u32 lvl)
{
	/* A direct load: ulp is a BTF pointer the verifier follows. */
	int refs = *(int *)&ulp->refcnt;
	/* Nobody else holds it: the map need not know. */
	if (refs == 1) {
		__u32 slot = tid & (SHOWN - 1);
		__u64 *v = bpf_map_lookup_elem(&shown, &slot);
		if (v)
			*v = (__u64)tid << 32 | (__u32)session;
		return tid;
	}

	__u64 key = (__u64)ulp;
	struct owner *o = bpf_map_lookup_elem(&owners, &key);
	if (o && o->session == session)
		return o->tid;

	/* A thread whose group leader held the list alone when this pass
	 * showed it (the thread is newer): the leader carries it. */
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	if (leader != task && BPF_CORE_READ(leader, sysvsem.undo_list) == ulp) {
		__u32 ltid = pid_at_level(leader, lvl);
		__u32 slot = ltid & (SHOWN - 1);
		__u64 *v = bpf_map_lookup_elem(&shown, &slot);
		if (v && *v == ((__u64)ltid << 32 | (__u32)session))
			return ltid;
	}
	struct owner nv = { .session = session, .tid = tid };
	bpf_map_update_elem(&owners, &key, &nv, BPF_ANY);
	return tid;
}

/* Writes the task's record, and its list when it carries it; returns the
 * walk to follow (set up), or 0 when the task is done. */
static __always_inline struct walk *begin(void *out, __u64 session, struct task_struct *task,
					  struct semundo_task *rec)
{
	__u32 zero = 0;

	if (!task)
		return 0;
	/* Direct loads through BTF pointers, not helper calls: most tasks
	 * stop here, and this is the part of a pass every task pays. */
	struct sem_undo_list *ulp = task->sysvsem.undo_list;
	if (!ulp)
		return 0;
	struct nsproxy *nsp = task->nsproxy;
	if (!nsp)
		return 0; /* exiting; exit_sem has run or is running */
	struct ipc_namespace *ns = nsp->ipc_ns;
	if (!ns)
		return 0;

	__u32 lvl = pid_level(session);
	rec->tid = lvl ? pid_at_level(task, lvl) : task->pid;
	rec->tgid = lvl ? pid_at_level(BPF_CORE_READ(task, group_leader), lvl) : task->tgid;
	rec->list = owner_of(task, ulp, session, rec->tid, lvl);
	rec->ipcns = ns->ns.inum;
	bpf_probe_read_kernel(rec->comm, sizeof(rec->comm), task->comm);
	if (rec->list != rec->tid) {
		emit(out, rec, sizeof(*rec));
		return 0;
	}
	rec->flags = SEMUNDO_TASK_OWNER;
	rec->nonce = ++nonce_counter;

	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);
	if (!s)
		return 0;
	struct walk *w = &s->w;
	__builtin_memset(w, 0, sizeof(*w));
	struct list_head *head = &ulp->list_proc;
	w->head = (__u64)head;
	w->pos = (__u64)ulp->list_proc.next;
	w->ns = (__u64)ns;
	w->session = session;
	w->nonce = rec->nonce;
	w->list = rec->list;
	w->off = sizeof(struct semundo_task);
	return w;
}

/* lookup_undo moves the entry it uses to the front of the list without
 * waiting for readers, so a walk that races it can miss that entry: a
 * changed first entry tells user space to look again. Then the record goes
 * out, with the entries behind it or in the ring. */
static __always_inline void end(void *out, struct semundo_task *rec, __u64 first, int truncated)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratch, &zero);

	if (!s)
		return;
	struct walk *w = &s->w;
	struct list_head *head = (struct list_head *)w->head;
	if (truncated && w->pos && w->pos != w->head)
		w->flags |= SEMUNDO_TASK_TRUNCATED;
	if ((__u64)BPF_CORE_READ(head, next) != first)
		w->flags |= SEMUNDO_TASK_UNSTABLE;
	if ((w->flags & SEMUNDO_TASK_RING) && w->pending && !(w->flags & SEMUNDO_TASK_LOST))
		flush(w, s);
	rec->flags |= w->flags;
	rec->entries = w->entries;
	rec->chunks = w->chunks;
	if (rec->flags & (SEMUNDO_TASK_RING | SEMUNDO_TASK_LOST)) {
		emit(out, rec, sizeof(*rec));
		return;
	}
	*(struct semundo_task *)s->buf = *rec;
	emit(out, s->buf, w->off & 0x7fff);
}
#endif

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The binary records the iterator hands to user space. Go gets the same
 * layouts from bpf2go (-type), and TestRecordConstants keeps the #defines
 * equal to their Go mirrors.
 */
#ifndef SEMUNDO_RECORDS_H
#define SEMUNDO_RECORDS_H

/* Largest set whose adjustments the iterator copies: sem_num is a u16, so no
 * semop can reach a semaphore past index 65534 of a bigger set anyway. */
#define SEMUNDO_MAX_NSEMS 65535

/* Longest undo list walked per task: with bpf_loop, and without (a bounded
 * loop the verifier must unroll, and gives up on beyond some thousands). */
#define SEMUNDO_MAX_ENTRIES (1 << 23)
#define SEMUNDO_MAX_ENTRIES_BOUNDED 2048

/* Most bytes one task writes to the seq file: a seq file holds 32 KiB for one
 * task (PAGE_SIZE << 3 with 4 KiB pages), more on larger pages. A list whose
 * entries do not fit goes to the ring buffer instead. */
#define SEMUNDO_INLINE_MAX 16384

/* semundo_task.flags */
#define SEMUNDO_TASK_OWNER 1     /* this task's record carries the list */
#define SEMUNDO_TASK_RING 2      /* ... in ring buffer chunks, not inline */
#define SEMUNDO_TASK_TRUNCATED 4 /* the walk stopped at its limit */
#define SEMUNDO_TASK_UNSTABLE 8  /* the list was reordered during the walk */
#define SEMUNDO_TASK_LOST 16     /* a chunk did not fit in the ring buffer */
#define SEMUNDO_TASK_WAITER 32   /* a semundo_wait record, not a task's */

/* Most operations of one blocked semop a waiter record carries; the kernel's
 * default limit (SEMOPM) is 500. */
#define SEMUNDO_MAX_WAIT_OPS 1024

/* semundo_wait.wflags */
#define SEMUNDO_WAIT_TIMED 1 /* semtimedop with a timeout */
#define SEMUNDO_WAIT_TRUNC 2 /* more operations than SEMUNDO_MAX_WAIT_OPS */

/* semundo_entry.flags */
#define SEMUNDO_ENTRY_NOSET 1  /* no live set has this semid: being removed */
#define SEMUNDO_ENTRY_TOOBIG 2 /* nsems > SEMUNDO_MAX_NSEMS: no adjustments */

/* semundo_chunk.magic */
#define SEMUNDO_CHUNK_MAGIC 0x53454d55

/* semundo_batch.magic */
#define SEMUNDO_BATCH_MAGIC 0x53454d42

/* One per task that has an undo list, written to the iterator's seq file.
 * An owner's record is followed (without SEMUNDO_TASK_RING) by `entries`
 * entry records. */
struct semundo_task {
	__u32 tid;
	__u32 tgid;
	__u32 list;  /* tid of the task that carries the list in this pass */
	__u32 ipcns; /* inode number of the task's IPC namespace */
	__u32 flags;
	__u32 entries;
	__u64 nonce; /* tags this record's ring buffer chunks */
	__u32 chunks;
	__u32 pad;
	char comm[16];
	__u64 pad2;
};

/* One per task blocked in semop or semtimedop, written to the seq file
 * next to the task records, which it shares its first five fields with
 * (flags has SEMUNDO_TASK_WAITER). Followed by `ops` struct sembuf (6
 * bytes each), padded to a multiple of 4 bytes. */
struct semundo_wait {
	__u32 tid;
	__u32 tgid;
	__u32 list;  /* 0 */
	__u32 ipcns; /* the namespace semid belongs to */
	__u32 flags;
	__s32 semid;
	__u32 nsops;    /* operations in the call */
	__u32 ops;      /* operations that follow */
	__u32 wflags;
	__s32 blocking; /* index of the operation that blocks, or -1 */
	char comm[16];
	__u64 pad;
};

/* One undo entry, followed by nsems adjustments (shorts), padded to a
 * multiple of 4 bytes. */
struct semundo_entry {
	__s32 semid;
	__u32 nsems;
	__s32 key;
	__u32 flags;
};

/* A ring buffer record: part of one list's entries, in order. */
struct semundo_chunk {
	__u32 magic;
	__u32 list;
	__u64 nonce;
	__u32 index;
	__u32 entries;
	__u64 pad[5];
};

/* A ring buffer record of the open-coded scan: `bytes` bytes of task
 * records (and their inline entries) follow, as the task iterator writes
 * them to its seq file. */
struct semundo_batch {
	__u32 magic;
	__u32 bytes;
};

#endif

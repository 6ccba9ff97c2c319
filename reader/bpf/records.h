/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The binary records the iterator hands to user space. Go gets the same
 * layouts from bpf2go (-type), so a change here is a change there.
 */
#ifndef SEMUNDO_RECORDS_H
#define SEMUNDO_RECORDS_H

/* Largest set whose adjustments the iterator copies: sem_num is a u16, so no
 * semop can reach a semaphore past index 65534 of a bigger set anyway. */
#define SEMUNDO_MAX_NSEMS 65535

/* Longest undo list walked per task: with bpf_loop, and without (a bounded
 * loop the verifier must unroll). IPCMNI, the most sets a namespace can
 * have, is 32768 unless the kernel was booted with ipcmni_extend. */
#define SEMUNDO_MAX_ENTRIES (1 << 23)
#define SEMUNDO_MAX_ENTRIES_BOUNDED 2048

/* semundo_task.flags */
#define SEMUNDO_TASK_OWNER 1 /* the list's records follow in the ring buffer */

/* semundo_rec.kind */
#define SEMUNDO_REC_ENTRY 1
#define SEMUNDO_REC_END 2

/* semundo_rec.flags for SEMUNDO_REC_ENTRY */
#define SEMUNDO_ENTRY_NOSET 1  /* no live set has this semid: it is being removed */
#define SEMUNDO_ENTRY_TOOBIG 2 /* nsems > SEMUNDO_MAX_NSEMS: adjustments not copied */

/* semundo_rec.flags for SEMUNDO_REC_END */
#define SEMUNDO_END_TRUNCATED 1 /* more than SEMUNDO_MAX_ENTRIES entries */
#define SEMUNDO_END_UNSTABLE 2  /* the list was reordered during the walk */
#define SEMUNDO_END_LOST 4      /* a record did not fit in the ring buffer */

/* One per task that has an undo list, written to the iterator's seq file. */
struct semundo_task {
	__u32 tid;
	__u32 tgid;
	__u32 list;  /* tid of the first task of this pass that showed the list */
	__u32 ipcns; /* inode number of the task's IPC namespace */
	__u32 flags;
	__u32 pad;
	char comm[16];
};

/* Ring buffer records: a SEMUNDO_REC_ENTRY per live undo entry, followed by
 * nsems adjustments (shorts), then one SEMUNDO_REC_END per list. */
struct semundo_rec {
	__u32 kind;
	__u32 list;
	__s32 semid;
	__u32 nsems; /* for SEMUNDO_REC_END: the number of entries sent */
	__s32 key;
	__u32 flags;
};

#endif

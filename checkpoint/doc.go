// Package checkpoint saves and restores everything System V semaphore undo
// lists depend on: the IPC namespace's sets (same ids, keys, owners, modes
// and values) and the undo lists of the checkpointed processes.
//
// Capture freezes the processes (the cgroup v2 freezer, or SIGSTOP), reads
// the sets of their IPC namespace and their lists, thaws them, and returns
// an image (package image). RestoreSets recreates the sets in the caller's
// IPC namespace with their old ids through /proc/sys/kernel/sem_next_id
// (and, into a namespace without sets, its limits); RestoreUndo then writes
// each list into the live process that replaces the checkpointed one, after
// checking that the processes and sets are the image's (RestoreUndoHere
// also that they are in the caller's namespace). The order matters: SETALL
// zeroes every adjustment of a set, so values come first and adjustments
// after.
package checkpoint

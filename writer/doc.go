// Package writer sets a process's System V semaphore undo adjustments
// (semadj): the write side of the 2008 /proc/<pid>/semundo proposal, on
// stock kernels.
//
// No system call sets an adjustment. A process changes its own by a (without
// changing the semaphore's value) with one semop holding two operations on
// the same semaphore, +a and -a, the second with SEM_UNDO, in the order that
// keeps the value within [0, 32767] in between; package plan works out those
// calls. For the calling process the calls are made directly (WriteSelf);
// for another process they are injected into it with ptrace (Inject, WriteProcess),
// so they run with the target's IPC namespace, credentials and undo list.
//
// Semantics are the seed's "add or update": after a write, the target's
// adjustments for each listed set equal the given values; sets not listed
// keep theirs. Everything is validated before the first change (the set
// exists in the target's namespace, the number of values equals its nsems,
// the target may alter it, judged as ipcperms judges: by the credentials
// of the thread that makes the call, with CAP_IPC_OWNER only over an IPC
// namespace its user namespace owns or is an ancestor of the owner of),
// and a write that fails part way is undone. A set the target had no
// entry for may keep an entry of zeros after a call the kernel refuses
// anyway (a security module): the kernel creates the entry before it
// checks permission.
// A target that holds the writer's own list (the writer, its threads, a
// process sharing its list) is refused, since the writer's exit would
// apply what was written, and so is a target another process traces
// (CheckTarget). A listed set the target has no entry for gets one, even
// of zeros: an all-zero entry is real state.
//
// Only the semop calls must run in the target (they belong to its undo
// list): the checks of a set (IPC_STAT, GETALL, IPC_INFO) run in the writer,
// from its own IPC namespace when the target shares it, else from a thread
// that joins the target's namespace for the one write and then ends. Writes
// into several processes (WriteProcesses, InjectAll) run in parallel, one
// ptrace session per thread, as many as half the CPUs (Options.Parallel).
//
// All the changes for one set go in one semop call when they fit the
// namespace's SEMOPM limit (500 by default: 250 semaphores with a change);
// a set that needs more calls is not written atomically: another process
// reading the adjustments in between sees part of the change. The calls
// leave every value as it was, but set each changed semaphore's sempid to
// the target's pid and the set's otime to now.
//
// Writing into a process whose other threads are doing SEM_UNDO operations
// on the same sets at the same moment races with them: WriteProcess checks the result
// afterwards and reports a mismatch.
package writer

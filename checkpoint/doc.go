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
// checking that the processes and sets are the image's, and in the caller's
// namespace unless UndoOptions.AnyNamespace says otherwise (as for CRIU). The order matters: SETALL
// zeroes every adjustment of a set, so values come first and adjustments
// after.
//
// # Freezing
//
// Capture never freezes the calling process: before anything is stopped
// it refuses with ErrSelf processes that include it or one of its
// ancestors, and a cgroup that holds one of them (in it or in a cgroup
// below it). Such a freeze would never end, or would leave the shell that
// waits for semundo stopped if semundo were killed. (CaptureFrozen
// freezes nothing, so it has no such check.)
//
// Capture is meant to be invisible to the processes it holds. A stop is
// not, for a thread asleep in semop or semtimedop: SIGSTOP then SIGCONT,
// a cgroup v2 freeze then thaw, and a ptrace interrupt all wake it with
// EINTR (semop is never restarted after a stop; measured by
// TestKernelStopWakesSemop). Such a thread cannot change a list or a
// value while the other processes are held: in current kernels the
// process that makes its operation possible performs it (update_queue),
// so only a process outside the checkpoint, a signal, or its own timeout
// (EAGAIN: no change) can end its wait. So Capture leaves it asleep and
// holds every other thread in a ptrace interrupt stop (PTRACE_SEIZE,
// PTRACE_INTERRUPT, thread by thread: SIGSTOP would stop a whole thread
// group). A ptrace stop also sends the parent no SIGCHLD, runs no SIGCONT
// handler, and ends by itself if semundo is killed. On x86-64, a thread
// that entered semop in the instant between Capture's look at it and its
// interrupt has the EINTR replaced by a restart (-ERESTARTNOINTR; a
// semtimedop then starts its full timeout again). After reading, Capture
// checks that no thread left asleep ran meanwhile (its state, system call
// and context switch count are unchanged) and that its list did not
// change (an outside waker changes it before the wake-up); otherwise it
// lets everything go and tries again, five times at most, then fails
// with an error saying so. A semtimedop's timeout keeps running. A
// process that another tracer (strace, gdb) holds cannot be traced: it is
// stopped with SIGSTOP as before, with a warning in the image when a
// thread of it sleeps in semop. So is a child of the calling process with
// no thread asleep in semop: a tracer hears of its tracees' ptrace stops
// whatever its wait options say, so a wait for that child running in the
// caller meanwhile would take them (os/exec's Wait would return early);
// a child that has such a sleeper is traced anyway, and such a wait in the
// caller must not run during Capture. Processes already in group-stop are
// left as they are.
//
// The cgroup v2 freezer cannot leave one task out, so a cgroup in which a
// thread sleeps in semop (looked at just before the freeze) is not frozen:
// the processes named for the checkpoint are held one by one as above,
// and the image says so in a warning. Moving the sleeper to another
// cgroup would be visible to it. A thread that falls asleep in semop in
// the instant between that look and the freeze still sees EINTR.
package checkpoint

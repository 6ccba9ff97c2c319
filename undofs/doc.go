// Package undofs serves the 2008 seed's /proc/<pid>/semundo interface as a
// FUSE file system on stock kernels, so that tools in any language can read
// and write System V semaphore undo lists (semadj) with cat and echo.
//
// Layout: the root holds one directory per process, named by its pid in the
// daemon's PID namespace, each holding one file, "semundo". Listing the root
// shows the processes whose undo list has entries (from a reader scan that
// began after the directory was opened); every live process can be looked up, and a process
// without a list has an empty file. Threads are not listed or looked up:
// they share their process's list.
//
// Reading: the file's whole text, in the seed's format (undo.Marshal), is
// taken when the file is opened, from a scan that began after the open, and
// every read of that open file is served from it: short reads, seeks and
// pread see one consistent text even while the process changes its list or
// exits. Files are opened with FOPEN_DIRECT_IO, so the page cache never
// serves a previous open's text; stat reports the size of a recent scan's
// text (fstat on a file open for reading: the size of its snapshot).
//
// Writing: "SEMID ADJ0 ADJ1 ..." lines "add or update" the target's entries,
// as the seed's write side did; entries not named stay. Bytes written are
// buffered per open file; a write(2) whose data ends in a newline applies
// every line buffered so far, as one list, and write(2) returns its error,
// so `echo ... > file` and `dd bs=3` report it. A last line without a
// newline is applied at close(2), which then returns the error (shells
// ignore close errors: end lines with a newline). Errors:
//
//   - EINVAL: the text is not in the format (nothing is changed), or the
//     list does not fit the target (a semid that does not exist, the wrong
//     number of values): the Injector decides that one;
//   - EACCES: the writing process may not ptrace the target;
//   - EDEADLK: the writer is the target, or the target is itself blocked
//     writing through this file system: the injection would wait on the
//     blocked writer forever. A process sets its own list with
//     `semundo exec --undo FILE -- CMD` instead;
//   - ESRCH: the target exited; ETIMEDOUT: the injection took longer than
//     its timeout and was killed; EIO: anything else (logged);
//   - EINVAL also for a write that does not go on where the previous one
//     ended (a seek in the middle of a line), EFBIG for more than 1 MiB
//     without a newline; either drops the unfinished line.
//
// The write itself is an Injector's job. The default, ExecInjector, runs a
// helper (`semundo __inject`) with the writer's credentials, never the
// daemon's: real uid and gid, supplementary groups and effective
// capabilities read from /proc/<tid>/status of the thread that made the
// FUSE request. So whether the writer may change the target is decided by
// the kernel's own ptrace check, for the writer.
//
// Access: without Options.AllowOther the kernel admits only processes whose
// uids and gids all equal the mounter's; with it, everyone, and then anyone
// can read every list (the seed's file was world-readable, S_IRUGO), while
// writes stay subject to the ptrace check above.
package undofs

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
// text, a hint as in /proc: fstat too, since the kernel names the open file
// it asks about only on some paths (FUSE_GETATTR_FH, when it does, gets the
// size of that file's snapshot). Read to the end rather than trust a size.
//
// Opening: the kernel judges the opener, as it judges an open of
// /proc/<pid>/mem. A child of the daemon takes on the opener's credentials
// as they are at open (ids, groups, its user namespace, its capabilities in
// that namespace only) and asks the kernel: an open for reading needs the
// right to ptrace-read the process (PTRACE_MODE_READ_REALCREDS, checked by
// kcmp(2)), an open for writing the right to ptrace-attach it
// (PTRACE_MODE_ATTACH_REALCREDS, checked by pidfd_getfd(2), which makes
// that check before it looks at the descriptor number). The process must
// also have a pid in the opener's PID namespace: a process in a child PID
// namespace cannot name it, so it may not open it either. Any refusal is
// EACCES; a process that is gone is ENOENT.
//
// Writing: "SEMID ADJ0 ADJ1 ..." lines "add or update" the target's entries,
// as the seed's write side did; entries not named stay. Bytes written are
// buffered per open file; a write(2) whose data ends in a newline applies
// every line buffered so far, as one list, and write(2) returns its error,
// so `echo ... > file` and `dd bs=3` report it. A last line without a
// newline is applied at close(2) (at the first close of any copy of the
// descriptor), which then returns the error (shells ignore close errors:
// end lines with a newline). Every write through an open file is made with
// the credentials its opener had at open, never with those of the process
// that writes: a descriptor passed over a socket, inherited, or written to
// by a set-user-ID program carries its opener's rights, no more and no
// less, and a writer that changes its credentials after the open changes
// nothing. Errors:
//
//   - EINVAL: the text is not in the format (nothing is changed), or the
//     list does not fit the target (a semid that does not exist, the wrong
//     number of values): the Injector decides that one;
//   - EACCES: the opener may no longer ptrace the target (its credentials
//     changed since the open, say by executing a set-user-ID program);
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
// helper (`semundo __inject`) in a child holding the opener's credentials,
// after the kernel has checked them again against the target as it is now:
// the kernel, not the daemon, decides what the opener may do. The helper
// is the mounting program itself, which must call Init first thing in
// main (semundo does), or a semundo binary named in ExecInjector.Path.
//
// Access: without Options.AllowOther the kernel admits only processes whose
// uids and gids all equal the mounter's; with it, everyone. Anyone let in
// sees the directory (which processes have lists, as /proc shows every pid)
// and the files' sizes; contents and writes are subject to the checks
// above. The seed's file was readable by all (S_IRUGO); this one is not,
// since no other interface shows another user's undo lists.
package undofs

// Package criu is semundo's CRIU companion: an action script that keeps
// the System V semaphore undo lists (semadj) of a process tree across
// criu dump and criu restore, which CRIU itself drops (CRIU issue 47).
//
// CRIU runs its action scripts with no arguments and says what is
// happening in the environment (CRTOOLS_SCRIPT_ACTION, CRTOOLS_IMAGE_DIR,
// CRTOOLS_INIT_PID). [Run] acts on three actions and ignores the others:
//
//   - post-dump: CRIU has written its images and still holds the tree
//     frozen and ptrace-seized. The companion reads the undo lists of every
//     process of the tree with the BPF reader (it neither stops nor traces
//     them), the sets they refer to, and which processes CRIU found
//     stopped, and writes [ImageFile] (format semundo/1, docs/image.md)
//     and [TreeFile] beside CRIU's images. A list shared with a process
//     outside the tree fails the dump; CRIU then resumes the tasks.
//   - pre-restore: the image directory is still open (CRIU closes it
//     before post-resume), so both files are checked and handed over to
//     post-resume through a directory under [DefaultStateDir].
//   - post-resume: after criu restore --leave-stopped every restored task
//     is in group-stop. The companion writes each list into its restored
//     task by ptrace syscall injection (package writer), leaving it
//     stopped, then sends SIGCONT to the tasks that were running at dump.
//
// With Options.Helper, pre-dump and pre-restore start a helper (Serve)
// that loads the reader while CRIU works; post-dump and post-resume hand it
// their work over a private unix socket, so that what the frozen or
// stopped tree waits for is the work itself, and do it themselves when the
// helper is missing or not ready. The helper exits with CRIU, after its
// job, or when idle too long. The handover (the environment, the
// socket's client side) is package internal/criuaction, which links
// nothing else: cmd/semundo-criu-action runs post-dump and post-resume
// with it alone, and so starts in about 60% of the time semundo takes,
// time that the tree waits for.
//
// CRIU restores the sets themselves (with the IPC namespace) and the pids
// (in the tree's PID namespace, when it has one): a task is found again by
// its pid in the root's PID namespace, the NSpid field of
// /proc/PID/status, which equals its plain pid when no PID namespace is
// involved. docs/criu.md is the user's guide.
package criu

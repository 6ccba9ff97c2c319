package writer_test

import "golang.org/x/sys/unix"

// nrPause is the system call a C program's pause() blocks in: arm64 has
// no pause, and libc waits in ppoll.
const nrPause = unix.SYS_PPOLL

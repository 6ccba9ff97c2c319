package writer_test

import "golang.org/x/sys/unix"

// nrPause is the system call a C program's pause() blocks in.
const nrPause = unix.SYS_PAUSE

/*
 * The process of runc_test.go's container, built static so the rootfs
 * needs nothing else. Run as the container's pid 1 (in the container's own
 * IPC and PID namespaces):
 *
 *   runc-payload READY
 *
 * creates one IPC_PRIVATE set of one semaphore, forks a child that adds +1
 * to it with SEM_UNDO and then waits forever, writes READY atomically
 * ("set ID\nchild PID\n", the pid as the container sees it), and reaps its
 * children forever. Both processes point every descriptor at the
 * container's /dev/null before READY appears, so CRIU (under runc
 * checkpoint) finds no descriptor leading outside the container. A
 * failure is written to READY.err, since stderr is gone by then.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sem.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *ready;

static void die(const char *what)
{
	int e = errno;
	char path[4096];
	snprintf(path, sizeof path, "%s.err", ready);
	FILE *f = fopen(path, "w");
	if (f) {
		fprintf(f, "runc-payload: %s: %s\n", what, strerror(e));
		fclose(f);
	}
	exit(111);
}

/* quiet points descriptors 0, 1 and 2 at the container's /dev/null. */
static void quiet(void)
{
	int fd = open("/dev/null", O_RDWR);
	if (fd < 0)
		die("open /dev/null");
	for (int i = 0; i < 3; i++)
		if (dup2(fd, i) < 0)
			die("dup2");
	if (fd > 2)
		close(fd);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: runc-payload READY\n");
		return 2;
	}
	ready = argv[1];
	quiet();
	int id = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
	if (id < 0)
		die("semget");
	int pfd[2];
	if (pipe(pfd))
		die("pipe");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		close(pfd[0]);
		struct sembuf b = { .sem_num = 0, .sem_op = 1, .sem_flg = SEM_UNDO | IPC_NOWAIT };
		if (semop(id, &b, 1) < 0)
			die("semop");
		if (write(pfd[1], "x", 1) != 1)
			die("write pipe");
		close(pfd[1]);
		for (;;)
			pause();
	}
	close(pfd[1]);
	char c;
	if (read(pfd[0], &c, 1) != 1) {
		errno = EPIPE;
		die("child failed");
	}
	close(pfd[0]);

	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp", ready);
	FILE *f = fopen(tmp, "w");
	if (!f)
		die("open ready file");
	fprintf(f, "set %d\nchild %d\n", id, (int)pid);
	if (fclose(f))
		die("write ready file");
	if (rename(tmp, ready))
		die("rename ready file");
	for (;;) {
		if (wait(NULL) < 0 && errno == ECHILD)
			pause();
	}
}

/* semwait: the process a checkpoint must not disturb. It blocks in
 * semop(-1, SEM_UNDO) (or semtimedop with a timeout) on semaphore 0 of set
 * SEMID (the semop system call itself, or semtimedop, which glibc's semop()
 * also uses), and prints one line only when that call returns:
 *   ret R errno E ms M eintr N   (M: milliseconds spent in the call)
 * then waits for stdin to close and exits 0.
 * usage: semwait SEMID semop|semtimedop|poll TIMEOUT_MS [busy]
 * (poll: semtimedop in a loop until it succeeds; N counts its EINTRs)
 * With "busy" a second thread, started first, takes and gives back
 * semaphore 1 with SEM_UNDO|IPC_NOWAIT in a loop, so that its list and
 * the set's values keep changing while it runs. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sem.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static int semid;

static void *busy(void *arg) {
	struct sembuf up = {1, 1, SEM_UNDO | IPC_NOWAIT};
	struct sembuf down = {1, -1, SEM_UNDO | IPC_NOWAIT};
	(void)arg;
	for (;;) {
		if (semop(semid, &up, 1) < 0 || semop(semid, &down, 1) < 0) {
			fprintf(stderr, "busy: semop: %s\n", strerror(errno));
			exit(2);
		}
	}
	return NULL;
}

static long ms(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv) {
	if (argc < 4) {
		fprintf(stderr, "usage: semwait SEMID semop|semtimedop|poll TIMEOUT_MS [busy]\n");
		return 2;
	}
	semid = atoi(argv[1]);
	long timeout = atol(argv[3]);
	if (argc > 4 && strcmp(argv[4], "busy") == 0) {
		pthread_t th;
		if (pthread_create(&th, NULL, busy, NULL) != 0)
			return 2;
	}
	struct sembuf op = {0, -1, SEM_UNDO};
	struct timespec ts = {timeout / 1000, (timeout % 1000) * 1000000};
	long t0 = ms();
	int r;
	long eintr = 0;
	if (strcmp(argv[2], "poll") == 0) {
		/* A polling loop: semtimedop again after each timeout, counting
		 * the EINTRs a checkpoint must not cause. */
		while ((r = semtimedop(semid, &op, 1, &ts)) < 0 && (errno == EAGAIN || errno == EINTR))
			if (errno == EINTR)
				eintr++;
	} else if (strcmp(argv[2], "semtimedop") == 0)
		r = semtimedop(semid, &op, 1, &ts);
	else
		/* glibc's semop() is semtimedop(..., NULL): call semop itself. */
		r = syscall(SYS_semop, semid, &op, 1);
	int e = r < 0 ? errno : 0;
	printf("ret %d errno %d ms %ld eintr %ld\n", r, e, ms() - t0, eintr);
	fflush(stdout);
	char buf[64];
	while (read(0, buf, sizeof buf) > 0)
		;
	return 0;
}

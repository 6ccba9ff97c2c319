/* semwait STEP...: a process that blocks in semop as told, for tests of
 * the blocked callers semundo reports. Steps run in order:
 *   ns                 unshare its IPC namespace (CLONE_NEWIPC)
 *   new:N:V            create a private set of N semaphores, each V; -1
 *                      names it in later steps
 *   hold:ID:NUM:VAL    semop(SEM_UNDO|IPC_NOWAIT) now; failure exits 3
 *   threads:K          later waits run in K threads each (default 1)
 *   timed:MS           later waits are semtimedop with an MS timeout
 *   loop               later waits start again when they return
 *   wait:ID:NUM:OP[,NUM:OP...]  one blocking call with these operations,
 *                      in its own threads
 *   sync               print "ready ID" and read a line from stdin
 * Then it prints "ready ID" (ID: the set it created, or -1) and exits when
 * stdin closes. A wait that succeeds without loop prints "acquired TID". */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sem.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct wait {
	int semid;
	int nops;
	struct sembuf ops[64];
	long timeout_ms;
	int loop;
};

static int created = -1;

static int id_of(int id)
{
	return id == -1 ? created : id;
}

static void *waiter(void *arg)
{
	struct wait *w = arg;
	for (;;) {
		int r;
		if (w->timeout_ms > 0) {
			struct timespec ts = { w->timeout_ms / 1000, (w->timeout_ms % 1000) * 1000000 };
			r = semtimedop(w->semid, w->ops, w->nops, &ts);
		} else {
			r = semop(w->semid, w->ops, w->nops);
		}
		if (r && errno != EINTR && errno != EAGAIN) {
			perror("semop");
			exit(4);
		}
		if (!r && !w->loop) {
			printf("acquired %ld\n", (long)syscall(SYS_gettid));
			fflush(stdout);
			return 0;
		}
	}
}

int main(int argc, char **argv)
{
	int threads = 1, loop = 0;
	long timeout_ms = 0;
	char line[64];
	pthread_attr_t attr;

	setvbuf(stdout, 0, _IOLBF, 0);
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 << 10);
	for (int i = 1; i < argc; i++) {
		char *a = argv[i];
		int id, num, val, n;
		if (!strcmp(a, "ns")) {
			if (unshare(CLONE_NEWIPC)) {
				perror("unshare");
				return 2;
			}
		} else if (sscanf(a, "new:%d:%d", &n, &val) == 2) {
			created = semget(IPC_PRIVATE, n, IPC_CREAT | 0600);
			if (created < 0) {
				perror("semget");
				return 2;
			}
			for (int k = 0; k < n; k++)
				semctl(created, k, SETVAL, val);
		} else if (sscanf(a, "hold:%d:%d:%d", &id, &num, &val) == 3) {
			struct sembuf op = { num, val, SEM_UNDO | IPC_NOWAIT };
			if (semop(id_of(id), &op, 1)) {
				perror("hold");
				return 3;
			}
		} else if (sscanf(a, "threads:%d", &n) == 1) {
			threads = n;
		} else if (sscanf(a, "timed:%ld", &timeout_ms) == 1) {
		} else if (!strcmp(a, "loop")) {
			loop = 1;
		} else if (sscanf(a, "wait:%d:", &id) == 1) {
			struct wait *w = calloc(1, sizeof(*w));
			char *p = strchr(a + 5, ':') + 1;
			w->semid = id_of(id);
			w->timeout_ms = timeout_ms;
			w->loop = loop;
			while (w->nops < 64 && sscanf(p, "%d:%d", &num, &val) == 2) {
				w->ops[w->nops].sem_num = num;
				w->ops[w->nops].sem_op = val;
				w->nops++;
				p = strchr(p, ',');
				if (!p)
					break;
				p++;
			}
			for (int k = 0; k < threads; k++) {
				pthread_t t;
				if (pthread_create(&t, &attr, waiter, w)) {
					perror("pthread_create");
					return 2;
				}
			}
		} else if (!strcmp(a, "sync")) {
			printf("ready %d\n", created);
			if (!fgets(line, sizeof(line), stdin))
				return 0;
		} else {
			fprintf(stderr, "semwait: bad step %s\n", a);
			return 2;
		}
	}
	printf("ready %d\n", created);
	while (fgets(line, sizeof(line), stdin))
		;
	_exit(0);
}

/* target MODE [ARGS]: a process for semundo's write tests to write into.
 * It prints "ready" once it is about to block (or spin), then reports what
 * its own work gave, so a test can check that the injection left it
 * unharmed. Modes:
 *   sleep MS        nanosleep(MS); prints "slept ELAPSED_MS"
 *   read            read(0) once; prints "read N DATA"
 *   pause           pause() until SIGUSR1; prints "woke"
 *   spin N          sums i*i mod 2^64 for i < N; prints "sum S"
 *   spinloop N      the same, again and again, printing each sum
 *   threads N       N threads counting; a stdin line "mark" notes where
 *                   they are and prints "marked", any other line prints
 *                   "count C": how many threads counted since the mark
 *   semop SEMID     semop(-1 on sem 0) blocks until posted; prints "got"
 *   sleeploop US    nanosleep(US microseconds) again and again, printing
 *                   "ok I" after the I-th (a register lost across the
 *                   call breaks the count), or "bad ..." for a failure
 *   semoploop SEMID semop(-1 on sem 0) again and again, printing "got"
 *                   after each, "eintr" when a stop ended the wait (a
 *                   SIGSTOP or a debugger does that: see signal(7)), or
 *                   "bad ..." for another failure
 * then it waits in pause() until killed. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sem.h>
#include <time.h>
#include <unistd.h>

static volatile unsigned long counts[64];

static void *counter(void *arg)
{
	long i = (long)arg;
	for (;;)
		counts[i]++;
	return 0;
}

static void onusr1(int sig) { (void)sig; }

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, 0, _IOLBF, 0);
	if (argc < 2)
		return 2;
	const char *mode = argv[1];
	if (!strcmp(mode, "sleep")) {
		long ms = atol(argv[2]);
		struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };
		double t0 = now_ms();
		printf("ready\n");
		while (nanosleep(&ts, &ts) && errno == EINTR)
			;
		printf("slept %.0f\n", now_ms() - t0);
	} else if (!strcmp(mode, "read")) {
		char buf[64] = { 0 };
		printf("ready\n");
		ssize_t n = read(0, buf, sizeof(buf) - 1);
		if (n > 0 && buf[n - 1] == '\n')
			buf[n - 1] = 0;
		printf("read %zd %s\n", n, buf);
	} else if (!strcmp(mode, "pause")) {
		signal(SIGUSR1, onusr1);
		printf("ready\n");
		pause();
		printf("woke\n");
	} else if (!strcmp(mode, "spin")) {
		unsigned long n = strtoul(argv[2], 0, 10), sum = 0;
		printf("ready\n");
		for (unsigned long i = 0; i < n; i++)
			sum += i * i;
		printf("sum %lu\n", sum);
	} else if (!strcmp(mode, "spinloop")) {
		unsigned long n = strtoul(argv[2], 0, 10);
		printf("ready\n");
		for (;;) {
			unsigned long sum = 0;
			for (unsigned long i = 0; i < n; i++)
				sum += i * i;
			printf("sum %lu\n", sum);
		}
	} else if (!strcmp(mode, "threads")) {
		long n = atol(argv[2]);
		pthread_t t;
		for (long i = 0; i < n && i < 64; i++)
			pthread_create(&t, 0, counter, (void *)i);
		printf("ready\n");
		char line[16];
		unsigned long mark[64] = { 0 };
		while (fgets(line, sizeof(line), stdin)) {
			if (!strncmp(line, "mark", 4)) {
				for (long i = 0; i < n && i < 64; i++)
					mark[i] = counts[i];
				printf("marked\n");
				continue;
			}
			unsigned long c = 0;
			for (long i = 0; i < n && i < 64; i++)
				c += counts[i] != mark[i] ? 1 : 0;
			printf("count %lu\n", c);
		}
	} else if (!strcmp(mode, "semop")) {
		struct sembuf op = { 0, -1, 0 };
		printf("ready\n");
		if (semop(atoi(argv[2]), &op, 1))
			printf("semop failed %d\n", errno);
		else
			printf("got\n");
	} else if (!strcmp(mode, "sleeploop")) {
		long us = atol(argv[2]);
		printf("ready\n");
		for (unsigned long i = 1;; i++) {
			struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };
			int r = nanosleep(&ts, 0);
			if (r && errno != EINTR)
				printf("bad nanosleep %d errno %d\n", r, errno);
			else
				printf("ok %lu\n", i);
		}
	} else if (!strcmp(mode, "semoploop")) {
		int semid = atoi(argv[2]);
		printf("ready\n");
		for (;;) {
			struct sembuf op = { 0, -1, 0 };
			int r = semop(semid, &op, 1);
			if (r && errno == EINTR)
				printf("eintr\n");
			else if (r)
				printf("bad semop %d errno %d\n", r, errno);
			else
				printf("got\n");
		}
	} else {
		return 2;
	}
	for (;;)
		pause();
}

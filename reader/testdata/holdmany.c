/* holdmany N SEMID:NUM:VAL...: forks N children that each run the semops
 * with SEM_UNDO|IPC_NOWAIT and pause; prints "ready", then the children's
 * pids one per line; on EOF on stdin kills and reaps them and exits. Used by
 * the reader's benchmarks, where 10,000 Go processes would not fit. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/sem.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	int n = atoi(argv[1]), nops = argc - 2;
	struct sembuf *ops = calloc(nops, sizeof(*ops));
	int *ids = calloc(nops, sizeof(int));
	pid_t *pids = calloc(n, sizeof(pid_t));
	int ready[2];

	for (int i = 0; i < nops; i++) {
		int num, val;
		if (sscanf(argv[i + 2], "%d:%d:%d", &ids[i], &num, &val) != 3)
			return 2;
		ops[i].sem_num = num;
		ops[i].sem_op = val;
		ops[i].sem_flg = SEM_UNDO | IPC_NOWAIT;
	}
	if (pipe(ready))
		return 1;
	for (int c = 0; c < n; c++) {
		pid_t p = fork();
		if (p < 0) {
			perror("fork");
			for (int k = 0; k < c; k++)
				kill(pids[k], SIGKILL);
			return 1;
		}
		if (p == 0) {
			char ok = 1;
			for (int i = 0; i < nops; i++)
				if (semop(ids[i], &ops[i], 1))
					ok = 0;
			if (write(ready[1], &ok, 1) != 1)
				_exit(1);
			for (;;)
				pause();
		}
		pids[c] = p;
	}
	int bad = 0;
	for (int c = 0; c < n; c++) {
		char ok;
		if (read(ready[0], &ok, 1) != 1 || !ok)
			bad++;
	}
	if (bad)
		fprintf(stderr, "holdmany: %d children failed their semops\n", bad);
	printf(bad ? "failed\n" : "ready\n");
	for (int c = 0; c < n; c++)
		printf("%d\n", pids[c]);
	fflush(stdout);
	char buf[64];
	while (read(0, buf, sizeof(buf)) > 0)
		;
	for (int c = 0; c < n; c++)
		kill(pids[c], SIGKILL);
	for (int c = 0; c < n; c++)
		waitpid(pids[c], 0, 0);
	return bad ? 1 : 0;
}

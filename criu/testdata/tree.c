/*
 * Test processes for semundo's CRIU companion. One program, three roles:
 *
 *   tree [-s] READY SIZES ROOTOPS CHILD...
 *       The root of a tree to dump: makes itself a session leader, enters a
 *       new IPC namespace, creates one IPC_PRIVATE set per size in SIZES
 *       ("1,5": two sets), does ROOTOPS, forks one child per CHILD spec,
 *       waits until each child has done its semops, then writes READY
 *       (atomically: "root PID\nchild PID...\nsets ID...\n") and reaps its
 *       children forever. Every descriptor is /dev/null, so CRIU can dump it.
 *       With -s the process started is an "outer" process that creates the
 *       namespace and sets, then clones the root with CLONE_SYSVSEM: the
 *       root's undo list is shared with a process outside its tree.
 *
 *       ROOTOPS and a CHILD's ops: "-" for none, or comma-separated S.N+D
 *       (set index S, semaphore N, add D with SEM_UNDO). A CHILD is
 *       THREADS/OPS: the ops are done by the last of THREADS threads (the
 *       others pause), so a multi-threaded child's one list is made by a
 *       thread that is not the leader.
 *
 *   reaper [-p] OUT CMD ARGS...
 *       Becomes a child subreaper (this machine's init reaps no orphans),
 *       runs CMD with stdin /dev/null and stdout, stderr appended to OUT
 *       (with -p as pid 1 of a new PID namespace), prints CMD's exit status
 *       on stdout when it ends, closes stdout, then reaps every orphan that
 *       comes to it (the dumped or restored tree) and exits when none is
 *       left.
 *
 *   getall PID SEMID
 *       Prints the values of set SEMID in PID's IPC namespace.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/sem.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

union semun {
	int val;
	struct semid_ds *buf;
	unsigned short *array;
};

static void die(const char *what)
{
	fprintf(stderr, "tree: %s: %s\n", what, strerror(errno));
	exit(111);
}

#define MAXSETS 16
static int semids[MAXSETS];
static int nsets;

/* doops runs the semops of an ops spec, each with SEM_UNDO. */
static void doops(const char *spec)
{
	if (strcmp(spec, "-") == 0)
		return;
	char *s = strdup(spec), *save = NULL;
	for (char *op = strtok_r(s, ",", &save); op; op = strtok_r(NULL, ",", &save)) {
		int set, num, d;
		if (sscanf(op, "%d.%d+%d", &set, &num, &d) != 3 || set < 0 || set >= nsets) {
			fprintf(stderr, "tree: bad op %s\n", op);
			exit(112);
		}
		struct sembuf b = { .sem_num = num, .sem_op = d, .sem_flg = SEM_UNDO | IPC_NOWAIT };
		if (semop(semids[set], &b, 1) < 0)
			die("semop");
	}
	free(s);
}

static void *pauser(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return NULL;
}

static int ready_wr;

/* tell says to the root that this child's ops are done. */
static void tell(void)
{
	if (write(ready_wr, "x", 1) != 1)
		die("write ready pipe");
	close(ready_wr);
}

static void *opthread(void *arg)
{
	doops(arg);
	tell();
	for (;;)
		pause();
	return NULL;
}

/* child runs a CHILD spec, tells the root it is done, and waits. */
static void child(const char *spec)
{
	int threads = 1;
	const char *slash = strchr(spec, '/');
	if (!slash || sscanf(spec, "%d", &threads) != 1 || threads < 1) {
		fprintf(stderr, "tree: bad child %s\n", spec);
		exit(112);
	}
	const char *ops = slash + 1;
	pthread_t t;
	for (int i = 1; i < threads - 1; i++)
		if (pthread_create(&t, NULL, pauser, NULL))
			die("pthread_create");
	if (threads > 1) {
		if (pthread_create(&t, NULL, opthread, (void *)ops))
			die("pthread_create");
	} else {
		doops(ops);
		tell();
	}
	for (;;)
		pause();
}

static void writeready(const char *path, pid_t root, pid_t *kids, int nkids)
{
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		die("open ready file");
	fprintf(f, "root %d\nchild", (int)root);
	for (int i = 0; i < nkids; i++)
		fprintf(f, " %d", (int)kids[i]);
	fprintf(f, "\nsets");
	for (int i = 0; i < nsets; i++)
		fprintf(f, " %d", semids[i]);
	fprintf(f, "\n");
	if (fclose(f))
		die("write ready file");
	if (rename(tmp, path))
		die("rename ready file");
}

struct rootargs {
	const char *ready, *rootops;
	int nkids;
	char **kids;
};

static int rootmain(void *p)
{
	struct rootargs *a = p;
	if (setsid() < 0)
		die("setsid");
	doops(a->rootops);
	int pfd[2];
	pid_t kids[256];
	if (a->nkids > 256) {
		fprintf(stderr, "tree: too many children\n");
		exit(112);
	}
	for (int i = 0; i < a->nkids; i++) {
		if (pipe(pfd))
			die("pipe");
		pid_t pid = fork();
		if (pid < 0)
			die("fork");
		if (pid == 0) {
			close(pfd[0]);
			ready_wr = pfd[1];
			child(a->kids[i]);
		}
		close(pfd[1]);
		char c;
		if (read(pfd[0], &c, 1) != 1) {
			fprintf(stderr, "tree: child %d failed\n", (int)pid);
			exit(113);
		}
		close(pfd[0]);
		kids[i] = pid;
	}
	writeready(a->ready, getpid(), kids, a->nkids);
	for (;;) {
		if (wait(NULL) < 0 && errno == ECHILD)
			pause();
	}
	return 0;
}

static void createsets(const char *sizes)
{
	char *s = strdup(sizes), *save = NULL;
	for (char *tok = strtok_r(s, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (nsets == MAXSETS) {
			fprintf(stderr, "tree: too many sets\n");
			exit(112);
		}
		int id = semget(IPC_PRIVATE, atoi(tok), IPC_CREAT | 0600);
		if (id < 0)
			die("semget");
		semids[nsets++] = id;
	}
	free(s);
}

static int treemain(int argc, char **argv)
{
	int shared = 0;
	if (argc > 1 && strcmp(argv[1], "-s") == 0) {
		shared = 1;
		argc--, argv++;
	}
	if (argc < 4) {
		fprintf(stderr, "usage: tree [-s] READY SIZES ROOTOPS CHILD...\n");
		return 2;
	}
	if (unshare(CLONE_NEWIPC))
		die("unshare CLONE_NEWIPC");
	createsets(argv[2]);
	struct rootargs a = { .ready = argv[1], .rootops = argv[3], .nkids = argc - 4, .kids = argv + 4 };
	if (!shared)
		return rootmain(&a);
	/* The outer process: its clone, the root, shares its undo list. */
	static char stack[1 << 16];
	pid_t root = clone(rootmain, stack + sizeof stack, CLONE_SYSVSEM | SIGCHLD, &a);
	if (root < 0)
		die("clone CLONE_SYSVSEM");
	for (;;) {
		if (wait(NULL) < 0 && errno == ECHILD)
			pause();
	}
}

static int reapermain(int argc, char **argv)
{
	int newpid = 0;
	if (argc > 1 && strcmp(argv[1], "-p") == 0) {
		newpid = 1;
		argc--, argv++;
	}
	if (argc < 3) {
		fprintf(stderr, "usage: reaper [-p] OUT CMD ARGS...\n");
		return 2;
	}
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))
		die("PR_SET_CHILD_SUBREAPER");
	if (newpid && unshare(CLONE_NEWPID))
		die("unshare CLONE_NEWPID");
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		int in = open("/dev/null", O_RDONLY);
		int out = open(argv[1], O_WRONLY | O_CREAT | O_APPEND, 0644);
		if (in < 0 || out < 0)
			die("open");
		dup2(in, 0);
		dup2(out, 1);
		dup2(out, 2);
		if (in > 2)
			close(in);
		if (out > 2)
			close(out);
		execv(argv[2], argv + 2);
		die("exec");
	}
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			die("waitpid");
	printf("%d\n", WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
	fflush(stdout);
	int null = open("/dev/null", O_WRONLY);
	dup2(null, 1);
	for (;;) {
		if (wait(NULL) < 0 && errno == ECHILD)
			return 0;
	}
}

static int getallmain(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: getall PID SEMID\n");
		return 2;
	}
	char path[64];
	snprintf(path, sizeof path, "/proc/%s/ns/ipc", argv[1]);
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		die(path);
	if (setns(fd, CLONE_NEWIPC))
		die("setns");
	int id = atoi(argv[2]);
	struct semid_ds ds;
	union semun u = { .buf = &ds };
	if (semctl(id, 0, IPC_STAT, u) < 0)
		die("IPC_STAT");
	unsigned short *v = calloc(ds.sem_nsems, sizeof *v);
	u.array = v;
	if (semctl(id, 0, GETALL, u) < 0)
		die("GETALL");
	for (unsigned long i = 0; i < ds.sem_nsems; i++)
		printf(i ? " %d" : "%d", v[i]);
	printf("\n");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "tree") == 0)
		return treemain(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "reaper") == 0)
		return reapermain(argc - 1, argv + 1);
	if (argc > 1 && strcmp(argv[1], "getall") == 0)
		return getallmain(argc - 1, argv + 1);
	fprintf(stderr, "usage: tree tree|reaper|getall ...\n");
	return 2;
}

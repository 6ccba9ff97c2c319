package inject

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/semundo/semundo/internal/testenv"
	"golang.org/x/sys/unix"
)

const sleeperSrc = `
int main(int argc, char **argv) {
	long ms = atol(argv[1]);
	struct timespec req = { ms / 1000, (ms % 1000) * 1000000L }, t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	printf("ready\n");
	fflush(stdout);
	int r = nanosleep(&req, NULL);
	int e = r ? errno : 0;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("slept %lld ret %d errno %d\n",
	       (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL + (t1.tv_nsec - t0.tv_nsec), r, e);
	fflush(stdout);
	for (;;)
		pause();
}
`

const (
	nrRead         = 0
	nrPause        = 34
	nrNanosleep    = 35
	nrClockNanoslp = 230
	nrSemop        = 64
	nrSemtimedop   = 220
)

// checkSlept parses the sleeper's report and checks that the sleep was not
// cut short and did not fail.
func checkSlept(t *testing.T, line string, ms int64) {
	t.Helper()
	var ns, ret, errno int64
	if _, err := fmt.Sscanf(line, "slept %d ret %d errno %d", &ns, &ret, &errno); err != nil {
		t.Fatalf("sleeper printed %q: %v", line, err)
	}
	if ret != 0 || errno != 0 {
		t.Fatalf("nanosleep returned %d errno %d after the session, want 0: the interrupted call did not restart", ret, errno)
	}
	if ns < ms*1e6 {
		t.Fatalf("nanosleep of %d ms lasted %d ns: cut short", ms, ns)
	}
}

func TestSleeperNanosleep(t *testing.T) {
	const ms = 500
	tg := start(t, buildC(t, "sleeper", sleeperSrc), strconv.Itoa(ms))
	tg.line(t)
	tg.blockedIn(t, nrClockNanoslp, nrNanosleep)

	s := mustSeize(t, tg.pid)
	if s.Tid() != tg.pid {
		t.Errorf("Tid %d, want the leader %d", s.Tid(), tg.pid)
	}
	exercise(t, s, tg.pid)
	probe := injectSemUndo(t, s)
	mustDetach(t, s)
	st := s.Stats()
	t.Logf("stop time %v, %d injections", st.StopTime, st.Injections)
	if st.Injections != 6 || st.MemoryCalls != 4 {
		t.Errorf("Stats() = %d injections, %d of them mmap or munmap; want 6 and 4", st.Injections, st.MemoryCalls)
	}

	checkSlept(t, tg.line(t), ms)
	probe.check(t, tg)
}

func TestPipeRead(t *testing.T) {
	tg := start(t, buildC(t, "reader", readerSrc))
	tg.line(t)
	tg.blockedIn(t, nrRead)

	s := mustSeize(t, tg.pid)
	exercise(t, s, tg.pid)
	probe := injectSemUndo(t, s)
	mustDetach(t, s)

	if _, err := tg.stdin.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if got, want := tg.line(t), "read 5 errno 0 data hello"; got != want {
		t.Fatalf("reader printed %q, want %q", got, want)
	}
	probe.check(t, tg)
}

const pauseSrc = `
static volatile sig_atomic_t usr1, rtval, rtcode, rtpid;
static void on_usr1(int sig) { usr1++; }
static void on_rt(int sig, siginfo_t *si, void *uc) {
	rtval = si->si_value.sival_int;
	rtcode = si->si_code;
	rtpid = si->si_pid;
}
int main(void) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_usr1;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_sigaction = on_rt;
	sa.sa_flags = SA_SIGINFO;
	sigaction(SIGRTMIN + 1, &sa, NULL);
	printf("ready %d\n", SIGRTMIN + 1);
	fflush(stdout);
	for (;;) {
		int r = pause();
		int e = errno;
		printf("pause %d errno %d usr1 %d rtval %d rtcode %d rtpid %d\n",
		       r, e, (int)usr1, (int)rtval, (int)rtcode, (int)rtpid);
		fflush(stdout);
	}
}
`

type pauseReport struct{ ret, errno, usr1, rtval, rtcode, rtpid int }

func parsePause(t *testing.T, line string) pauseReport {
	t.Helper()
	var p pauseReport
	if _, err := fmt.Sscanf(line, "pause %d errno %d usr1 %d rtval %d rtcode %d rtpid %d",
		&p.ret, &p.errno, &p.usr1, &p.rtval, &p.rtcode, &p.rtpid); err != nil {
		t.Fatalf("pause target printed %q: %v", line, err)
	}
	return p
}

func TestPauseRestart(t *testing.T) {
	tg := start(t, buildC(t, "pauser", pauseSrc))
	tg.line(t)
	tg.blockedIn(t, nrPause)

	s := mustSeize(t, tg.pid)
	exercise(t, s, tg.pid)
	probe := injectSemUndo(t, s)
	mustDetach(t, s)

	// pause returns only after a handler ran: if the restart were lost,
	// the first report would show a spurious return without SIGUSR1.
	tg.blockedIn(t, nrPause)
	if err := unix.Kill(tg.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if p := parsePause(t, tg.line(t)); p.ret != -1 || p.errno != int(unix.EINTR) || p.usr1 != 1 {
		t.Fatalf("first pause report %+v, want ret -1, EINTR, one SIGUSR1", p)
	}
	probe.check(t, tg)
}

func TestSignalRedelivery(t *testing.T) {
	tg := start(t, buildC(t, "pauser", pauseSrc))
	var rtsig int
	if _, err := fmt.Sscanf(tg.line(t), "ready %d", &rtsig); err != nil {
		t.Fatal(err)
	}
	tg.blockedIn(t, nrPause)

	s := mustSeize(t, tg.pid)
	// Both signals arrive while the target is held; the injection that
	// follows meets them as signal-delivery-stops.
	if err := unix.Kill(tg.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	var si [128]byte
	*(*int32)(unsafe.Pointer(&si[0])) = int32(rtsig)
	*(*int32)(unsafe.Pointer(&si[8])) = -1 // SI_QUEUE
	*(*int32)(unsafe.Pointer(&si[16])) = int32(os.Getpid())
	*(*int32)(unsafe.Pointer(&si[24])) = 4242 // si_value
	if _, _, e := unix.Syscall(unix.SYS_RT_SIGQUEUEINFO, uintptr(tg.pid), uintptr(rtsig), uintptr(unsafe.Pointer(&si[0]))); e != 0 {
		t.Fatalf("rt_sigqueueinfo: %v", e)
	}
	exercise(t, s, tg.pid)
	if st := s.Stats(); st.Signals != 2 {
		t.Fatalf("Stats().Signals = %d, want 2 (SIGUSR1 and signal %d intercepted)", st.Signals, rtsig)
	}
	mustDetach(t, s)

	p := parsePause(t, tg.line(t))
	for p.usr1 == 0 || p.rtval == 0 { // each handler may end its own pause
		p = parsePause(t, tg.line(t))
	}
	want := pauseReport{ret: -1, errno: int(unix.EINTR), usr1: 1, rtval: 4242, rtcode: -1, rtpid: os.Getpid()}
	if p != want {
		t.Fatalf("after Detach the target reported %+v, want %+v (each signal once, sigqueue's siginfo intact)", p, want)
	}
}

func TestSpinUserSpace(t *testing.T) {
	const seed, n = 88172645463325252, 1000000
	tg := start(t, buildC(t, "spinner", fmt.Sprintf(`
static volatile sig_atomic_t stop;
static volatile unsigned long long vseed = %dULL;
static void on_term(int sig) { stop = 1; }
static unsigned long long spin(unsigned long long x, double *d) {
	double acc = 0;
	for (long i = 0; i < %d; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		acc = acc * 0.5 + (double)(x & 0xffff);
	}
	*d = acc;
	return x;
}
int main(void) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	double d0, d;
	unsigned long long x0 = spin(vseed, &d0);
	long rounds = 0, bad = 0;
	printf("ready\n");
	fflush(stdout);
	while (!stop) {
		unsigned long long x = spin(vseed, &d);
		if (x != x0 || d != d0)
			bad++;
		rounds++;
	}
	printf("rounds %%ld bad %%ld x %%llu\n", rounds, bad, x0);
	fflush(stdout);
	return 0;
}
`, uint64(seed), n)))
	tg.line(t)
	want := uint64(seed)
	for i := 0; i < n; i++ {
		want ^= want << 13
		want ^= want >> 7
		want ^= want << 17
	}

	userStops := 0
	for i := 0; i < 100; i++ {
		s := mustSeize(t, tg.pid)
		if got, err := s.Syscall(unix.SYS_GETPID); err != nil || int(got) != tg.pid {
			t.Fatalf("getpid: %d, %v", got, err)
		}
		// The spinner makes no syscall after its "ready" (whose write
		// the first sessions may still catch).
		if int64(s.saved.Orig_rax) == -1 {
			userStops++
		}
		// The stub sits in the vDSO, found without /proc maps.
		if m, ok := mappingAt(t, tg.pid, s.stub); !ok || m.perms != "r-xp" || m.name != "[vdso]" {
			t.Fatalf("stub at %#x is in %+v, want the [vdso]", s.stub, m)
		}
		mustDetach(t, s)
	}
	// Found through /proc maps, it sits in the padding of the spinner's
	// own text.
	for i := 0; i < 10; i++ {
		s := mustSeizeWith(t, tg.pid, hooks{noVDSO: true})
		if got, err := s.Syscall(unix.SYS_GETPID); err != nil || int(got) != tg.pid {
			t.Fatalf("getpid: %d, %v", got, err)
		}
		if m, ok := mappingAt(t, tg.pid, s.stub); !ok || m.perms != "r-xp" || m.name != tg.cmd.Path {
			t.Fatalf("stub at %#x is in %+v, want the spinner's r-xp text %s", s.stub, m, tg.cmd.Path)
		}
		mustDetach(t, s)
	}
	if userStops == 0 {
		t.Fatalf("the spinner never stopped in user space: the vDSO path was not exercised")
	}
	s := mustSeize(t, tg.pid)
	for i := 0; i < 100; i++ {
		if got, err := s.Syscall(unix.SYS_GETPID); err != nil || int(got) != tg.pid {
			t.Fatalf("getpid: %d, %v", got, err)
		}
	}
	exercise(t, s, tg.pid)
	probe := injectSemUndo(t, s)
	mustDetach(t, s)

	if err := unix.Kill(tg.pid, unix.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var rounds, bad int
	var x uint64
	line := tg.line(t)
	if _, err := fmt.Sscanf(line, "rounds %d bad %d x %d", &rounds, &bad, &x); err != nil {
		t.Fatalf("spinner printed %q: %v", line, err)
	}
	if bad != 0 || x != want || rounds == 0 {
		t.Fatalf("spinner: %d rounds, %d bad, checksum %d (want %d): registers or memory were disturbed", rounds, bad, x, want)
	}
	// The spinner has exited by itself; its semadj applies at exit too.
	_ = tg.cmd.Wait()
	if v := semctl(t, probe.semid, 0, semGetVal); v != 0 {
		t.Fatalf("after the spinner exited the value is %d, want 0", v)
	}
}

const threadsSrc = `
#define NSPIN 2
static volatile unsigned long counters[NSPIN + 1];
static void *spinner(void *a) {
	for (;;)
		counters[(long)a]++;
	return NULL;
}
static void *sleeper(void *a) {
	struct timespec ts = { 0, 1000000 };
	for (;;) {
		nanosleep(&ts, NULL);
		counters[NSPIN]++;
	}
	return NULL;
}
int main(int argc, char **argv) {
	pthread_t th;
	for (long i = 0; i < NSPIN; i++)
		pthread_create(&th, NULL, spinner, (void *)i);
	pthread_create(&th, NULL, sleeper, NULL);
	printf("ready %p\n", (void *)counters);
	fflush(stdout);
	if (argc > 1)
		pthread_exit(NULL); /* the leader exits, the threads go on */
	for (;;)
		pause();
}
`

// liveTIDs lists pid's live threads as Seize picks among them.
func liveTIDs(pid int) []int {
	threads, _ := proc.Threads(pid)
	return liveThreads(threads, pid)
}

func counters(t *testing.T, pid int, addr uintptr) [3]uint64 {
	t.Helper()
	tids := liveTIDs(pid)
	if len(tids) == 0 {
		t.Fatalf("no live thread in %d", pid)
	}
	b := readRemote(t, tids[0], addr, 24)
	var c [3]uint64
	for i := range c {
		c[i] = *(*uint64)(unsafe.Pointer(&b[8*i]))
	}
	return c
}

func allAdvance(t *testing.T, pid int, addr uintptr) {
	t.Helper()
	before := counters(t, pid, addr)
	testenv.Eventually(t, "every thread to make progress", func() bool {
		now := counters(t, pid, addr)
		for i := range now {
			if now[i] <= before[i] {
				return false
			}
		}
		return true
	})
}

func TestMultiThreaded(t *testing.T) {
	bin := buildC(t, "threads", threadsSrc)
	for _, leaderExits := range []bool{false, true} {
		t.Run(fmt.Sprintf("leaderExits=%v", leaderExits), func(t *testing.T) {
			var args []string
			if leaderExits {
				args = append(args, "exit")
			}
			tg := start(t, bin, args...)
			var addr uintptr
			if _, err := fmt.Sscanf(tg.line(t), "ready %v", &addr); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, "all threads to start", func() bool {
				tids := liveTIDs(tg.pid)
				return len(tids) == 3 || (!leaderExits && len(tids) == 4)
			})
			if leaderExits {
				testenv.Eventually(t, "the leader to exit", func() bool { return state(tg.pid) == 'Z' })
			}
			allAdvance(t, tg.pid, addr)

			s := mustSeize(t, tg.pid)
			if leaderExits == (s.Tid() == tg.pid) {
				t.Fatalf("Seize chose thread %d of %d (leader exited: %v)", s.Tid(), tg.pid, leaderExits)
			}
			exercise(t, s, tg.pid)
			probe := injectSemUndo(t, s)
			mustDetach(t, s)

			allAdvance(t, tg.pid, addr)
			probe.check(t, tg)
		})
	}
}

func TestGoTarget(t *testing.T) {
	testenv.RequireRoot(t)
	tg := start(t, testenv.BuildGo(t, "./testdata/gotarget"))
	tg.line(t)
	snapshot := func() [4]uint64 {
		if err := unix.Kill(tg.pid, unix.SIGUSR1); err != nil {
			t.Fatal(err)
		}
		var c [4]uint64
		line := tg.line(t)
		if _, err := fmt.Sscanf(line, "counters %d %d %d %d", &c[0], &c[1], &c[2], &c[3]); err != nil {
			t.Fatalf("go target printed %q: %v", line, err)
		}
		return c
	}
	before := snapshot()

	s := mustSeize(t, tg.pid)
	exercise(t, s, tg.pid)
	probe := injectSemUndo(t, s)
	mustDetach(t, s)
	t.Logf("stop time %v, %d signals re-queued", s.Stats().StopTime, s.Stats().Signals)

	testenv.Eventually(t, "every goroutine to make progress", func() bool {
		now := snapshot()
		for i := range now {
			if now[i] <= before[i] {
				return false
			}
		}
		return true
	})
	probe.check(t, tg)
}

func TestSemopBlockedTarget(t *testing.T) {
	a := newSet(t, 3)
	tg := start(t, buildC(t, "semwaiter", `
int main(int argc, char **argv) {
	struct sembuf op = { 0, -1, SEM_UNDO };
	printf("ready\n");
	fflush(stdout);
	int r = semop(atoi(argv[1]), &op, 1);
	int e = r ? errno : 0;
	printf("semop %d errno %d\n", r, e);
	fflush(stdout);
	for (;;)
		pause();
}
`), strconv.Itoa(a))
	tg.line(t)
	tg.blockedIn(t, nrSemop, nrSemtimedop)
	testenv.Eventually(t, "the target to wait on the set", func() bool { return semctl(t, a, 0, semGetNcnt) == 1 })

	s := mustSeize(t, tg.pid)
	if got, err := s.Syscall(unix.SYS_GETPID); err != nil || int(got) != tg.pid {
		t.Fatalf("getpid: %d, %v", got, err)
	}
	addr, err := s.Mmap(4096)
	if err != nil {
		t.Fatal(err)
	}
	if ret, err := s.Syscall(unix.SYS_SEMCTL, uintptr(a), 0, unix.IPC_STAT, addr); err != nil || ret != 0 {
		t.Fatalf("injected semctl(IPC_STAT): %d, %v", ret, err)
	}
	ds := readRemote(t, tg.pid, addr, 104) // struct semid64_ds
	if nsems, mode := *(*uint64)(unsafe.Pointer(&ds[80])), *(*uint16)(unsafe.Pointer(&ds[20])); nsems != 3 || mode&0o777 != 0o600 {
		t.Fatalf("IPC_STAT in the target: nsems %d mode %o, want 3 and 600", nsems, mode&0o777)
	}
	probe := injectSemUndo(t, s)
	mustDetach(t, s)
	if !s.Stats().RestartedSemop {
		t.Errorf("Stats().RestartedSemop is false for a target blocked in semop")
	}

	// Still blocked: the first thing it prints must be the successful semop.
	tg.blockedIn(t, nrSemop, nrSemtimedop)
	testenv.Eventually(t, "the target to wait on the set again", func() bool { return semctl(t, a, 0, semGetNcnt) == 1 })
	semop(t, a, sembuf(0, 1, 0))
	if got, want := tg.line(t), "semop 0 errno 0"; got != want {
		t.Fatalf("target printed %q, want %q", got, want)
	}
	probe.check(t, tg)
	if v := semctl(t, a, 0, semGetVal); v != 1 {
		t.Fatalf("after exit the target's own SEM_UNDO left %d on the set it waited on, want 1", v)
	}
}

func TestGroupStopStaysStopped(t *testing.T) {
	const ms = 300
	tg := start(t, buildC(t, "sleeper", sleeperSrc), strconv.Itoa(ms))
	tg.line(t)
	tg.blockedIn(t, nrClockNanoslp, nrNanosleep)
	if err := unix.Kill(tg.pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the target to stop", func() bool { return state(tg.pid) == 'T' })

	s := mustSeize(t, tg.pid)
	if !s.Stats().GroupStop {
		t.Errorf("Stats().GroupStop is false for a SIGSTOPped target")
	}
	exercise(t, s, tg.pid)
	probe := injectSemUndo(t, s)
	if got := state(tg.pid); got != 't' {
		t.Errorf("during the session the target is in state %c, want t (tracing stop)", got)
	}
	mustDetach(t, s)

	testenv.Eventually(t, "the target to be in a job-control stop again", func() bool { return state(tg.pid) == 'T' })
	if err := unix.Kill(tg.pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	checkSlept(t, tg.line(t), ms)
	probe.check(t, tg)
}

func TestAlreadyTraced(t *testing.T) {
	bin := buildC(t, "sleeper", sleeperSrc)
	t.Run("same process", func(t *testing.T) {
		tg := start(t, bin, "100000")
		tg.line(t)
		s := mustSeize(t, tg.pid)
		defer mustDetach(t, s)
		_, err := Seize(tg.pid)
		if !errors.Is(err, ErrAlreadyTraced) || !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "this process") {
			t.Fatalf("second Seize: %v, want ErrAlreadyTraced by this process", err)
		}
		if got, err := s.Syscall(unix.SYS_GETPID); err != nil || int(got) != tg.pid {
			t.Fatalf("first session broken after the refused Seize: %d, %v", got, err)
		}
	})
	t.Run("other process", func(t *testing.T) {
		tg := start(t, bin, "100000")
		tg.line(t)
		helper := startTracer(t, "hold", tg.pid)
		if l := helper.line(t); l != "seized" {
			t.Fatalf("helper: %s", l)
		}
		_, err := Seize(tg.pid)
		if !errors.Is(err, ErrAlreadyTraced) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", helper.pid)) {
			t.Fatalf("Seize of a target traced by pid %d: %v, want ErrAlreadyTraced naming the tracer", helper.pid, err)
		}
		t.Log(err)
	})
}

const readerSrc = `
int main(void) {
	char buf[64];
	printf("ready\n");
	fflush(stdout);
	ssize_t n = read(0, buf, sizeof buf);
	int e = n < 0 ? errno : 0;
	printf("read %zd errno %d data %.*s\n", n, e, n > 0 ? (int)n : 0, buf);
	fflush(stdout);
	for (;;)
		pause();
}
`

// TestTracerKilledTargetSurvives kills the tracer (a helper process using
// this package) while it holds the target: parked between calls, and at the
// syscall-exit-stop of a call with the registers already restored. The
// kernel detaches (no PTRACE_O_EXITKILL) and the target's interrupted read
// must go on as if nothing happened.
func TestTracerKilledTargetSurvives(t *testing.T) {
	bin := buildC(t, "reader", readerSrc)
	for _, mode := range []string{"inject-hold", "die-in-stub", "die-at-exit", "die-after-restore"} {
		t.Run(mode, func(t *testing.T) {
			tg := start(t, bin)
			tg.line(t)
			tg.blockedIn(t, nrRead)
			killTracer(t, mode, tg.pid)
			tg.blockedIn(t, nrRead)
			if _, err := tg.stdin.Write([]byte("alive")); err != nil {
				t.Fatal(err)
			}
			if got, want := tg.line(t), "read 5 errno 0 data alive"; got != want {
				t.Fatalf("target printed %q, want %q", got, want)
			}
		})
	}
}

func TestRefusals(t *testing.T) {
	testenv.RequireRoot(t)
	t.Run("no process", func(t *testing.T) {
		cmd := exec.Command("true")
		if err := testenv.Run(t, cmd, "true"); err != nil {
			t.Fatal(err)
		}
		for _, pid := range []int{0, -1, cmd.Process.Pid} {
			if _, err := Seize(pid); !errors.Is(err, ErrNoProcess) {
				t.Errorf("Seize(%d): %v, want ErrNoProcess", pid, err)
			}
		}
	})
	t.Run("zombie", func(t *testing.T) {
		tg := start(t, "true")
		testenv.Eventually(t, "the child to become a zombie", func() bool { return state(tg.pid) == 'Z' })
		_, err := Seize(tg.pid)
		if !errors.Is(err, ErrZombie) {
			t.Fatalf("Seize of a zombie: %v, want ErrZombie", err)
		}
		t.Log(err)
	})
	t.Run("kernel thread", func(t *testing.T) {
		st, err := proc.Stat(2)
		if err != nil || !st.KernelThread() {
			testenv.Missing(t, "kernel thread at pid 2", "run the tests in the host pid namespace")
		}
		_, err = Seize(2)
		if !errors.Is(err, ErrKernelThread) {
			t.Fatalf("Seize(2): %v, want ErrKernelThread", err)
		}
		t.Log(err)
	})
	t.Run("self", func(t *testing.T) {
		if _, err := Seize(os.Getpid()); !errors.Is(err, ErrSelf) {
			t.Errorf("Seize(self): %v, want ErrSelf", err)
		}
		tids := liveTIDs(os.Getpid())
		for _, tid := range tids {
			if tid != os.Getpid() {
				if _, err := Seize(tid); !errors.Is(err, ErrSelf) {
					t.Errorf("Seize(own thread %d): %v, want ErrSelf", tid, err)
				}
				break
			}
		}
	})
	t.Run("permission", func(t *testing.T) {
		tg := start(t, buildC(t, "sleeper", sleeperSrc), "100000")
		tg.line(t)
		errc := make(chan error, 1)
		go func() {
			// Never unlocked: the thread with the dropped credentials
			// dies with this goroutine.
			runtime.LockOSThread()
			if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, 65534, 65534, 65534); e != 0 {
				errc <- e
				return
			}
			s, err := Seize(tg.pid)
			if err == nil {
				s.Detach()
			}
			errc <- err
		}()
		err := <-errc
		if !errors.Is(err, ErrPermission) || !errors.Is(err, unix.EPERM) {
			t.Fatalf("Seize as nobody: %v, want ErrPermission wrapping EPERM", err)
		}
		t.Log(err)
	})
}

// Test32BitTarget: a 32-bit program (sleeper32) is refused, by its ELF
// header and, without that check, by its CS register, and left alone.
func Test32BitTarget(t *testing.T) {
	testenv.RequireRoot(t)
	require32BitELF(t)
	tg := start(t, sleeper32.write(t, "sleeper32"))
	testenv.Eventually(t, "the 32-bit target to sleep", func() bool { return state(tg.pid) == 'S' })

	_, err := Seize(tg.pid)
	if !errors.Is(err, ErrTargetABI) {
		t.Fatalf("Seize of a 32-bit program: %v, want ErrTargetABI", err)
	}
	t.Log(err)

	// Without the ELF check the CS register gives it away, after seizing;
	// the target must then be left as it was.
	_, err = seizeWith(tg.pid, hooks{skipELFCheck: true}, nil)
	if !errors.Is(err, ErrTargetABI) || !strings.Contains(err.Error(), "CS 0x23") {
		t.Fatalf("Seize of a thread in 32-bit mode: %v, want ErrTargetABI from CS 0x23", err)
	}
	t.Log(err)
	if tr := tracerOf(tg.pid); tr != 0 {
		t.Fatalf("refused target still traced by %d", tr)
	}
	testenv.Eventually(t, "the 32-bit target to sleep again", func() bool { return state(tg.pid) == 'S' })
}

// TestInt80From64Bit: a 64-bit thread blocked in a 32-bit system call (int
// $0x80, int80Sleeper) is refused and left alone.
func TestInt80From64Bit(t *testing.T) {
	testenv.RequireRoot(t)
	requireInt80(t)
	tg := start(t, int80Sleeper.write(t, "int80sleeper"))
	if l := tg.line(t); l+"\n" != int80Ready {
		t.Fatalf("int $0x80 target said %q, want %q", l, int80Ready)
	}
	testenv.Eventually(t, "the target to sleep", func() bool { return state(tg.pid) == 'S' && syscallNr(tg.pid, tg.pid) == 162 })
	_, err := Seize(tg.pid)
	if !errors.Is(err, ErrTargetABI) || !strings.Contains(err.Error(), "int $0x80") {
		t.Fatalf("Seize of a thread in an int $0x80 call: %v, want ErrTargetABI", err)
	}
	t.Log(err)
	if tr := tracerOf(tg.pid); tr != 0 {
		t.Fatalf("refused target still traced by %d", tr)
	}
	// Restarted by the kernel, the sleep continues in restart_syscall
	// (0 in the ia32 table); had the restart failed, it would have returned.
	testenv.Eventually(t, "the target to sleep again", func() bool {
		n := syscallNr(tg.pid, tg.pid)
		return state(tg.pid) == 'S' && (n == 0 || n == 162)
	})
	select {
	case l := <-tg.lines:
		t.Fatalf("the refused target's nanosleep returned: %s", l)
	default:
	}
}

func TestDetachAfterDeath(t *testing.T) {
	bin := buildC(t, "sleeper", sleeperSrc)
	for _, op := range []string{"syscall", "detach"} {
		t.Run(op, func(t *testing.T) {
			tg := start(t, bin, "100000")
			tg.line(t)
			s := mustSeize(t, tg.pid)
			if _, err := s.Mmap(4096); err != nil {
				t.Fatal(err)
			}
			if err := unix.Kill(tg.pid, unix.SIGKILL); err != nil {
				t.Fatal(err)
			}
			if op == "syscall" {
				_, err := s.Syscall(unix.SYS_GETPID)
				if !errors.Is(err, ErrTargetExited) {
					t.Fatalf("Syscall on a killed target: %v, want ErrTargetExited", err)
				}
				t.Log(err)
				if _, err := s.Mmap(4096); !errors.Is(err, ErrTargetExited) {
					t.Fatalf("Mmap after the exit: %v, want ErrTargetExited", err)
				}
			}
			if err := s.Detach(); err != nil {
				t.Fatalf("Detach after the target died: %v", err)
			}
			if err := s.Detach(); err != nil {
				t.Fatalf("second Detach: %v", err)
			}
			if _, err := s.Syscall(unix.SYS_GETPID); !errors.Is(err, ErrDetached) {
				t.Fatalf("Syscall after Detach: %v, want ErrDetached", err)
			}
			if n := activeSessions.Load(); n != 0 {
				t.Fatalf("%d sessions still hold a thread", n)
			}
		})
	}
}

// TestKilledDuringSession races SIGKILL against whole sessions: every
// outcome must be a clean success or a clean error, with no panic, no hang
// and no target left traced. Even attempts kill the target right before a
// given step (covering each step boundary); odd ones kill it from another
// goroutine after a random delay within a session's duration (landing
// inside steps).
func TestKilledDuringSession(t *testing.T) {
	bin := buildC(t, "sleeper", sleeperSrc)
	const steps = 7 // seize, getpid, mmap, write, semop, munmap, detach
	session := func(pid int, killBefore int, kill func()) error {
		step := func(k int) {
			if k == killBefore {
				kill()
			}
		}
		step(0)
		s, err := Seize(pid)
		if err != nil {
			return err
		}
		defer s.Detach()
		step(1)
		if _, err := s.Syscall(unix.SYS_GETPID); err != nil {
			return err
		}
		step(2)
		addr, err := s.Mmap(4096)
		if err != nil {
			return err
		}
		step(3)
		if err := s.WriteMemory(addr, sembuf(0, 1, unix.IPC_NOWAIT)); err != nil {
			return err
		}
		step(4)
		if _, err := s.Syscall(unix.SYS_SEMOP, ^uintptr(0)>>1, addr, 1); !errors.Is(err, unix.EINVAL) {
			return err // semid out of range: EINVAL, but the call ran
		}
		step(5)
		if err := s.Munmap(addr, 4096); err != nil {
			return err
		}
		step(6)
		return s.Detach()
	}

	// Calibrate the random delays on a session nobody kills.
	tg := start(t, bin, "100000")
	tg.line(t)
	t0 := time.Now()
	if err := session(tg.pid, -1, nil); err != nil {
		t.Fatal(err)
	}
	span := time.Since(t0)
	t.Logf("an undisturbed session takes %v", span)

	outcomes := map[string]int{}
	for i := 0; i < 200; i++ {
		tg := start(t, bin, "100000")
		tg.line(t)
		kill := func() { _ = tg.cmd.Process.Signal(unix.SIGKILL) }
		killed := make(chan struct{})
		killBefore := -1
		if i%2 == 0 {
			killBefore = (i / 2) % steps
			close(killed)
		} else {
			delay := time.Duration(rand.Int64N(int64(2 * span)))
			go func() {
				time.Sleep(delay)
				kill()
				close(killed)
			}()
		}
		err := session(tg.pid, killBefore, kill)
		switch {
		case err == nil:
			outcomes["done"]++
		case errors.Is(err, ErrTargetExited):
			outcomes["exited"]++
		case errors.Is(err, ErrNoProcess):
			outcomes["no process"]++
		case errors.Is(err, ErrZombie):
			outcomes["zombie"]++
		default:
			t.Fatalf("attempt %d (kill before step %d): %v", i, killBefore, err)
		}
		if tr := tracerOf(tg.pid); tr > 0 {
			t.Fatalf("attempt %d: pid %d left traced by %d", i, tg.pid, tr)
		}
		if n := activeSessions.Load(); n != 0 {
			t.Fatalf("attempt %d: %d sessions still hold a thread", i, n)
		}
		<-killed
		tg.kill(t)
	}
	t.Logf("outcomes: %v", outcomes)
}

func TestWouldBlockAndErrno(t *testing.T) {
	tg := start(t, buildC(t, "sleeper", sleeperSrc), "100000")
	tg.line(t)
	s := mustSeize(t, tg.pid)
	defer mustDetach(t, s)
	id := newSet(t, 1)
	addr, err := s.Mmap(4096)
	if err != nil {
		t.Fatal(err)
	}
	ops := append(sembuf(0, 1, unix.IPC_NOWAIT), sembuf(0, -2, 0)...)
	if err := s.WriteMemory(addr, ops); err != nil {
		t.Fatal(err)
	}
	_, err = s.Syscall(unix.SYS_SEMOP, uintptr(id), addr, 2)
	if !errors.Is(err, ErrWouldBlock) {
		t.Fatalf("semop without IPC_NOWAIT: %v, want ErrWouldBlock", err)
	}
	t.Log(err)
	if err := s.WriteMemory(addr+6, sembuf(0, -2, unix.IPC_NOWAIT)); err != nil {
		t.Fatal(err)
	}
	_, err = s.Syscall(unix.SYS_SEMTIMEDOP, uintptr(id), addr, 2, 0)
	var se *SyscallError
	if !errors.As(err, &se) || !errors.Is(err, unix.EAGAIN) || se.Nr != unix.SYS_SEMTIMEDOP {
		t.Fatalf("semop that cannot proceed: %v, want a SyscallError with EAGAIN", err)
	}
	if v := semctl(t, id, 0, semGetVal); v != 0 {
		t.Fatalf("failed semop changed the value to %d", v)
	}
	if got, err := s.Syscall(unix.SYS_GETPID); err != nil || int(got) != tg.pid {
		t.Fatalf("session unusable after a failed syscall: %d, %v", got, err)
	}
}

func TestWrongThread(t *testing.T) {
	tg := start(t, buildC(t, "sleeper", sleeperSrc), "100000")
	tg.line(t)
	s := mustSeize(t, tg.pid)
	errc := make(chan error, 2)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		_, err := s.Syscall(unix.SYS_GETPID)
		errc <- err
		errc <- s.Detach()
	}()
	for i := 0; i < 2; i++ {
		if err := <-errc; !errors.Is(err, ErrWrongThread) {
			t.Fatalf("use from another thread: %v, want ErrWrongThread", err)
		}
	}
	mustDetach(t, s)
}

const filteredSrc = `
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
int main(void) {
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getpid, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mmap, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { sizeof f / sizeof f[0], f };
	printf("ready\n");
	fflush(stdout);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
		return 1;
	for (;;)
		pause();
}
`

// TestSeccompSuspended injects into a target whose seccomp filter answers
// getpid with EPERM and kills the process on mmap.
func TestSeccompSuspended(t *testing.T) {
	bin := buildC(t, "filtered", filteredSrc)
	tg := start(t, bin)
	tg.line(t)
	tg.blockedIn(t, nrPause)
	if st, err := proc.Status(tg.pid); err != nil || st.Seccomp != 2 {
		t.Fatalf("target has no seccomp filter: %+v %v", st, err)
	}
	s := mustSeize(t, tg.pid)
	if s.Stats().SeccompActive {
		testenv.Missing(t, "PTRACE_O_SUSPEND_SECCOMP", "the kernel needs CONFIG_CHECKPOINT_RESTORE and the tracer CAP_SYS_ADMIN")
	}
	// getpid fails with EPERM and mmap kills the process under the filter.
	exercise(t, s, tg.pid)
	probe := injectSemUndo(t, s)
	mustDetach(t, s)

	probe.check(t, tg)
}

// TestSeccompNotSuspended shows what the suspension prevents: the filter
// answers the injected getpid with EPERM.
func TestSeccompNotSuspended(t *testing.T) {
	tg := start(t, buildC(t, "filtered", filteredSrc))
	tg.line(t)
	tg.blockedIn(t, nrPause)
	s := mustSeizeWith(t, tg.pid, hooks{noSuspendSeccomp: true})
	defer mustDetach(t, s)
	if !s.Stats().SeccompActive {
		t.Fatalf("Stats().SeccompActive is false while the filter applies")
	}
	if _, err := s.Syscall(unix.SYS_GETPID); !errors.Is(err, unix.EPERM) {
		t.Fatalf("getpid under the filter: %v, want EPERM from the filter", err)
	}
}

// TestRegistersIntact compares every general and x87/SSE register of a
// parked thread before and after injections.
func TestRegistersIntact(t *testing.T) {
	tg := start(t, buildC(t, "sleeper", sleeperSrc), "100000")
	tg.line(t)
	tg.blockedIn(t, nrClockNanoslp, nrNanosleep)
	s := mustSeize(t, tg.pid)
	defer mustDetach(t, s)

	regs := func() (unix.PtraceRegs, [512]byte) {
		var r unix.PtraceRegs
		var fp [512]byte
		if err := getRegs(s.tid, &r); err != nil {
			t.Fatal(err)
		}
		if err := ptracePtr(unix.PTRACE_GETFPREGS, s.tid, 0, unsafe.Pointer(&fp[0])); err != nil {
			t.Fatal(err)
		}
		return r, fp
	}
	r0, fp0 := regs()
	if r0 != s.saved {
		t.Fatalf("parked registers differ from the saved ones")
	}
	if int64(r0.Rax) != -516 || r0.Orig_rax != nrClockNanoslp {
		t.Fatalf("sleeper stopped with rax %d orig_rax %d, want -ERESTART_RESTARTBLOCK in clock_nanosleep", int64(r0.Rax), r0.Orig_rax)
	}
	exercise(t, s, tg.pid)
	stub, orig := s.stub, s.stubOrig
	if stub == 0 {
		t.Fatal("no stub was placed")
	}
	if m, ok := mappingAt(t, tg.pid, stub); !ok || m.perms != "r-xp" {
		t.Fatalf("stub at %#x is in %+v, want an r-xp mapping", stub, m)
	}
	// Between calls the thread sits in the stub; rest puts it back as
	// Detach does.
	if err := s.rest("test"); err != nil {
		t.Fatal(err)
	}
	r1, fp1 := regs()
	if r1 != r0 {
		t.Fatalf("registers changed by the injections:\nbefore %+v\nafter  %+v", r0, r1)
	}
	if !bytes.Equal(fp0[:], fp1[:]) {
		t.Fatalf("FP/SSE registers changed by the injections")
	}
	if err := s.Detach(); err != nil {
		t.Fatal(err)
	}
	if back := readRemote(t, tg.pid, stub, len(orig)); !bytes.Equal(back, orig) {
		t.Fatalf("the stub's %d bytes at %#x were not put back", len(orig), stub)
	}
}

// TestPokeFallback writes and reads through PTRACE_POKEDATA/PEEKDATA, the
// path taken when process_vm_writev is denied.
func TestPokeFallback(t *testing.T) {
	tg := start(t, buildC(t, "sleeper", sleeperSrc), "100000")
	tg.line(t)
	s := mustSeizeWith(t, tg.pid, hooks{pokeOnly: true})
	defer mustDetach(t, s)
	addr, err := s.Mmap(4096)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("an unaligned write through PTRACE_POKEDATA, 61 bytes long...")
	if err := s.WriteMemory(addr+3, data); err != nil {
		t.Fatal(err)
	}
	if back := readRemote(t, tg.pid, addr, len(data)+6); !bytes.Equal(back[3:3+len(data)], data) ||
		!bytes.Equal(back[:3], []byte{0, 0, 0}) || !bytes.Equal(back[3+len(data):], []byte{0, 0, 0}) {
		t.Fatalf("poked page holds %q", back)
	}
	back := make([]byte, len(data))
	if err := s.ReadMemory(addr+3, back); err != nil || !bytes.Equal(back, data) {
		t.Fatalf("peek read %q, %v", back, err)
	}
}

// TestGroupStopContinuedDuringSession: a SIGCONT that arrives while a
// stopped target is held ends the job-control stop, so after Detach the
// target runs (and its SIGCONT is delivered once).
func TestGroupStopContinuedDuringSession(t *testing.T) {
	const ms = 200
	tg := start(t, buildC(t, "sleeper", sleeperSrc), strconv.Itoa(ms))
	tg.line(t)
	tg.blockedIn(t, nrClockNanoslp, nrNanosleep)
	if err := unix.Kill(tg.pid, unix.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, "the target to stop", func() bool { return state(tg.pid) == 'T' })
	s := mustSeize(t, tg.pid)
	if err := unix.Kill(tg.pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	exercise(t, s, tg.pid)
	if st := s.Stats(); st.Signals != 1 {
		t.Errorf("Stats().Signals = %d, want 1 (the SIGCONT)", st.Signals)
	}
	mustDetach(t, s)
	checkSlept(t, tg.line(t), ms) // it ran on: the stop was ended
}

// TestSignalStorm sends a stream of queued real-time signals, each with its
// own value, while sessions come and go: every signal must reach the
// handler exactly once, whether it arrived before, during or between
// sessions and whatever stop it was intercepted in.
func TestSignalStorm(t *testing.T) {
	tg := start(t, buildC(t, "counter", `
static volatile long count, sum;
static void on_rt(int sig, siginfo_t *si, void *uc) {
	count++;
	sum += si->si_value.sival_int;
}
int main(void) {
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_rt;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigaction(SIGRTMIN + 1, &sa, NULL);
	printf("ready %d %p %p\n", SIGRTMIN + 1, (void *)&count, (void *)&sum);
	fflush(stdout);
	struct timespec ts = { 0, 100000 };
	for (;;)
		nanosleep(&ts, NULL);
}
`))
	var rtsig int
	var countAddr, sumAddr uintptr
	if _, err := fmt.Sscanf(tg.line(t), "ready %d %v %v", &rtsig, &countAddr, &sumAddr); err != nil {
		t.Fatal(err)
	}
	queue := func(v int) error {
		var si [128]byte
		*(*int32)(unsafe.Pointer(&si[0])) = int32(rtsig)
		*(*int32)(unsafe.Pointer(&si[8])) = -1 // SI_QUEUE
		*(*int32)(unsafe.Pointer(&si[16])) = int32(os.Getpid())
		*(*int32)(unsafe.Pointer(&si[24])) = int32(v)
		for {
			_, _, e := unix.Syscall(unix.SYS_RT_SIGQUEUEINFO, uintptr(tg.pid), uintptr(rtsig), uintptr(unsafe.Pointer(&si[0])))
			switch e {
			case 0:
				return nil
			case unix.EAGAIN:
				time.Sleep(100 * time.Microsecond) // queue full: let the target drain it
			default:
				return e
			}
		}
	}
	// Values 1..rounds*20 are sent in step with the sessions (half of
	// them while the target is held, so they are intercepted for sure);
	// the rest come from another goroutine at any moment.
	const rounds, background = 100, 2000
	const n = rounds*20 + background
	sent := make(chan error, 1)
	go func() {
		for v := rounds*20 + 1; v <= n; v++ {
			if err := queue(v); err != nil {
				sent <- err
				return
			}
		}
		sent <- nil
	}()
	intercepted, v := 0, 0
	for r := 0; r < rounds; r++ {
		s := mustSeize(t, tg.pid)
		for k := 0; k < 10; k++ {
			v++
			if err := queue(v); err != nil {
				t.Fatalf("rt_sigqueueinfo: %v", err)
			}
		}
		if got, err := s.Syscall(unix.SYS_GETPID); err != nil || int(got) != tg.pid {
			t.Fatalf("getpid: %d, %v", got, err)
		}
		mustDetach(t, s)
		intercepted += s.Stats().Signals
		for k := 0; k < 10; k++ {
			v++
			if err := queue(v); err != nil {
				t.Fatalf("rt_sigqueueinfo: %v", err)
			}
		}
	}
	if err := <-sent; err != nil {
		t.Fatalf("rt_sigqueueinfo: %v", err)
	}
	read := func(addr uintptr) int64 {
		return *(*int64)(unsafe.Pointer(&readRemote(t, tg.pid, addr, 8)[0]))
	}
	testenv.Eventually(t, fmt.Sprintf("the handler to count %d signals", n), func() bool { return read(countAddr) >= n })
	if c, sum := read(countAddr), read(sumAddr); c != n || sum != n*(n+1)/2 {
		t.Fatalf("handler saw %d signals summing to %d, want %d summing to %d", c, sum, n, n*(n+1)/2)
	}
	if intercepted < rounds*10 {
		t.Errorf("%d signals intercepted, want at least the %d sent while the target was held", intercepted, rounds*10)
	}
	t.Logf("%d sessions intercepted and re-queued %d signals (%d sent)", rounds, intercepted, n)
}

// TestSignalStateKept: the target's signal mask and dispositions are the
// same after a session. A single-stepping injector fails this for a thread
// that blocks or ignores SIGTRAP: the kernel forces the step's SIGTRAP and
// resets the action to SIG_DFL.
func TestSignalStateKept(t *testing.T) {
	bin := buildC(t, "trapper", `
static void on_trap(int sig) {}
int main(int argc, char **argv) {
	if (argv[1][0] == 'i') {
		signal(SIGTRAP, SIG_IGN);
	} else {
		sigset_t set;
		signal(SIGTRAP, on_trap);
		sigemptyset(&set);
		sigaddset(&set, SIGTRAP);
		sigprocmask(SIG_BLOCK, &set, NULL);
	}
	printf("ready\n");
	fflush(stdout);
	for (;;)
		pause();
}
`)
	for _, mode := range []string{"ignored", "blocked-with-handler"} {
		t.Run(mode, func(t *testing.T) {
			tg := start(t, bin, mode)
			tg.line(t)
			tg.blockedIn(t, nrPause)
			sigState := func() [3]uint64 {
				st, err := proc.Status(tg.pid)
				if err != nil {
					t.Fatal(err)
				}
				return [3]uint64{st.SigBlk, st.SigIgn, st.SigCgt}
			}
			before := sigState()
			if before == ([3]uint64{}) {
				t.Fatalf("target set up no SIGTRAP state")
			}
			s := mustSeize(t, tg.pid)
			exercise(t, s, tg.pid)
			mustDetach(t, s)
			if after := sigState(); after != before {
				t.Fatalf("SigBlk/SigIgn/SigCgt went from %x to %x", before, after)
			}
		})
	}
}

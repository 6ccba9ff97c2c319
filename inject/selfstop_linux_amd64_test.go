package inject

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"testing"

	"github.com/semundo/semundo/internal/testenv"
	"golang.org/x/sys/unix"
)

// signalsSrc sets SIGWINCH and SIGURG up as its arguments say (none,
// catch, block or ignore), then reads lines; for each it reports the
// signal its handler last caught and whether either signal is pending.
const signalsSrc = `
static volatile sig_atomic_t caught;
static void on(int sig) { caught = sig; }
int main(int argc, char **argv) {
	int sigs[2] = { SIGWINCH, SIGURG };
	sigset_t set;
	sigemptyset(&set);
	for (int i = 0; i < 2; i++) {
		if (!strcmp(argv[1 + i], "catch")) {
			struct sigaction sa = { .sa_handler = on, .sa_flags = SA_RESTART };
			sigaction(sigs[i], &sa, NULL);
		} else if (!strcmp(argv[1 + i], "block")) {
			sigaddset(&set, sigs[i]);
		} else if (!strcmp(argv[1 + i], "ignore")) {
			signal(sigs[i], SIG_IGN);
		}
	}
	sigprocmask(SIG_BLOCK, &set, NULL);
	printf("ready\n");
	fflush(stdout);
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		sigset_t pend;
		sigpending(&pend);
		printf("caught %d pending %d %d\n", caught, sigismember(&pend, SIGWINCH), sigismember(&pend, SIGURG));
		fflush(stdout);
	}
	return 0;
}
`

// TestSelfStop checks which signal the stub stops itself with, for each
// way a process can have set SIGWINCH and SIGURG up, that a process which
// catches or blocks both gets syscall stops instead, and that the target
// never sees the signal: no handler runs, nothing is left pending, also
// when the tracer is killed at the self-stop.
func TestSelfStop(t *testing.T) {
	bin := buildC(t, "signals", signalsSrc)
	for _, c := range []struct {
		winch, urg string
		want       unix.Signal
	}{
		{"none", "none", unix.SIGWINCH},
		{"ignore", "none", unix.SIGWINCH},
		{"catch", "none", unix.SIGURG},
		{"block", "ignore", unix.SIGURG},
		{"catch", "block", 0},
		{"block", "catch", 0},
	} {
		t.Run(c.winch+"-"+c.urg, func(t *testing.T) {
			tg := start(t, bin, c.winch, c.urg)
			tg.line(t)
			tg.blockedIn(t, nrRead)
			report := func() string {
				t.Helper()
				if _, err := io.WriteString(tg.stdin, "x\n"); err != nil {
					t.Fatal(err)
				}
				return tg.line(t)
			}

			s := mustSeizeWith(t, tg.pid, hooks{})
			if s.stopSig != c.want {
				t.Errorf("stops itself with %v, want %v", s.stopSig, c.want)
			}
			for i := 0; i < 3; i++ {
				if got, err := s.Syscall(unix.SYS_GETPID); err != nil || int(got) != tg.pid {
					t.Fatalf("getpid %d: %d, %v", i, got, err)
				}
			}
			wantSelf := 3
			if c.want == 0 {
				wantSelf = 0
			}
			if n := s.Stats().SelfStops; n != wantSelf {
				t.Errorf("%d calls ended in the self-stop, want %d", n, wantSelf)
			}
			mustDetach(t, s)
			if got := report(); got != "caught 0 pending 0 0" {
				t.Errorf("after a session the target reports %q, want no signal caught or pending", got)
			}

			if c.want == 0 {
				return
			}
			// The tracer dies at the self-stop of its first call: the
			// kernel delivers the signal it stopped for, which does
			// nothing, and the thread finishes the stub.
			tg.blockedIn(t, nrRead)
			killTracer(t, "die-at-exit", tg.pid)
			if got := report(); got != "caught 0 pending 0 0" {
				t.Errorf("after the tracer died at the self-stop the target reports %q, want no signal caught or pending", got)
			}
		})
	}
}

// TestSyscallStopsHook checks that the hook for syscall stops turns the
// self-stop off, so that tests can run the other path.
func TestSyscallStopsHook(t *testing.T) {
	bin := buildC(t, "signals", signalsSrc)
	tg := start(t, bin, "none", "none")
	tg.line(t)
	s := mustSeizeWith(t, tg.pid, hooks{syscallStops: true})
	defer mustDetach(t, s)
	if got, err := s.Syscall(unix.SYS_GETPID); err != nil || int(got) != tg.pid {
		t.Fatalf("getpid: %d, %v", got, err)
	}
	if s.stopSig != 0 || s.Stats().SelfStops != 0 {
		t.Fatal(fmt.Sprintf("syscallStops: stop signal %v, %d self-stops", s.stopSig, s.Stats().SelfStops))
	}
}

// noTgkillSrc refuses tkill and tgkill with EPERM (a seccomp filter), then answers
// each line it reads with "ok".
const noTgkillSrc = `
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
int main(void) {
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_tkill, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_tgkill, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { sizeof f / sizeof f[0], f };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
		return 1;
	printf("ready\n");
	fflush(stdout);
	char line[64];
	while (fgets(line, sizeof line, stdin)) {
		printf("ok\n");
		fflush(stdout);
	}
	return 0;
}
`

// TestSelfStopRefused runs the self-stopping stub in a thread whose tkill
// a seccomp filter refuses (as a security module could): the thread runs
// the call and goes back to its own code without stopping. The session
// must notice (its watchdog stops the thread), report the call as failed
// with its result unknown, and leave a target that carries on.
func TestSelfStopRefused(t *testing.T) {
	tg := start(t, buildC(t, "notgkill", noTgkillSrc))
	tg.line(t)
	tg.blockedIn(t, nrRead)
	s := mustSeizeWith(t, tg.pid, hooks{noSuspendSeccomp: true, selfStopAnyway: true})
	if s.stopSig == 0 {
		t.Fatal("no self-stop signal chosen")
	}
	if _, err := s.Syscall(unix.SYS_GETPID); !errors.Is(err, ErrUnexpectedStop) {
		t.Fatalf("getpid with tkill refused: %v, want ErrUnexpectedStop", err)
	}
	if s.Stats().SelfStops != 0 {
		t.Errorf("%d self-stops counted, want none", s.Stats().SelfStops)
	}
	// The session goes on with syscall stops.
	if got, err := s.Syscall(unix.SYS_GETPID); err != nil || int(got) != tg.pid || s.stopSig != 0 {
		t.Fatalf("getpid after the escape: %d, %v (stop signal %v)", got, err, s.stopSig)
	}
	mustDetach(t, s)
	tg.blockedIn(t, nrRead)
	if _, err := io.WriteString(tg.stdin, "x\n"); err != nil {
		t.Fatal(err)
	}
	if got := tg.line(t); got != "ok" {
		t.Fatalf("target answered %q after the session, want ok", got)
	}
}

// TestSeizeThen checks the work SeizeThen runs between the attach and the
// stop: the thread is seized but still sleeps in its own call, the
// session refuses to inject yet, and an error ends the session with the
// target untouched; without an error the session goes on.
func TestSeizeThen(t *testing.T) {
	tg := start(t, buildC(t, "sleeper", sleeperSrc), "100000")
	tg.line(t)
	tg.blockedIn(t, nrClockNanoslp, nrNanosleep)
	refused := errors.New("refused by before")
	_, err := SeizeThen(tg.pid, func(s *Session) error {
		if st := state(tg.pid); st != 'S' {
			t.Errorf("before runs with the target in state %c, want S (not stopped)", st)
		}
		if tr := tracerOf(tg.pid); tr != os.Getpid() {
			t.Errorf("before runs with the target traced by %d, want this process", tr)
		}
		if _, err := s.Syscall(unix.SYS_GETPID); !errors.Is(err, ErrUnexpectedStop) {
			t.Errorf("Syscall before the stop: %v, want ErrUnexpectedStop", err)
		}
		return refused
	})
	if !errors.Is(err, refused) {
		t.Fatalf("SeizeThen: %v, want before's error", err)
	}
	if n := activeSessions.Load(); n != 0 {
		t.Fatalf("%d sessions still hold a thread", n)
	}
	testenv.Eventually(t, "the target to be let go", func() bool { return tracerOf(tg.pid) == 0 })
	// Its sleep goes on, restarted by the kernel as after any stop.
	tg.blockedIn(t, unix.SYS_RESTART_SYSCALL)

	s, err := SeizeThen(tg.pid, func(*Session) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.Syscall(unix.SYS_GETPID); err != nil || int(got) != tg.pid {
		t.Fatalf("getpid: %d, %v", got, err)
	}
	mustDetach(t, s)
}

// TestSelfStopPIDNamespace: a target in a PID namespace of its own (a
// container's) knows itself by other ids than the tracer does. The stub
// asks the kernel for its thread's id instead of holding the tracer's,
// which would name no thread there, or another process.
func TestSelfStopPIDNamespace(t *testing.T) {
	bin := buildC(t, "signals", signalsSrc)
	un, err := exec.LookPath("unshare")
	if err != nil {
		testenv.Missing(t, "unshare", "install util-linux")
	}
	tg := start(t, un, "--pid", "--fork", "--kill-child", bin, "none", "none")
	if l := tg.line(t); l != "ready" {
		t.Fatalf("target: %q", l)
	}
	var pid int
	testenv.Eventually(t, "unshare's child", func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", tg.pid, tg.pid))
		_, serr := fmt.Sscan(string(b), &pid)
		return err == nil && serr == nil
	})
	testenv.Eventually(t, "the target to block in read", func() bool { return syscallNr(pid, pid) == nrRead && state(pid) == 'S' })
	s := mustSeizeWith(t, pid, hooks{})
	if got, err := s.Syscall(unix.SYS_GETPID); err != nil || got != 1 {
		t.Fatalf("getpid in the namespace: %d, %v; want 1", got, err)
	}
	if s.stopSig == 0 || s.Stats().SelfStops != 1 {
		t.Errorf("stop signal %v, %d self-stops; want the call ended in its self-stop", s.stopSig, s.Stats().SelfStops)
	}
	mustDetach(t, s)
	if _, err := io.WriteString(tg.stdin, "x\n"); err != nil {
		t.Fatal(err)
	}
	if got := tg.line(t); got != "caught 0 pending 0 0" {
		t.Errorf("after the session the target reports %q, want no signal caught or pending", got)
	}
}

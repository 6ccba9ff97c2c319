package inject

import (
	"fmt"
	"io"
	"testing"

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

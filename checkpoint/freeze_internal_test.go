package checkpoint

import (
	"bufio"
	_ "embed"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/sysvsem"
	"golang.org/x/sys/unix"
)

//go:embed testdata/semwait.c
var semwaitC string

// TestSleepersRan: a thread asleep in semop is told apart from its busy
// sibling, and once woken (the semaphore posted) ran() names it: the
// check that makes Capture try again.
func TestSleepersRan(t *testing.T) {
	bin := testenv.BuildC(t, "semwait", semwaitC)
	set, err := sysvsem.Get(sysvsem.Private, 2, unix.IPC_CREAT|0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sysvsem.Remove(set) })
	cmd := exec.Command(bin, strconv.Itoa(set), "semop", "0", "busy")
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stdin.Close(); cmd.Process.Kill(); cmd.Wait() })
	pid := cmd.Process.Pid
	var asleep []sleeper
	var others []int
	end := time.Now().Add(2 * time.Minute)
	for len(asleep) == 0 {
		if time.Now().After(end) {
			t.Fatalf("semwait %d: no thread asleep in semop after 2 minutes", pid)
		}
		time.Sleep(time.Millisecond)
		asleep, others = sleepersOf(pid)
	}
	if len(asleep) != 1 || asleep[0].tid != pid || asleep[0].nr != unix.SYS_SEMOP || len(others) != 1 {
		t.Fatalf("sleepersOf(%d) = %+v, others %v; want its main thread asleep in semop and one other", pid, asleep, others)
	}
	f := &signalFreezer{sleepers: asleep}
	if err := f.ran(); err != nil {
		t.Fatalf("ran() before any post: %v", err)
	}
	if err := sysvsem.Op(set, []sysvsem.Sembuf{{Num: 0, Op: 1, Flg: sysvsem.NoWait}}); err != nil {
		t.Fatal(err)
	}
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Scan()
		line <- sc.Text()
	}()
	select {
	case l := <-line:
		if l[:6] != "ret 0 " {
			t.Fatalf("semwait: %q, want ret 0", l)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("semwait %d did not take the posted semaphore within 2 minutes", pid)
	}
	if err := f.ran(); err == nil {
		t.Fatalf("ran() after the sleeper woke and returned: nil, want an error naming thread %d", pid)
	}
}

package procfs

import (
	"errors"
	"os"
	"testing"
)

// TestSchedLive: this test's own thread reads as running (it is on a CPU
// while it reads its syscall file), and its switch count never goes back.
func TestSchedLive(t *testing.T) {
	p := NewDefaultFS()
	pid := os.Getpid()
	tid := pid // the main thread: Go may be running elsewhere, any state is valid
	nr, err := p.TaskSyscall(pid, tid)
	if err != nil {
		t.Fatal(err)
	}
	if nr < Running {
		t.Errorf("TaskSyscall(%d, %d) = %d, want Running, -1 or a syscall number", pid, tid, nr)
	}
	a, err := p.TaskSwitches(pid, tid)
	if err != nil {
		t.Fatal(err)
	}
	b, err := p.TaskSwitches(pid, tid)
	if err != nil {
		t.Fatal(err)
	}
	if b < a {
		t.Errorf("switch count went from %d to %d", a, b)
	}
}

func TestParseSwitches(t *testing.T) {
	good := []byte("Name:\tx\nvoluntary_ctxt_switches:\t7\nnonvoluntary_ctxt_switches:\t5\n")
	if n, err := ParseSwitches(good, "status"); err != nil || n != 12 {
		t.Errorf("ParseSwitches = %d, %v, want 12", n, err)
	}
	for _, bad := range []string{"", "voluntary_ctxt_switches:\t7\n", "voluntary_ctxt_switches:\tx\nnonvoluntary_ctxt_switches:\t5\n"} {
		if _, err := ParseSwitches([]byte(bad), "status"); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseSwitches(%q) = %v, want ErrMalformed", bad, err)
		}
	}
}

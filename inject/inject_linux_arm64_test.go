package inject

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/semundo/semundo/internal/testenv"
	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

// The arm64 counterparts of the amd64 tests, against the hand-assembled
// programs of elf_linux_arm64_test.go and, for many threads, this test
// binary as a Go target.

const (
	nrRead         = unix.SYS_READ
	nrNanosleep    = unix.SYS_NANOSLEEP
	nrClockNanoslp = unix.SYS_CLOCK_NANOSLEEP
	nrSemop        = unix.SYS_SEMOP
	nrSemtimedop   = unix.SYS_SEMTIMEDOP
	nrPpoll        = unix.SYS_PPOLL
)

// ready starts the program and waits for its "ready" line.
func ready(t *testing.T, path string) *target {
	t.Helper()
	tg := start(t, path)
	if l := tg.line(t); l != strings.TrimSpace(armReady) {
		t.Fatalf("target printed %q, want ready", l)
	}
	return tg
}

// sleptOK waits for the sleeper's "ok" and checks that the sleep, begun
// before since, was not cut short.
func sleptOK(t *testing.T, tg *target, since time.Time, ms int64) {
	t.Helper()
	if l := tg.line(t); l != "ok" {
		t.Fatalf("sleeper printed %q, want ok: the interrupted sleep did not restart", l)
	}
	if d := time.Since(since); d < time.Duration(ms)*time.Millisecond {
		t.Fatalf("sleep of %d ms ended after %v: cut short", ms, d)
	}
}

func TestSleeperNanosleep(t *testing.T) {
	const ms = 1500
	for _, clock := range []bool{false, true} {
		t.Run(fmt.Sprintf("clock=%v", clock), func(t *testing.T) {
			t0 := time.Now()
			tg := ready(t, armSleeper(t, ms, clock))
			tg.blockedIn(t, nrNanosleep, nrClockNanoslp)
			s := mustSeize(t, tg.pid)
			exercise(t, s, tg.pid)
			probe := injectSemUndo(t, s)
			if got := s.resumed.Regs[8]; got != unix.SYS_RESTART_SYSCALL || s.resumed.Pc != s.saved.Pc {
				t.Errorf("resumes with x8 %d at %#x, want restart_syscall at the svc %#x", got, s.resumed.Pc, s.saved.Pc)
			}
			mustDetach(t, s)
			if st := s.Stats(); st.Injections != 6 || st.MemoryCalls != 4 {
				t.Errorf("Stats() = %d injections, %d of them mmap or munmap; want 6 and 4", st.Injections, st.MemoryCalls)
			}
			sleptOK(t, tg, t0, ms)
			probe.check(t, tg)
		})
	}
}

func TestPipeRead(t *testing.T) {
	tg := ready(t, armReader(t))
	tg.blockedIn(t, nrRead)
	s := mustSeize(t, tg.pid)
	exercise(t, s, tg.pid)
	probe := injectSemUndo(t, s)
	if s.resumed != s.saved {
		t.Errorf("a read resumes with changed registers:\n%+v\nsaved\n%+v", s.resumed, s.saved)
	}
	mustDetach(t, s)
	if _, err := tg.stdin.Write([]byte("hello\n")); err != nil {
		t.Fatal(err)
	}
	if got := tg.line(t); got != "hello" {
		t.Fatalf("reader printed %q, want hello", got)
	}
	probe.check(t, tg)
}

func TestSemopBlockedTarget(t *testing.T) {
	a := newSet(t, 3)
	tg := ready(t, armSemwaiter(t, a))
	tg.blockedIn(t, nrSemop, nrSemtimedop)
	testenv.Eventually(t, "the target to wait on the set", func() bool { return semctl(t, a, 0, semGetNcnt) == 1 })

	s := mustSeize(t, tg.pid)
	exercise(t, s, tg.pid)
	probe := injectSemUndo(t, s)
	mustDetach(t, s)
	if !s.Stats().RestartedSemop {
		t.Errorf("Stats().RestartedSemop is false for a target blocked in semop")
	}
	// Still blocked: the first thing it prints must be the successful semop.
	tg.blockedIn(t, nrSemop, nrSemtimedop)
	testenv.Eventually(t, "the target to wait on the set again", func() bool { return semctl(t, a, 0, semGetNcnt) == 1 })
	semop(t, a, sembuf(0, 1, 0))
	if got := tg.line(t); got != "ok" {
		t.Fatalf("target printed %q after its semop, want ok", got)
	}
	probe.check(t, tg)
	if v := semctl(t, a, 0, semGetVal); v != 1 {
		t.Fatalf("after exit the target's own SEM_UNDO left %d on the set it waited on, want 1", v)
	}
}

// spinCount reads the spinner's counter.
func spinCount(t *testing.T, pid int) uint64 {
	t.Helper()
	return binary.LittleEndian.Uint64(readRemote(t, pid, armCounter, 8))
}

// TestSpinUserSpace stops a thread that runs in user space, at whatever
// instruction it is (often between a compare and its branch), many times.
func TestSpinUserSpace(t *testing.T) {
	tg := ready(t, armSpinner(t))
	for i := 0; i < 20; i++ {
		before := spinCount(t, tg.pid)
		s := mustSeize(t, tg.pid)
		exercise(t, s, tg.pid)
		if s.resumed != s.saved {
			t.Fatalf("round %d: a thread in user space resumes with changed registers", i)
		}
		mustDetach(t, s)
		testenv.Eventually(t, "the spinner to count on", func() bool { return spinCount(t, tg.pid) > before })
	}
	select {
	case l := <-tg.lines:
		t.Fatalf("spinner printed %q: its registers or flags changed", l)
	default:
	}
}

// TestStubRestores lets the thread run the stub to its end, as it does when
// the tracer dies, and stops it at the system call it then makes: every
// register is the one the stub was built to restore, and the call is the
// restart_syscall the kernel would have issued for the interrupted sleep.
func TestStubRestores(t *testing.T) {
	t.Run("near", func(t *testing.T) { stubRestores(t, func(ms int64) string { return armSleeper(t, ms, true) }) })
	t.Run("far", func(t *testing.T) { stubRestores(t, func(ms int64) string { return armFullPage(t, ms, stubLen/2) }) })
}

func stubRestores(t *testing.T, program func(ms int64) string) {
	const ms = 300
	t0 := time.Now()
	tg := ready(t, program(ms))
	tg.blockedIn(t, nrClockNanoslp, nrNanosleep)
	s := mustSeize(t, tg.pid)
	defer mustDetach(t, s)
	if got, err := s.Syscall(unix.SYS_GETPID); err != nil || int(got) != tg.pid {
		t.Fatalf("getpid: %d, %v", got, err)
	}
	want := s.resumed
	got := runStub(t, s)
	nr, err := getSyscallNo(s.tid)
	if err != nil {
		t.Fatal(err)
	}
	if nr != unix.SYS_RESTART_SYSCALL || got.Pc != want.Pc+syscallLen {
		t.Fatalf("entered syscall %d at %#x, want restart_syscall at %#x", nr, got.Pc-syscallLen, want.Pc)
	}
	// x7 reads as the stop's direction (0: entry) during a syscall stop.
	cmp := got
	cmp.Pc, cmp.Regs[7] = want.Pc, want.Regs[7]
	if cmp != want {
		t.Fatalf("registers after the stub:\ngot  %+v\nwant %+v", cmp, want)
	}
	s.state = stateDirty // at the entry stop of the thread's own call: Detach puts it right
	mustDetach(t, s)
	sleptOK(t, tg, t0, ms)
}

// TestEncodeStub decodes the stub: every load reads its register's slot,
// the slots hold the registers, and the branch lands on the pc.
func TestEncodeStub(t *testing.T) {
	var r unix.PtraceRegs
	for i := range r.Regs {
		r.Regs[i] = 0x1000 + uint64(i)
	}
	r.Sp, r.Pc, r.Pstate = 0x7ffff000, 0x400123c, 0x60001000
	for _, at := range []uintptr{0x400ff8 - stubLen, 0x4010000 - stubLen&^7, 0x3f00000} {
		b := encodeStub(at, &r, 0)
		if len(b) != stubLen || binary.LittleEndian.Uint32(b) != insnSVC {
			t.Fatalf("%d bytes, want %d starting with svc", len(b), stubLen)
		}
		if (at+stubXSlot)%8 != 0 {
			t.Fatal("slots not 8-byte aligned")
		}
		word := func(off int) uint64 {
			if off < 0 || off+8 > len(b) {
				t.Fatalf("a load reads offset %d, outside the %d-byte stub", off, len(b))
			}
			return binary.LittleEndian.Uint64(b[off:])
		}
		slot := func(i int) int { // the slot ldr number i (of 33) reads
			pos := 4 + 8*min(i, 2)
			if i >= 2 {
				pos = 4 + 16 + 4*(i-2)
			}
			w := binary.LittleEndian.Uint32(b[pos:])
			if w&0xff000000 != 0x58000000 {
				t.Fatalf("instruction %#x at %d is not ldr literal", w, pos)
			}
			return pos + 4*int(int32(w<<8)>>13)
		}
		if got := word(slot(0)); got != r.Pstate&nzcvMask {
			t.Errorf("flags slot %#x", got)
		}
		if got := word(slot(1)); got != r.Sp {
			t.Errorf("sp slot %#x", got)
		}
		for i := 0; i < 31; i++ {
			ins := binary.LittleEndian.Uint32(b[4+16+4*i:])
			if int(ins&31) != i {
				t.Fatalf("load %d writes x%d", i, ins&31)
			}
			if got := word(slot(i + 2)); got != r.Regs[i] {
				t.Errorf("x%d slot %#x", i, got)
			}
		}
		w := binary.LittleEndian.Uint32(b[stubBranch:])
		if dest := int64(at) + stubBranch + 4*int64(int32(w<<6)>>6); w>>26 != 5 || dest != int64(r.Pc) {
			t.Errorf("at %#x: branch %#x lands on %#x, want %#x", at, w, dest, r.Pc)
		}
	}
	var s Session
	if s.reachable(0x400000, &unix.PtraceRegs{Pc: 0x400000 + 200<<20}) || !s.reachable(0x400000, &unix.PtraceRegs{Pc: 0x400000 + 100<<20}) {
		t.Error("reachable: 200 MiB must be out of the branch's reach, 100 MiB within")
	}
}

// TestTracerKilledTargetSurvives kills the tracer (a helper process using
// this package) while it holds the target, at each stage of an injection.
// The kernel detaches and the target's read goes on as if nothing
// happened.
func TestTracerKilledTargetSurvives(t *testing.T) {
	bin := armReader(t)
	for _, mode := range []string{"inject-hold", "die-in-stub", "die-at-exit", "die-after-restore"} {
		t.Run(mode, func(t *testing.T) {
			tg := ready(t, bin)
			tg.blockedIn(t, nrRead)
			killTracer(t, mode, tg.pid)
			tg.blockedIn(t, nrRead)
			if _, err := tg.stdin.Write([]byte("alive\n")); err != nil {
				t.Fatal(err)
			}
			if got := tg.line(t); got != "alive" {
				t.Fatalf("target printed %q, want alive", got)
			}
		})
	}
}

func TestGroupStopStaysStopped(t *testing.T) {
	const ms = 300
	t0 := time.Now()
	tg := ready(t, armSleeper(t, ms, false))
	tg.blockedIn(t, nrNanosleep)
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
	mustDetach(t, s)
	testenv.Eventually(t, "the target to be in a job-control stop again", func() bool { return state(tg.pid) == 'T' })
	if err := unix.Kill(tg.pid, unix.SIGCONT); err != nil {
		t.Fatal(err)
	}
	sleptOK(t, tg, t0, ms)
	probe.check(t, tg)
}

// TestMultiThreaded injects, session after session, into the leader of a
// process whose two other threads keep counting in user space: they go on
// counting, and the leader goes on waiting.
func TestMultiThreaded(t *testing.T) {
	tg := ready(t, armThreads(t))
	for i := 0; i < 5; i++ {
		tg.blockedIn(t, nrPpoll)
		s := mustSeize(t, tg.pid)
		if s.Tid() != tg.pid {
			t.Errorf("Tid %d, want the leader %d", s.Tid(), tg.pid)
		}
		exercise(t, s, tg.pid)
		mustDetach(t, s)
		for _, off := range []uintptr{0, 8} {
			if why := countsAt(armCounter+off)(t, tg); why != "" {
				t.Fatalf("thread counting at +%d: %s", off, why)
			}
		}
	}
}

// TestSVELiveRefused: a thread stopped in user code with live SVE state
// (its predicates and the Z registers' upper bits) is refused, since the
// injected system call would discard that state; the thread runs on.
func TestSVELiveRefused(t *testing.T) {
	if !cpu.ARM64.HasSVE {
		testenv.Missing(t, "SVE", "the CPU has no SVE: run under qemu -cpu max (kmatrix -arch arm64)")
	}
	tg := ready(t, armSVESpinner(t))
	testenv.Eventually(t, "the spinner to count (past its ptrue)", func() bool { return spinCount(t, tg.pid) > 0 })
	_, err := Seize(tg.pid)
	if !errors.Is(err, ErrTargetABI) || !strings.Contains(err.Error(), "SVE") {
		t.Fatalf("Seize of a thread with live SVE state: %v, want ErrTargetABI naming SVE", err)
	}
	if tr := tracerOf(tg.pid); tr != 0 {
		t.Fatalf("after the refusal pid %d is traced by %d", tg.pid, tr)
	}
	n := spinCount(t, tg.pid)
	testenv.Eventually(t, "the spinner to count on", func() bool { return spinCount(t, tg.pid) > n })
}

// TestNoStubSiteInReach: a target whose own text has room neither for the
// stub nor for its trampoline (16 bytes of padding) gets none: its only
// other executable mapping, the vDSO, lies far beyond the reach of a
// branch back to the thread's pc (0x400000 area). The session refuses
// with ErrNoStubSite before changing anything, and the target goes on.
func TestNoStubSiteInReach(t *testing.T) {
	const ms = 300
	t0 := time.Now()
	tg := ready(t, armFullPage(t, ms, 16))
	tg.blockedIn(t, nrNanosleep)
	s := mustSeize(t, tg.pid)
	if _, err := s.Syscall(unix.SYS_GETPID); !errors.Is(err, ErrNoStubSite) || !strings.Contains(err.Error(), "128 MiB") {
		t.Fatalf("getpid in a target without a stub site in reach: %v, want ErrNoStubSite naming the branch's reach", err)
	}
	if s.stub != 0 || s.arch.tramp != 0 {
		t.Fatalf("a stub (%#x) or trampoline (%#x) was placed", s.stub, s.arch.tramp)
	}
	mustDetach(t, s)
	sleptOK(t, tg, t0, ms)
}

// TestStubInHeaderGap: a target whose text page is full, as in
// TestNoStubSiteInReach, but whose executable segment maps its headers
// and zeros before its first section (Go's static programs) gets the
// stub in those zeros, and their bytes back at Detach.
func TestStubInHeaderGap(t *testing.T) {
	const ms = 300
	t0 := time.Now()
	tg := ready(t, armGapProgram(t, ms))
	tg.blockedIn(t, nrNanosleep)
	s := mustSeize(t, tg.pid)
	exercise(t, s, tg.pid)
	probe := injectSemUndo(t, s)
	if s.stub < armCode+armHeaders+2*64 || s.stub+stubLen > armCode+armGapCode || s.arch.tramp != 0 {
		t.Fatalf("stub at %#x in %q, trampoline at %#x: want the stub between the section headers' end %#x and the code %#x, no trampoline",
			s.stub, s.stubWhere, s.arch.tramp, armCode+armHeaders+2*64, armCode+armGapCode)
	}
	stub, orig := s.stub, s.stubOrig
	mustDetach(t, s)
	if back := readRemote(t, tg.pid, stub, len(orig)); !bytes.Equal(back, make([]byte, len(orig))) || !bytes.Equal(back, orig) {
		t.Fatal("the zeros under the stub were not put back")
	}
	sleptOK(t, tg, t0, ms)
	probe.check(t, tg)
}

// TestFarStub: a target whose text has room for the trampoline but not the
// stub gets the stub in the vDSO, which returns through the trampoline;
// both places get their bytes back at Detach.
func TestFarStub(t *testing.T) {
	const ms = 300
	t0 := time.Now()
	tg := ready(t, armFullPage(t, ms, stubLen/2))
	tg.blockedIn(t, nrNanosleep)
	s := mustSeize(t, tg.pid)
	exercise(t, s, tg.pid)
	probe := injectSemUndo(t, s)
	if s.stubWhere != "[vdso]" || s.arch.tramp < armCode || s.arch.tramp >= armCode+pageSize {
		t.Fatalf("stub in %q, trampoline at %#x: want the stub in the [vdso], the trampoline in the program's page", s.stubWhere, s.arch.tramp)
	}
	stub, orig, tramp, torig := s.stub, s.stubOrig, s.arch.tramp, s.arch.trampOrig
	mustDetach(t, s)
	if back := readRemote(t, tg.pid, stub, len(orig)); len(orig) != farLen || !bytes.Equal(back, orig) {
		t.Fatal("the vDSO's bytes were not put back")
	}
	if back := readRemote(t, tg.pid, tramp, trampLen); !bytes.Equal(back, torig) {
		t.Fatal("the program's bytes under the trampoline were not put back")
	}
	sleptOK(t, tg, t0, ms)
	probe.check(t, tg)
}

// TestSignalRedelivery: a signal sent while the session holds the thread
// is caught, queued again at Detach and delivered once: its handler runs
// once and ends the wait the thread was in with EINTR, as it would have
// without the session.
func TestSignalRedelivery(t *testing.T) {
	tg := ready(t, armWaker(t))
	tg.blockedIn(t, nrPpoll)
	s := mustSeize(t, tg.pid)
	if _, err := s.Syscall(unix.SYS_GETPID); err != nil {
		t.Fatal(err)
	}
	if err := unix.Kill(tg.pid, unix.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	exercise(t, s, tg.pid)
	mustDetach(t, s)
	if n := s.Stats().Signals; n != 1 {
		t.Errorf("Stats().Signals = %d, want 1", n)
	}
	if l := tg.line(t); l != "ok" {
		t.Fatalf("waker printed %q, want ok (its wait ended by the signal)", l)
	}
	tg.blockedIn(t, nrPpoll)
	if n := spinCount(t, tg.pid); n != 1 {
		t.Fatalf("the handler ran %d times, want once", n)
	}
	if why := noLine(tg); why != "" {
		t.Fatalf("waker %s after its one wake", why)
	}
}

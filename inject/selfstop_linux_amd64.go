package inject

import (
	"fmt"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The self-stop. A call run between syscall stops costs two stops (enter
// and exit) and Detach a third (an interrupt, to bring the thread into
// get_signal where its own registers can go back). Instead the stub can
// end the call by sending its thread a signal (gettid, then tkill): while traced,
// every signal stops the thread in its delivery stop, inside get_signal,
// so one stop ends the call and is also where Detach parks the thread.
//
// The signal must do nothing if the tracer dies with the thread in that
// stop (the kernel then drops the signal: measured on 6.18, where even a
// SIGUSR1 did no harm; a kernel that delivered it instead would find it
// ignored) or before the thread sent it: one whose default action is to
// ignore it (SIGWINCH, SIGURG), that the process does not catch and the
// thread does not block.
// Only the thread itself changes its mask, and it runs nothing but the stub
// meanwhile; another thread installing a handler for that very signal
// between the check and a tracer's death is the one case left, and it
// costs the handler a spurious call. A traced thread stops for ignored
// signals too (sig_ignored is false under ptrace), so SIG_IGN does not
// matter. The tracer takes the signal away at the stop; Detach resumes
// with none.

// stopSignal picks the signal the stub stops itself with, or returns 0
// for syscall stops: when no candidate is free, when a seccomp filter
// stays active (it could refuse tkill, and the thread would run on
// without stopping), or when a test asks for syscall stops.
func (s *Session) stopSignal() unix.Signal {
	if s.hooks.syscallStops || (s.stats.SeccompActive && !s.hooks.selfStopAnyway) {
		return 0
	}
	var blocked uint64
	if err := ptracePtr(unix.PTRACE_GETSIGMASK, s.tid, unsafe.Sizeof(blocked), unsafe.Pointer(&blocked)); err != nil {
		return 0
	}
	for _, sig := range []unix.Signal{unix.SIGWINCH, unix.SIGURG} {
		if bit := uint64(1) << (sig - 1); (blocked|s.sigCgt)&bit == 0 {
			return sig
		}
	}
	return 0
}

// selfStopWait is how long runToSelfStop waits for the self-stop before it
// sends the thread the signal itself, to see where it is: far longer than a
// stub runs, so only a thread kept off every CPU or one that ran on without
// stopping (its tkill refused) is looked at.
const selfStopWait = time.Second

// runToSelfStop resumes the thread, whose registers point at the stub, and
// waits for the stub's own signal stop; it returns the call's result, kept
// in r12. Other signals met on the way are kept for Detach, as run does.
func (s *Session) runToSelfStop(op string) (uint64, error) {
	s.atSelfStop = false
	if err := resume(s.tid); err != nil {
		return 0, s.lost(op, err)
	}
	// The wait blocks (a timed wait would poll, and its sleeps cost the
	// tail of the stop times), so a thread that never stops is made to:
	// the same signal, sent from here, stops a traced thread wherever it
	// is. Sent late, it does nothing: ignored, or taken at a later stop.
	pid, tid, sig := s.pid, s.tid, s.stopSig // the timer's goroutine reads no session field
	watchdog := time.AfterFunc(selfStopWait, func() { _ = unix.Tgkill(pid, tid, sig) })
	defer watchdog.Stop()
	for i := 0; i < maxStops; i++ {
		ws, err := s.wait(op)
		if err != nil {
			return 0, err
		}
		var r unix.PtraceRegs
		if err := getRegs(s.tid, &r); err != nil {
			return 0, s.lost(op, err)
		}
		kind, sig := classify(ws)
		own := r.Rip == uint64(s.stopAt)
		// Every signal met is kept for Detach but the stub's own at its
		// stop (a signal dequeued before it there leaves it pending,
		// and, ignored, it does nothing once we are gone).
		if kind == stopSignal && !(own && sig == s.stopSig) {
			if err := s.catch(sig); err != nil {
				return 0, err
			}
		}
		switch {
		case own:
			s.atSelfStop = true
			s.stats.SelfStops++
			return r.R12, nil
		case r.Rip < uint64(s.stub) || r.Rip >= uint64(s.stub)+stubRipSlot:
			// Out of the stub without its stop: the call ran, its
			// result is lost. The thread is in its own code again.
			return 0, s.escaped(op, &r)
		}
		// In the stub, short of its stop: a signal before the call or
		// during it, or the watchdog's signal to a thread that waited
		// for a CPU. Go on.
		watchdog.Reset(selfStopWait)
		if err := resume(s.tid); err != nil {
			return 0, s.lost(op, err)
		}
	}
	return 0, s.fail(op, ErrUnexpectedStop, nil, fmt.Sprintf("the injected syscall did not complete within %d stops", maxStops))
}

// escaped takes a thread that left the stub without its self-stop (regs,
// at a stop in its own code) as a fresh first stop: its registers are its
// own again, the stub is written anew to restore these, and the session
// goes on from there, with syscall stops. The call that ran is reported as
// failed, result unknown.
func (s *Session) escaped(op string, r *unix.PtraceRegs) error {
	s.saved, s.parked, s.restartEarly = *r, *r, false
	s.stopSig = 0
	s.state = stateDirty
	if err := s.restartAtOnce(); err != nil {
		return err
	}
	s.resumed = s.resumeRegs()
	if err := s.forceWrite(s.stub, s.encodeStub(s.stub, &s.resumed)); err != nil {
		return err
	}
	s.state = stateParked
	return s.fail(op, ErrUnexpectedStop, nil, "the thread left the stub without stopping after the call (was its signal to itself refused?): the call ran, its result is unknown; check the target's undo list")
}

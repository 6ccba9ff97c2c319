package inject

import (
	"bytes"
	"encoding/binary"
	"strconv"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// TestStubRestores lets a thread run the stub to its end, as it does when
// the tracer dies, and stops it at the next system call it makes: every
// register is the one the stub was built to restore, for both ways of
// restoring the flags. The sleeper was in clock_nanosleep, so the stub
// returns it to the restart_syscall the kernel would have made it issue,
// and its sleep then ends on time.
func TestStubRestores(t *testing.T) {
	bin := buildC(t, "sleeper", sleeperSrc)
	for _, popf := range []bool{false, true} {
		t.Run("popf="+strconv.FormatBool(popf), func(t *testing.T) {
			const ms = 300
			tg := start(t, bin, strconv.Itoa(ms))
			tg.line(t)
			tg.blockedIn(t, nrClockNanoslp, nrNanosleep)
			s := mustSeizeWith(t, tg.pid, hooks{popf: popf})
			defer mustDetach(t, s)
			var fp0, fp1 [512]byte
			if err := ptracePtr(unix.PTRACE_GETFPREGS, s.tid, 0, unsafe.Pointer(&fp0[0])); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Syscall(unix.SYS_GETPID); err != nil || int(got) != tg.pid {
				t.Fatalf("getpid: %d, %v", got, err)
			}
			want := s.resumed
			if want.Rax != unix.SYS_RESTART_SYSCALL || want.Rip != s.saved.Rip-2 {
				t.Fatalf("resumed registers rax %d rip %#x, want restart_syscall at %#x", want.Rax, want.Rip, s.saved.Rip-2)
			}
			// Run on from the getpid's exit stop: the stub restores the
			// registers and jumps to the thread's syscall instruction.
			if err := toSyscall(s.tid); err != nil {
				t.Fatal(err)
			}
			ws, err := s.wait("test")
			if err != nil {
				t.Fatal(err)
			}
			if kind, _ := classify(ws); kind != stopSyscall {
				t.Fatalf("stopped with %#x, want a syscall-entry stop", uint32(ws))
			}
			var got unix.PtraceRegs
			if err := getRegs(s.tid, &got); err != nil {
				t.Fatal(err)
			}
			if err := ptracePtr(unix.PTRACE_GETFPREGS, s.tid, 0, unsafe.Pointer(&fp1[0])); err != nil {
				t.Fatal(err)
			}
			if got.Orig_rax != unix.SYS_RESTART_SYSCALL || got.Rip != want.Rip+2 {
				t.Fatalf("entered syscall %d at %#x, want restart_syscall at %#x", int64(got.Orig_rax), got.Rip-2, want.Rip)
			}
			// The syscall instruction itself sets rcx and r11; rax holds
			// -ENOSYS at entry.
			cmp := got
			cmp.Rax, cmp.Orig_rax, cmp.Rcx, cmp.R11, cmp.Rip = want.Rax, want.Orig_rax, want.Rcx, want.R11, want.Rip
			cmp.Eflags &^= flagRF
			if cmp != want {
				t.Fatalf("registers after the stub:\ngot  %+v\nwant %+v", cmp, want)
			}
			if !bytes.Equal(fp0[:], fp1[:]) {
				t.Fatal("FP/SSE registers changed")
			}
			s.state = stateDirty // at an entry stop of the thread's own call: Detach puts it right
			mustDetach(t, s)
			checkSlept(t, tg.line(t), ms)
		})
	}
}

// TestEncodeStub checks the stub's fixed layout: the two slots its loads
// read (aligned, for a thread with EFLAGS.AC set), the jump's target, and
// flags without TF and RF.
func TestEncodeStub(t *testing.T) {
	r := unix.PtraceRegs{Rip: 0x1122334455667788, Rsp: 0x7ffd0000, Eflags: 0x246 | flagTF | flagRF | flagOF | flagDF}
	const at = 0x400ff8
	for _, popf := range []bool{false, true} {
		b := encodeStub(at, &r, popf)
		if len(b) != stubLen || b[0] != 0x0f || b[1] != 0x05 {
			t.Fatalf("popf %v: %d bytes starting % x, want %d starting with syscall", popf, len(b), b[:2], stubLen)
		}
		if (at+stubRipSlot)%8 != 0 || (at+stubFlagsSlot)%8 != 0 {
			t.Fatal("slots not 8-byte aligned")
		}
		if got := binary.LittleEndian.Uint64(b[stubRipSlot:]); got != r.Rip {
			t.Errorf("popf %v: rip slot %#x, want %#x", popf, got, r.Rip)
		}
		if got, want := binary.LittleEndian.Uint64(b[stubFlagsSlot:]), r.Eflags&^(flagTF|flagRF); got != want {
			t.Errorf("popf %v: flags slot %#x, want %#x", popf, got, want)
		}
		j := bytes.Index(b, []byte{0xff, 0x25})
		if j < 0 {
			t.Fatalf("popf %v: no jmp [rip+disp32]", popf)
		}
		if disp := int(int32(binary.LittleEndian.Uint32(b[j+2:]))); j+6+disp != stubRipSlot {
			t.Errorf("popf %v: jmp reads offset %d, want the rip slot %d", popf, j+6+disp, stubRipSlot)
		}
		// popfq moves rsp; the stackless stub never names it.
		if hasPopf := bytes.Contains(b[:j], []byte{0x48, 0xbc}); hasPopf != popf {
			t.Errorf("popf %v: stub sets rsp: %v", popf, hasPopf)
		}
	}
	if stackless(0x246|1<<18) || !stackless(0x246|flagOF|flagDF|flagTF) {
		t.Error("stackless: AC must need popfq; OF, DF and TF must not")
	}
}

package inject

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/cpu"
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
			got := runStub(t, s)
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
		b, stopAt := encodeStub(at, &r, popf, 0)
		if stopAt != 0 {
			t.Errorf("popf %v: a stub without self-stop has its stop at %d", popf, stopAt)
		}
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
	// The self-stopping stub: the call, its result into r12, gettid, tkill
	// of that thread with the signal, then the same restore.
	stop := unix.SIGWINCH
	b, stopAt := encodeStub(at, &r, false, stop)
	want := []byte{0x0f, 0x05, 0x49, 0x89, 0xc4, 0xb8, unix.SYS_GETTID, 0, 0, 0, 0x0f, 0x05, 0x89, 0xc7,
		0xbe, byte(unix.SIGWINCH), 0, 0, 0, 0xb8, unix.SYS_TKILL, 0, 0, 0, 0x0f, 0x05}
	if len(b) != stubLen || stopAt != len(want) || !bytes.Equal(b[:stopAt], want) {
		t.Fatalf("self-stopping stub: %d bytes, stop at %d, starting % x; want %d, %d, % x", len(b), stopAt, b[:min(len(b), len(want))], stubLen, len(want), want)
	}
	if got := binary.LittleEndian.Uint64(b[stubRipSlot:]); got != r.Rip {
		t.Errorf("self-stopping stub: rip slot %#x, want %#x", got, r.Rip)
	}
	// Every register wide and flags by popfq: the longest stub, which
	// with the self-stop does not fit, so the session runs it without.
	wide := unix.PtraceRegs{Rip: 1 << 40, Rsp: 1 << 40, Eflags: 0x246}
	for _, p := range []*uint64{&wide.Rax, &wide.Rbx, &wide.Rcx, &wide.Rdx, &wide.Rsi, &wide.Rdi, &wide.Rbp,
		&wide.R8, &wide.R9, &wide.R10, &wide.R11, &wide.R12, &wide.R13, &wide.R14, &wide.R15} {
		*p = 1 << 40
	}
	if b, _ := encodeStub(at, &wide, true, stop); b != nil {
		t.Errorf("the longest self-stopping stub fits (%d bytes): the session never needs its fallback", len(b))
	}
	if b, _ := encodeStub(at, &wide, true, 0); len(b) != stubLen {
		t.Errorf("the longest stub without self-stop: %d bytes, want %d", len(b), stubLen)
	}
	// Values that fit 32 bits take the short, zero-extending form.
	small := unix.PtraceRegs{Rip: 1 << 40, Rsp: 1 << 40, Eflags: 0x246, Rbx: 7, R9: 9}
	b, _ = encodeStub(at, &small, false, 0)
	if !bytes.Contains(b, []byte{0xbb, 7, 0, 0, 0}) || !bytes.Contains(b, []byte{0x41, 0xb9, 9, 0, 0, 0}) {
		t.Errorf("rbx=7 and r9=9 not encoded as mov r32, imm32: % x", b)
	}
	// Without LAHF/SAHF in 64-bit mode (the first x86-64 CPUs) every
	// thread's flags need popfq.
	if stackless(0x246|1<<18) || stackless(0x246|flagOF|flagDF|flagTF) != cpu.X86.HasLAHF {
		t.Errorf("stackless: AC must need popfq; OF, DF and TF must not unless the CPU lacks LAHF (has it: %v)", cpu.X86.HasLAHF)
	}
}

// fullPage64 is a 64-bit program that prints "ready" and sleeps in
// nanosleep forever, whose one segment ends less than stubLen bytes before
// its page's end: no room for the stub in its own text.
var fullPage64 = elfProgram{
	class: elf.ELFCLASS64,
	code: func(data uint32) []byte {
		req, ready := data, data+16
		sleep := cat(movEAX(x64Nanosleep), movEDI(req), []byte{0x31, 0xf6}, syscallIns) // xor esi, esi
		return cat(write64(ready, uint32(len(int80Ready))), sleep,
			[]byte{0xeb, byte(-(len(sleep) + 2))}) // jmp back to the sleep
	},
}

func init() {
	data := cat(binary.LittleEndian.AppendUint64(nil, 100000), make([]byte, 8), []byte(int80Ready))
	p := fullPage64
	p.data = data
	used := int(p.headerSize()) + len(p.code(0)) + len(data)
	fullPage64.data = append(data, make([]byte, pageSize-stubLen/2-used)...)
}

// TestStubInVDSO: found through /proc maps, the stub of a target whose own
// text has no room for it goes to the vDSO, past the vDSO's section
// headers (which debuggers read from memory), at the same place as the
// auxiliary vector's way finds, and the vDSO's bytes come back at Detach.
func TestStubInVDSO(t *testing.T) {
	tg := start(t, fullPage64.write(t, "fullpage"))
	if l := tg.line(t); l != strings.TrimSpace(int80Ready) {
		t.Fatalf("target printed %q", l)
	}
	tg.blockedIn(t, nrNanosleep)
	s := mustSeizeWith(t, tg.pid, hooks{noVDSO: true})
	defer mustDetach(t, s)
	exercise(t, s, tg.pid)
	if s.stubWhere != "[vdso]" {
		t.Fatalf("stub placed in %q, want the [vdso]: the program's page has %d bytes of padding", s.stubWhere, stubLen/2)
	}
	m, ok := mappingAt(t, tg.pid, s.stub)
	if !ok || m.name != "[vdso]" {
		t.Fatalf("stub at %#x is in %+v", s.stub, m)
	}
	eh := readRemote(t, tg.pid, m.start, 64)
	shEnd := binary.LittleEndian.Uint64(eh[40:]) + uint64(binary.LittleEndian.Uint16(eh[58:]))*uint64(binary.LittleEndian.Uint16(eh[60:]))
	if uint64(s.stub-m.start) < shEnd || s.stub+stubLen > m.end {
		t.Fatalf("stub at vDSO offset %#x overlaps the section headers (end %#x) or runs past the mapping", s.stub-m.start, shEnd)
	}
	s.hooks.noVDSO = false
	if at, _, ok := s.vdsoSite(stubLen); !ok || at != s.stub {
		t.Fatalf("stub at %#x through /proc maps, %#x (found %v) through the auxiliary vector", s.stub, at, ok)
	}
	stub, orig := s.stub, s.stubOrig
	mustDetach(t, s)
	if back := readRemote(t, tg.pid, stub, stubLen); !bytes.Equal(back, orig) {
		t.Fatal("the vDSO's bytes were not put back")
	}
	// Back asleep: a stopped nanosleep goes on as restart_syscall.
	tg.blockedIn(t, nrNanosleep, unix.SYS_RESTART_SYSCALL)
}

// TestReadOnly: data a call only reads goes after the stub, or in padding
// of its own when there is no room there, where the injected call reads
// it; what does not fit is refused with ErrNoRoom; and Detach puts the
// padding back.
func TestReadOnly(t *testing.T) {
	bin := buildC(t, "sleeper", sleeperSrc)
	for _, apart := range []bool{false, true} {
		t.Run(fmt.Sprint("apart=", apart), func(t *testing.T) {
			tg := start(t, bin, "100000")
			tg.line(t)
			tg.blockedIn(t, nrClockNanoslp, nrNanosleep)
			s := mustSeizeWith(t, tg.pid, hooks{dataApart: apart})
			defer mustDetach(t, s)
			msg := []byte("read-only data\n")
			addr, err := s.ReadOnly(msg)
			if err != nil {
				t.Fatal(err)
			}
			after := addr >= s.stub+stubLen && addr+uintptr(len(msg)) <= s.stubLimit
			if addr%8 != 0 || after == apart || (apart && s.occupied(addr, len(msg))) {
				t.Fatalf("data at %#x (stub %#x-%#x, limit %#x), want 8-byte aligned and apart=%v", addr, s.stub, s.stub+stubLen, s.stubLimit, apart)
			}
			if m, ok := mappingAt(t, tg.pid, addr); !ok || m.perms != "r-xp" {
				t.Fatalf("data at %#x is in %+v, want padding of an r-xp mapping", addr, m)
			}
			// The kernel reads it: the target writes it to its standard output.
			if n, err := s.Syscall(unix.SYS_WRITE, 1, addr, uintptr(len(msg))); err != nil || int(n) != len(msg) {
				t.Fatalf("write: %d, %v", n, err)
			}
			if l := tg.line(t); l+"\n" != string(msg) {
				t.Fatalf("target printed %q, want %q", l, msg)
			}
			if _, err := s.ReadOnly(make([]byte, 2*pageSize)); !errors.Is(err, ErrNoRoom) {
				t.Fatalf("two pages of data: %v, want ErrNoRoom", err)
			}
			stub, stubOrig, data, dataOrig := s.stub, s.stubOrig, s.dataAt, s.dataOrig
			mustDetach(t, s)
			if back := readRemote(t, tg.pid, stub, len(stubOrig)); !bytes.Equal(back, stubOrig) {
				t.Fatal("the stub's padding was not put back")
			}
			if back := readRemote(t, tg.pid, data, len(dataOrig)); !bytes.Equal(back, dataOrig) {
				t.Fatal("the data's padding was not put back")
			}
		})
	}
}

package inject

import (
	"encoding/binary"

	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

// The stub is what makes a session kill-safe. An injected call does not run
// from a bare `syscall` instruction whose return lands back in the target's
// own code with the injection's registers: it runs from a short piece of
// code the session writes into the target,
//
//	syscall                      ; the injected call
//	add, sahf, cld/std           ; the thread's own rflags (see stackless)
//	mov  rax, imm64 ... r15      ; its 15 registers but rsp, which is its own
//	jmp  [rip -> saved rip]      ; back to where it was
//
// holding the thread's registers as immediates (the short, zero-extending
// form for values that fit 32 bits). Most stubs also stop their thread
// right after the call (see selfstop_linux_amd64.go). Once a thread's registers
// point into the stub, the thread needs nobody to get back to its own
// state: if the tracer dies at any instant (kill -9, OOM kill), the kernel
// detaches, the thread finishes the call it was given, restores itself and
// carries on. Nothing in the stub writes memory or uses the stack, so it
// runs the same on a goroutine's small stack, and the FP/SSE/AVX state,
// segment and fs/gs bases are never touched (the injected calls leave them
// alone), so no signal frame and no xstate image are needed, unlike
// rt_sigreturn; rt_sigreturn would also reset the thread's restart block,
// which an interrupted nanosleep needs.
//
// The registers the stub restores are the ones the thread would resume
// with after the stop: the kernel's restart rules for an interrupted system
// call are applied in advance (resumeRegs), because a thread leaving the
// stub is in user space, past the point where the kernel restarts calls.
//
// The stub lives in memory that is already executable and that nothing
// runs: the padding between the end of an ELF file's executable segment
// and the end of its last page (or the same in the vDSO). Ptrace's forced
// write makes a private copy of that one page; Detach puts the original
// bytes back.

// Stub layout, from its start (which is 8-byte aligned: with EFLAGS.AC set,
// the two loads from the stub would fault on an unaligned address).
const (
	stubRipSlot   = 184 // the saved rip, read by the final jmp
	stubFlagsSlot = 192 // the saved rflags, read by popfq
	stubLen       = 200
)

// Flags the stub never restores: TF would trap inside the stub, and RF is
// the kernel's (popfq cannot set it).
const (
	flagTF = 1 << 8
	flagRF = 1 << 16
)

// restart codes of an interrupted system call (include/linux/errno.h).
const (
	errRestartSys         = 512
	errRestartNoIntr      = 513
	errRestartNoHand      = 514
	errRestartRestartBlck = 516
)

// resumeRegs returns the registers a thread stopped with r resumes with when
// it leaves the stop with no signal to handle: the kernel's restart of an
// interrupted call (arch_do_signal_or_restart) applied, and orig_rax -1 so
// that the kernel does not apply it again. restartEINTR also restarts a
// semop or semtimedop that our stop ended with EINTR (see restartSemop).
func resumeRegs(r unix.PtraceRegs, restartEINTR bool) unix.PtraceRegs {
	if int64(r.Orig_rax) >= 0 {
		switch -int64(r.Rax) {
		case errRestartSys, errRestartNoIntr, errRestartNoHand:
			r.Rax, r.Rip = r.Orig_rax, r.Rip-2
		case errRestartRestartBlck:
			r.Rax, r.Rip = unix.SYS_RESTART_SYSCALL, r.Rip-2
		case int64(unix.EINTR):
			if restartEINTR {
				r.Rax, r.Rip = r.Orig_rax, r.Rip-2
			}
		}
	}
	r.Orig_rax = ^uint64(0)
	r.Eflags &^= flagTF | flagRF
	return r
}

// Flags (EFLAGS bits) the stackless restore sets: the arithmetic flags
// (CF PF AF ZF SF through sahf, OF through an add), DF (cld/std), and the
// ones user space cannot change or that the stub drops anyway.
const (
	flagsSahf      = 0xd5 // SF ZF AF PF CF: the bits sahf loads from ah
	flagOF         = 1 << 11
	flagDF         = 1 << 10
	flagsFixed     = 1<<1 | 1<<9 // reserved bit 1, IF
	flagsStackless = flagsSahf | flagOF | flagDF | flagsFixed | flagTF | flagRF
)

// stackless reports whether the stub can restore flags without popfq:
// unless the thread set a rare flag (AC, ID, NT), sahf, an add and cld/std
// rebuild every flag it has. popfq needs rsp pointed at the saved value in
// the stub for two instructions, and a signal handled in that moment
// (possible only after the tracer died) would find rsp in read-only text
// and kill the thread with SIGSEGV; the stackless way never moves rsp,
// which already holds the thread's own value when the stub starts.
func stackless(flags uint64) bool {
	return flags&^flagsStackless == 0 && cpu.X86.HasLAHF
}

// encodeStub assembles the stub for address at, restoring r. With stop (a
// signal), the stub keeps the call's result in r12 and sends its thread
// that signal before restoring: stopAt is the offset where the thread then
// stands, in the signal's delivery stop. It returns nil when that stub
// would not fit in stubLen.
//
//	syscall                      ; the injected call
//	mov  r12, rax                ; its result, for the tracer
//	mov  eax, SYS_gettid; syscall
//	mov  edi, eax; mov esi, sig; mov eax, SYS_tkill
//	syscall                      ; the thread stops here while traced
//	...                          ; the restore, as without stop
//
// The thread asks for its own id rather than the stub holding it: ids are
// those of the thread's PID namespace (a container's), which the tracer
// does not see, and a wrong one would signal another process there.
func encodeStub(at uintptr, r *unix.PtraceRegs, popf bool, stop unix.Signal) (b []byte, stopAt int) {
	flags := r.Eflags &^ (flagTF | flagRF)
	b = make([]byte, 0, stubLen)
	b = append(b, 0x0f, 0x05) // syscall
	if stop != 0 {
		imm32 := func(op byte, v uint32) { b = binary.LittleEndian.AppendUint32(append(b, op), v) }
		b = append(b, 0x49, 0x89, 0xc4) // mov r12, rax
		imm32(0xb8, unix.SYS_GETTID)    // mov eax, imm32
		b = append(b, 0x0f, 0x05)       // syscall
		b = append(b, 0x89, 0xc7)       // mov edi, eax
		imm32(0xbe, uint32(stop))       // mov esi, imm32
		imm32(0xb8, unix.SYS_TKILL)     // mov eax, imm32
		b = append(b, 0x0f, 0x05)       // syscall
		stopAt = len(b)
	}
	// mov reg, imm64, or mov reg32, imm32 (which zero-extends) for a
	// value that fits: the shorter form leaves room for the self-stop.
	mov := func(rex, op byte, v uint64) {
		if v <= 0xffffffff && !(rex == 0x48 && op == 0xbc) { // rsp: always the long form
			if rex&1 != 0 {
				b = append(b, 0x41) // REX.B: r8-r15
			}
			b = binary.LittleEndian.AppendUint32(append(b, op), uint32(v))
			return
		}
		b = append(b, rex, op)
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	if popf {
		mov(0x48, 0xbc, uint64(at)+stubFlagsSlot) // mov rsp, &flags
		b = append(b, 0x9d)                       // popfq
		mov(0x48, 0xbc, r.Rsp)                    // mov rsp, imm64
	} else {
		if flags&flagOF != 0 {
			b = append(b, 0xb0, 0x7f, 0x04, 0x01) // mov al, 0x7f; add al, 1: OF=1
		} else {
			b = append(b, 0x30, 0xc0) // xor al, al: OF=0
		}
		b = append(b, 0xb4, byte(flags&flagsSahf|0x02), 0x9e) // mov ah, imm8; sahf
		if flags&flagDF != 0 {
			b = append(b, 0xfd) // std
		} else {
			b = append(b, 0xfc) // cld
		}
	}
	// mov reg, imm64 leaves the flags alone; rax comes after its use above.
	for _, g := range []struct {
		rex, op byte
		v       uint64
	}{
		{0x48, 0xb8, r.Rax}, {0x48, 0xb9, r.Rcx}, {0x48, 0xba, r.Rdx}, {0x48, 0xbb, r.Rbx},
		{0x48, 0xbd, r.Rbp}, {0x48, 0xbe, r.Rsi}, {0x48, 0xbf, r.Rdi},
		{0x49, 0xb8, r.R8}, {0x49, 0xb9, r.R9}, {0x49, 0xba, r.R10}, {0x49, 0xbb, r.R11},
		{0x49, 0xbc, r.R12}, {0x49, 0xbd, r.R13}, {0x49, 0xbe, r.R14}, {0x49, 0xbf, r.R15},
	} {
		mov(g.rex, g.op, g.v)
	}
	// jmp qword ptr [rip+disp32]: rip is the end of this 6-byte instruction.
	if len(b)+6 > stubRipSlot {
		return nil, 0
	}
	disp := stubRipSlot - (len(b) + 6)
	b = append(b, 0xff, 0x25)
	b = binary.LittleEndian.AppendUint32(b, uint32(int32(disp)))
	for len(b) < stubRipSlot {
		b = append(b, 0xcc) // int3: never reached
	}
	b = binary.LittleEndian.AppendUint64(b, r.Rip)
	b = binary.LittleEndian.AppendUint64(b, flags)
	return b, stopAt
}

// encodeStub assembles the session's stub for address at, restoring r:
// one that stops itself when the session has a signal for it and it fits,
// else one run between syscall stops (s.stopSig is then 0).
func (s *Session) encodeStub(at uintptr, r *unix.PtraceRegs) []byte {
	popf := s.hooks.popf || !stackless(r.Eflags)
	if s.stopSig != 0 {
		if b, stopAt := encodeStub(at, r, popf, s.stopSig); b != nil {
			s.stopAt = at + uintptr(stopAt)
			return b
		}
		s.stopSig = 0
	}
	b, _ := encodeStub(at, r, popf, 0)
	return b
}

// reachable: the stub's final jmp reads an absolute address, so every
// site is in reach.
func (s *Session) reachable(at uintptr, r *unix.PtraceRegs) bool { return true }

// siteNeeds says what a stub site needs, for ErrNoStubSite's message.
const siteNeeds = " or leaves them free after its headers"

// placeFar: on x86-64 every site is in reach, so when stubSite found none
// there is none.
func (s *Session) placeFar(r *unix.PtraceRegs, noSite error) error { return noSite }

// overlapsExtra: the x86-64 stub is one piece.
func (s *Session) overlapsExtra(func(lo uintptr, n int) bool) bool { return false }

// removeExtra: the x86-64 stub is one piece.
func (s *Session) removeExtra() error { return nil }

// siteNeedsRegs: every site is in reach of an x86-64 stub, so its place
// can be found before the registers are known.
const siteNeedsRegs = false

package inject

import (
	"encoding/binary"
	"errors"

	"golang.org/x/sys/unix"
)

// The arm64 stub (see stub_linux_amd64.go for why a stub):
//
//	svc  #0                ; the injected call
//	ldr  x0, nzcv_slot     ; the thread's condition flags
//	msr  nzcv, x0
//	ldr  x0, sp_slot       ; its sp
//	mov  sp, x0
//	ldr  x0, x0_slot ... ldr x30, x30_slot
//	b    saved pc          ; a direct branch: no register is needed
//	slots (8-byte aligned)
//
// The loads are PC-relative literals, so nothing writes memory or uses
// the stack, and sp and the flags are the thread's own already (the
// injected call leaves them alone): loading them again only makes the
// stub the complete record of what the thread resumes with. FP/SIMD, SVE,
// TPIDR_EL0 and pstate's other bits are never touched.
//
// The branch reaches +-128 MiB, so the stub goes into padding within that
// range of the pc it returns to (in practice the ELF image or vDSO that
// holds it; for a Go program, whose executable segment maps its headers,
// the zeros after them too). When there is none (a static program whose
// text leaves less than stubLen of padding and has no such zeros, the
// vDSO far away), a 24-byte far stub goes
// anywhere (the vDSO) and returns with `br x16` through a 104-byte
// trampoline near the pc that restores the registers the call changed and
// x16 (placeFar); with no room for that either the session refuses
// (ErrNoStubSite). rt_sigreturn with a
// forged frame could reach anywhere, but it resets the thread's restart
// block, which an interrupted nanosleep needs, and it would need the
// thread's whole FP/SVE state in the frame.
//
// Writes through /proc/<pid>/mem and PTRACE_POKETEXT end in
// copy_to_user_page, which on arm64 makes the instruction cache coherent
// for an executable page (flush_ptrace_access), so the thread runs the
// stub just written.

const (
	stubCode     = 4 * (1 + 4 + 31 + 1) // svc, flags and sp, x0-x30, b
	stubSlots    = (stubCode + 7) &^ 7  // 8-byte aligned
	stubNZCVSlot = stubSlots
	stubSPSlot   = stubSlots + 8
	stubXSlot    = stubSlots + 16 // x0; xN at stubXSlot + 8*N
	stubLen      = stubXSlot + 31*8
	stubBranch   = stubCode - 4 // offset of the final b
	branchRange  = 1 << 27      // b's reach: imm26 words
	nzcvMask     = 0xf0000000
)

// siteNeeds says what a stub site needs, for ErrNoStubSite's message.
const siteNeeds = " or leaves them free after its headers, within 128 MiB of the thread's pc, nor has 104 bytes there for a trampoline (the stub returns with a direct branch)"

// reachable reports whether the stub's branch at at+stubBranch reaches
// r's pc.
func (s *Session) reachable(at uintptr, r *unix.PtraceRegs) bool {
	return inReach(at+stubBranch, r.Pc)
}

// encodeStub assembles the session's stub for address at, restoring r.
func (s *Session) encodeStub(at uintptr, r *unix.PtraceRegs) []byte {
	return encodeStub(at, r, 0)
}

// encodeStub assembles the stub for address at (8-byte aligned), restoring
// r. With tramp 0 it ends with a direct branch to r.Pc, which must be in
// reach; else it is the far stub (encodeFarStub).
func encodeStub(at uintptr, r *unix.PtraceRegs, tramp uintptr) []byte {
	if tramp != 0 {
		return encodeFarStub(r, tramp)
	}
	b := make([]byte, 0, stubLen)
	ins := func(w uint32) { b = binary.LittleEndian.AppendUint32(b, w) }
	ldr := func(rt, slot int) { ins(ldrLiteral(rt, (slot-len(b))/4)) }
	ins(insnSVC)
	ldr(0, stubNZCVSlot)
	ins(0xd51b4200) // msr nzcv, x0
	ldr(0, stubSPSlot)
	ins(0x9100001f) // mov sp, x0 (add sp, x0, #0)
	for i := 0; i < 31; i++ {
		ldr(i, stubXSlot+8*i)
	}
	ins(branch((int64(r.Pc) - int64(at) - int64(len(b))) / 4))
	for len(b) < stubSlots {
		ins(0xd4200000) // brk #0: never reached
	}
	b = binary.LittleEndian.AppendUint64(b, r.Pstate&nzcvMask)
	b = binary.LittleEndian.AppendUint64(b, r.Sp)
	for _, x := range r.Regs {
		b = binary.LittleEndian.AppendUint64(b, x)
	}
	return b
}

// The far stub and its trampoline, for a thread whose pc has no stub site
// in the branch's reach (a static program whose text leaves less than
// stubLen of padding, with only the far vDSO besides; Debian's arm64 6.12
// vDSO has little padding). The far stub goes anywhere:
//
//	svc  #0              ; the injected call
//	ldr  x16, tramp_slot
//	br   x16
//	brk  #0
//	tramp_slot
//
// and the trampoline, near the pc, restores what an injected call changes,
// x0-x5 (the arguments, x0 the result), x8 (the number) and x16, and
// branches back. The call preserves every other register, sp and the
// flags, which callRegs took from the registers the thread resumes with.
//
//	bti  j               ; a landing pad, for BTI-guarded text (a nop elsewhere)
//	ldr  x0 ... x5, x8, x16 from their slots
//	b    saved pc
//	slots
var trampRegs = [...]int{0, 1, 2, 3, 4, 5, 8, 16}

const (
	farLen      = 24
	trampCode   = 4 * (1 + len(trampRegs) + 1) // bti, the loads, b
	trampLen    = (trampCode+7)&^7 + 8*len(trampRegs)
	trampBranch = trampCode - 4 // offset of the b
)

// encodeFarStub assembles the far stub, which goes to the trampoline at
// tramp.
func encodeFarStub(r *unix.PtraceRegs, tramp uintptr) []byte {
	var b []byte
	for _, w := range []uint32{insnSVC, ldrLiteral(16, 3), 0xd61f0200 /* br x16 */, 0xd4200000 /* brk #0 */} {
		b = binary.LittleEndian.AppendUint32(b, w)
	}
	return binary.LittleEndian.AppendUint64(b, uint64(tramp))
}

// encodeTrampoline assembles the trampoline for address at (8-byte
// aligned, in reach of r.Pc), restoring r.
func encodeTrampoline(at uintptr, r *unix.PtraceRegs) []byte {
	b := make([]byte, 0, trampLen)
	ins := func(w uint32) { b = binary.LittleEndian.AppendUint32(b, w) }
	slots := (trampCode + 7) &^ 7
	ins(0xd503249f) // bti j
	for i, x := range trampRegs {
		ins(ldrLiteral(x, (slots+8*i-len(b))/4))
	}
	ins(branch((int64(r.Pc) - int64(at) - int64(len(b))) / 4))
	for len(b) < slots {
		ins(0xd4200000) // brk #0
	}
	for _, x := range trampRegs {
		b = binary.LittleEndian.AppendUint64(b, r.Regs[x])
	}
	return b
}

// inReach reports whether a branch at from reaches to.
func inReach(from uintptr, to uint64) bool {
	d := int64(to) - int64(from)
	return d >= -branchRange && d < branchRange && d%4 == 0
}

// placeFar places the stub where no site near the pc has room for it: a
// trampoline in reach of the pc and the stub anywhere (in practice the
// vDSO). Both are written before the thread's registers point there, and
// both are put back at Detach.
func (s *Session) placeFar(r *unix.PtraceRegs, noSite error) error {
	tramp, _, twhere, err := s.stubSite(trampLen, func(at uintptr) bool { return inReach(at+uintptr(trampBranch), r.Pc) })
	if err != nil {
		if errors.Is(err, ErrNoStubSite) {
			return noSite
		}
		return err
	}
	at, _, where, err := s.stubSite(farLen, func(at uintptr) bool { return at+uintptr(farLen) <= tramp || at >= tramp+uintptr(trampLen) })
	if err != nil {
		if errors.Is(err, ErrNoStubSite) {
			return noSite
		}
		return err
	}
	orig, err := s.keep(tramp, trampLen, twhere)
	if err != nil {
		return err
	}
	if err := s.forceWrite(tramp, encodeTrampoline(tramp, r)); err != nil {
		return err
	}
	s.arch.tramp, s.arch.trampOrig = tramp, orig
	return s.writeStub(at, where, encodeStub(at, r, tramp))
}

// overlapsExtra reports whether over says the trampoline is in the way.
func (s *Session) overlapsExtra(over func(lo uintptr, n int) bool) bool {
	return over(s.arch.tramp, trampLen)
}

// removeExtra puts back the bytes the trampoline replaced.
func (s *Session) removeExtra() error {
	if s.arch.tramp == 0 {
		return nil
	}
	err := s.forceWrite(s.arch.tramp, s.arch.trampOrig)
	s.arch.tramp, s.arch.trampOrig = 0, nil
	return err
}

// ldrLiteral encodes `ldr xRt, [pc + 4*words]`.
func ldrLiteral(rt, words int) uint32 {
	return 0x58000000 | uint32(words)&0x7ffff<<5 | uint32(rt)
}

// branch encodes `b pc + 4*words`.
func branch(words int64) uint32 { return 0x14000000 | uint32(words)&0x3ffffff }

// siteNeedsRegs: an arm64 stub's place must be within reach of the
// thread's pc, known only at the stop.
const siteNeedsRegs = true

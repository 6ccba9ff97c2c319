package inject

import (
	"encoding/binary"

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
// holds it); when there is none the session refuses (ErrNoStubSite)
// rather than spend a register on an indirect branch. rt_sigreturn with a
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
const siteNeeds = ", within 128 MiB of the thread's pc (the stub returns with a direct branch)"

// reachable reports whether the stub's branch at at+stubBranch reaches
// r's pc.
func (s *Session) reachable(at uintptr, r *unix.PtraceRegs) bool {
	d := int64(r.Pc) - int64(at+stubBranch)
	return d >= -branchRange && d < branchRange && d%4 == 0
}

// encodeStub assembles the session's stub for address at, restoring r.
func (s *Session) encodeStub(at uintptr, r *unix.PtraceRegs) []byte {
	return encodeStub(at, r)
}

// encodeStub assembles the stub for address at (8-byte aligned, in reach
// of r.Pc), restoring r.
func encodeStub(at uintptr, r *unix.PtraceRegs) []byte {
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

// ldrLiteral encodes `ldr xRt, [pc + 4*words]`.
func ldrLiteral(rt, words int) uint32 {
	return 0x58000000 | uint32(words)&0x7ffff<<5 | uint32(rt)
}

// branch encodes `b pc + 4*words`.
func branch(words int64) uint32 { return 0x14000000 | uint32(words)&0x3ffffff }

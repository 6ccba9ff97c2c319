package inject

import (
	"encoding/binary"
	"fmt"
	"os"
	"sync"

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
// holding the thread's registers as immediates. Once a thread's registers
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

// encodeStub assembles the stub for address at, restoring r.
func encodeStub(at uintptr, r *unix.PtraceRegs, popf bool) []byte {
	flags := r.Eflags &^ (flagTF | flagRF)
	b := make([]byte, 0, stubLen)
	b = append(b, 0x0f, 0x05) // syscall
	mov := func(rex, op byte, v uint64) {
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
	disp := stubRipSlot - (len(b) + 6)
	b = append(b, 0xff, 0x25)
	b = binary.LittleEndian.AppendUint32(b, uint32(int32(disp)))
	for len(b) < stubRipSlot {
		b = append(b, 0xcc) // int3: never reached
	}
	b = binary.LittleEndian.AppendUint64(b, r.Rip)
	b = binary.LittleEndian.AppendUint64(b, flags)
	return b
}

// ELF constants (elf.h) the site search reads.
const (
	elfHeaderLen = 64
	elfPhdrLen   = 56
	elfMaxPhdrs  = 128
	ptLoad       = 1
	pfX          = 1
)

// stubSite finds stubLen bytes at the end of an executable segment's last
// page, past everything the ELF image uses: the segment's own bytes and,
// where they are mapped (the vDSO), the section headers.
//
// The vDSO comes first, found without reading the target's /proc maps
// (which alone took about 60 us a session, a third of its stop time): the
// kernel maps the same vDSO into every 64-bit process, so where the stub
// fits in it is worked out once, from this process's own, and the
// target's copy is found through its auxiliary vector and checked against
// ours. A vDSO moved or removed since exec (CRIU restores move it) fails
// that check, and the maps are read after all.
func (s *Session) stubSite() (uintptr, string, error) {
	if at, ok := s.vdsoSite(); ok {
		return at, "[vdso]", nil
	}
	maps, err := readMaps(fmt.Sprintf("/proc/%d/task/%d/maps", s.pid, s.tid))
	if err != nil {
		return 0, "", s.memErr("place stub", err, "cannot read /proc maps")
	}
	for pass := 0; pass < 2; pass++ {
		for _, m := range maps {
			if m.perms != "r-xp" || (pass == 1) != (m.name == "[vdso]") {
				continue
			}
			base, ok := imageOf(maps, m)
			if !ok {
				continue
			}
			if at, ok := padding(s.readMemory, base, m); ok {
				return at, m.name, nil
			}
		}
	}
	if err := s.memErr("place stub", nil, ""); err != nil {
		return 0, "", err
	}
	return 0, "", s.fail("place stub", ErrNoStubSite, nil, fmt.Sprintf("no executable segment of the target ends %d bytes or more before its page end", stubLen))
}

// atSysinfoEhdr is AT_SYSINFO_EHDR: the auxiliary vector's vDSO address.
const atSysinfoEhdr = 33

// ownVDSO is this process's vDSO: its ELF header and where in it the stub
// fits, for vdsoSite.
var ownVDSO = sync.OnceValues(func() (vdsoLayout, bool) {
	base := auxvValue("/proc/self/auxv", atSysinfoEhdr)
	if base == 0 {
		return vdsoLayout{}, false
	}
	f, err := os.Open("/proc/self/mem")
	if err != nil {
		return vdsoLayout{}, false
	}
	defer f.Close()
	read := func(addr uintptr, b []byte) error {
		_, err := f.ReadAt(b, int64(addr))
		return err
	}
	var l vdsoLayout
	if read(base, l.header[:]) != nil {
		return vdsoLayout{}, false
	}
	// The vDSO is one mapping of whole pages holding the whole image.
	end := imageEnd(read, base)
	m := mapping{start: base, end: (end + pageSize - 1) &^ (pageSize - 1), name: "[vdso]"}
	at, ok := padding(read, m, m)
	l.offset = at - base
	return l, ok && end > base
})

type vdsoLayout struct {
	header [elfHeaderLen]byte
	offset uintptr // the stub's offset from the vDSO's start
}

// vdsoSite returns the stub's place in the target's vDSO, when the target
// has the vDSO this process has, where its auxiliary vector says.
func (s *Session) vdsoSite() (uintptr, bool) {
	own, ok := ownVDSO()
	if !ok || s.hooks.noVDSO {
		return 0, false
	}
	base := auxvValue(fmt.Sprintf("/proc/%d/auxv", s.pid), atSysinfoEhdr)
	var hdr [elfHeaderLen]byte
	if base == 0 || s.readMemory(base, hdr[:]) != nil || hdr != own.header {
		return 0, false
	}
	return base + own.offset, true
}

// auxvValue returns the value of auxiliary vector entry typ in file path
// (/proc/<pid>/auxv), 0 when it has none.
func auxvValue(path string, typ uint64) uintptr {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for ; len(b) >= 16; b = b[16:] {
		if binary.LittleEndian.Uint64(b) == typ {
			return uintptr(binary.LittleEndian.Uint64(b[8:]))
		}
	}
	return 0
}

// imageEnd returns where an ELF image read in memory ends: past its last
// segment and its section headers. 0 when it is not a readable ELF image.
func imageEnd(read func(uintptr, []byte) error, base uintptr) uintptr {
	var eh [elfHeaderLen]byte
	if read(base, eh[:]) != nil || string(eh[:4]) != "\x7fELF" {
		return 0
	}
	le := binary.LittleEndian
	end := le.Uint64(eh[40:]) + uint64(le.Uint16(eh[58:]))*uint64(le.Uint16(eh[60:]))
	phoff, phentsize, phnum := le.Uint64(eh[32:]), int(le.Uint16(eh[54:])), int(le.Uint16(eh[56:]))
	if phentsize < elfPhdrLen || phnum > elfMaxPhdrs {
		return 0
	}
	ph := make([]byte, phentsize*phnum)
	if read(base+uintptr(phoff), ph) != nil {
		return 0
	}
	for i := 0; i < phnum; i++ {
		p := ph[i*phentsize:]
		end = max(end, le.Uint64(p[8:])+le.Uint64(p[32:])) // p_offset + p_filesz
	}
	return base + uintptr(end)
}

// imageOf returns the mapping that holds the first page of m's file (the
// ELF header): the one with file offset 0 and the same file.
func imageOf(maps []mapping, m mapping) (mapping, bool) {
	if m.name == "[vdso]" {
		return m, m.offset == 0
	}
	if m.inode == "" || m.inode == "0" {
		return mapping{}, false // anonymous: no ELF image
	}
	for _, b := range maps {
		if b.offset == 0 && b.inode == m.inode && b.dev == m.dev && b.start <= m.start && b.perms[0] == 'r' {
			return b, true
		}
	}
	return mapping{}, false
}

// padding returns where the stub fits in mapping m, part of the ELF image
// whose header is at base.start, reading memory with read.
func padding(read func(uintptr, []byte) error, base, m mapping) (uintptr, bool) {
	var eh [elfHeaderLen]byte
	if read(base.start, eh[:]) != nil || string(eh[:4]) != "\x7fELF" || eh[4] != 2 || eh[5] != 1 {
		return 0, false // not a 64-bit little-endian ELF image
	}
	le := binary.LittleEndian
	phoff, phentsize, phnum := le.Uint64(eh[32:]), int(le.Uint16(eh[54:])), int(le.Uint16(eh[56:]))
	shoff, shentsize, shnum := le.Uint64(eh[40:]), uint64(le.Uint16(eh[58:])), uint64(le.Uint16(eh[60:]))
	if phentsize < elfPhdrLen || phnum == 0 || phnum > elfMaxPhdrs || phoff > uint64(base.end-base.start) {
		return 0, false
	}
	ph := make([]byte, phentsize*phnum)
	if read(base.start+uintptr(phoff), ph) != nil {
		return 0, false
	}
	type load struct{ flags, vaddr, memsz uint64 }
	var loads []load
	minVaddr := ^uint64(0)
	for i := 0; i < phnum; i++ {
		p := ph[i*phentsize:]
		if le.Uint32(p) != ptLoad {
			continue
		}
		l := load{uint64(le.Uint32(p[4:])), le.Uint64(p[16:]), le.Uint64(p[40:])}
		loads = append(loads, l)
		minVaddr = min(minVaddr, l.vaddr)
	}
	bias := uint64(base.start) - minVaddr&^(pageSize-1)
	for _, l := range loads {
		if l.flags&pfX == 0 {
			continue
		}
		end := bias + l.vaddr + l.memsz
		pageEnd := (end + pageSize - 1) &^ (pageSize - 1)
		if end <= uint64(m.start) || pageEnd > uint64(m.end) {
			continue
		}
		lo := (end + 7) &^ 7
		// The section header table, where this mapping shows it.
		if shnum > 0 && shentsize > 0 {
			shLo, shHi := shoff, shoff+shnum*shentsize
			mLo, mHi := m.offset, m.offset+uint64(m.end-m.start)
			if shLo < mHi && shHi > mLo {
				vaLo := uint64(m.start) + max(shLo, mLo) - mLo
				vaHi := uint64(m.start) + min(shHi, mHi) - mLo
				if vaLo < pageEnd && vaHi > lo {
					lo = (vaHi + 7) &^ 7
				}
			}
		}
		if pageEnd >= lo+stubLen {
			return uintptr(lo), true
		}
	}
	return 0, false
}

// placeStub writes the stub restoring regs into the target, keeping the
// bytes it replaces for Detach.
func (s *Session) placeStub(regs *unix.PtraceRegs) error {
	at, where, err := s.stubSite()
	if err != nil {
		return err
	}
	// The site lies in the last page of its segment; the rest of that page
	// after the stub can hold read-only data (ReadOnly). Its bytes are all
	// kept, so Detach can put back whatever was used.
	end := at&^(pageSize-1) + pageSize
	orig := make([]byte, end-at)
	if err := s.readMemory(at, orig); err != nil {
		return s.memErr("place stub", err, fmt.Sprintf("cannot read %d bytes at %#x in %s", len(orig), at, where))
	}
	popf := s.hooks.popf || !stackless(regs.Eflags)
	if err := s.forceWrite(at, encodeStub(at, regs, popf)); err != nil {
		return err
	}
	s.stub, s.stubOrig, s.stubWhere, s.stubUsed = at, orig, where, stubLen
	return nil
}

// ensureStub places the stub, restoring the registers the thread resumes
// with, unless the session has placed it already.
func (s *Session) ensureStub() error {
	if s.stub != 0 {
		return nil
	}
	s.resumed = resumeRegs(s.saved, s.semopRestartable())
	return s.placeStub(&s.resumed)
}

// ReadOnly puts data where the target can read it but never runs or writes
// it: after the stub, in the padding that holds it, 8-byte aligned. It
// suits the arguments a call only reads, such as semop's operations, and
// saves mapping a scratch page (two injected calls, and a page left in the
// target if the caller dies). Detach puts the padding's bytes back. When
// data does not fit (the padding has 0.5 to 4 KiB), it returns an error
// wrapping ErrNoRoom, and the caller maps a page instead.
func (s *Session) ReadOnly(data []byte) (uintptr, error) {
	if err := s.usable("read-only data"); err != nil {
		return 0, err
	}
	if err := s.ensureStub(); err != nil {
		return 0, err
	}
	at := (stubLen + 7) &^ 7
	if at+len(data) > len(s.stubOrig) {
		return 0, s.fail("read-only data", ErrNoRoom, nil, fmt.Sprintf("%d bytes do not fit in the %d bytes after the stub in %s: map a page", len(data), len(s.stubOrig)-at, s.stubWhere))
	}
	if err := s.forceWrite(s.stub+uintptr(at), data); err != nil {
		return 0, err
	}
	s.stubUsed = max(s.stubUsed, at+len(data))
	return s.stub + uintptr(at), nil
}

// forceWrite writes into memory the target cannot write itself (its
// text), through /proc/<pid>/mem or, when the kernel refuses a forced
// write there (proc_mem.force_override), PTRACE_POKETEXT: both copy the
// page privately for this process, as a debugger's breakpoint does.
func (s *Session) forceWrite(addr uintptr, data []byte) error {
	if !s.hooks.pokeOnly {
		f, err := os.OpenFile(fmt.Sprintf("/proc/%d/task/%d/mem", s.pid, s.tid), os.O_RDWR, 0)
		if err == nil {
			n, werr := f.WriteAt(data, int64(addr))
			f.Close()
			if werr == nil && n == len(data) {
				return nil
			}
		}
	}
	if _, err := unix.PtracePokeText(s.tid, addr, data); err != nil {
		return s.memErr("place stub", err, fmt.Sprintf("PTRACE_POKETEXT of %d bytes at %#x failed", len(data), addr))
	}
	return nil
}

// removeStub puts back the bytes the stub replaced. The thread must no
// longer be in the stub.
func (s *Session) removeStub() error {
	if s.stub == 0 {
		return nil
	}
	err := s.forceWrite(s.stub, s.stubOrig[:s.stubUsed])
	s.stub, s.stubOrig, s.stubUsed = 0, nil, 0
	return err
}

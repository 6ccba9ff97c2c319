//go:build linux && (amd64 || arm64)

package inject

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// The stub's site: padding in an executable ELF mapping that nothing runs
// (see stub_linux_$GOARCH.go for what the stub is).

// ELF constants (elf.h) the site search reads.
const (
	elfHeaderLen = 64
	elfPhdrLen   = 56
	elfMaxPhdrs  = 128
	ptLoad       = 1
	pfX          = 1
)

// stubSite finds size bytes, at an address accept takes, at the end of an
// executable segment's last page, past everything the ELF image uses: the segment's own bytes and,
// where they are mapped (the vDSO), the section headers. File-backed
// mappings come first; the vDSO is the last resort because debuggers read
// its section headers from memory.
func (s *Session) stubSite(size int, accept func(at uintptr) bool) (uintptr, string, error) {
	maps, err := readMaps(fmt.Sprintf("/proc/%d/task/%d/maps", s.pid, s.tid))
	if err != nil {
		return 0, "", s.memErr("place stub", err, "cannot read /proc maps")
	}
	for pass := 0; pass < 2; pass++ {
		for _, m := range maps {
			if m.perms != "r-xp" || (pass == 0) == (m.name == "[vdso]") {
				continue
			}
			base, ok := imageOf(maps, m)
			if !ok {
				continue
			}
			if at, found := s.padding(base, m, size); found && accept(at) {
				return at, m.name, nil
			}
		}
	}
	if err := s.memErr("place stub", nil, ""); err != nil {
		return 0, "", err
	}
	return 0, "", s.fail("place stub", ErrNoStubSite, nil, fmt.Sprintf("no executable segment of the target ends %d bytes or more before its page end%s", size, siteNeeds))
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
// whose header is at base.start.
func (s *Session) padding(base, m mapping, size int) (uintptr, bool) {
	var eh [elfHeaderLen]byte
	if s.readMemory(base.start, eh[:]) != nil || string(eh[:4]) != "\x7fELF" || eh[4] != 2 || eh[5] != 1 {
		return 0, false // not a 64-bit little-endian ELF image
	}
	le := binary.LittleEndian
	phoff, phentsize, phnum := le.Uint64(eh[32:]), int(le.Uint16(eh[54:])), int(le.Uint16(eh[56:]))
	shoff, shentsize, shnum := le.Uint64(eh[40:]), uint64(le.Uint16(eh[58:])), uint64(le.Uint16(eh[60:]))
	if phentsize < elfPhdrLen || phnum == 0 || phnum > elfMaxPhdrs || phoff > uint64(base.end-base.start) {
		return 0, false
	}
	ph := make([]byte, phentsize*phnum)
	if s.readMemory(base.start+uintptr(phoff), ph) != nil {
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
		gapEnd := uint64(0) // where the section headers begin, when they follow the segment in its page
		// The section header table, where this mapping shows it.
		if shnum > 0 && shentsize > 0 {
			shLo, shHi := shoff, shoff+shnum*shentsize
			mLo, mHi := m.offset, m.offset+uint64(m.end-m.start)
			if shLo < mHi && shHi > mLo {
				vaLo := uint64(m.start) + max(shLo, mLo) - mLo
				vaHi := uint64(m.start) + min(shHi, mHi) - mLo
				if vaLo < pageEnd && vaHi > lo {
					if vaLo >= lo {
						gapEnd = vaLo
					}
					lo = (vaHi + 7) &^ 7
				}
			}
		}
		if pageEnd >= lo+uint64(size) {
			return uintptr(lo), true
		}
		// Else the gap between the segment's end and the section headers
		// (arm64's vDSO on 6.12 has 160 bytes there and its headers run
		// past the page).
		if gapLo := (end + 7) &^ 7; gapEnd >= gapLo+uint64(size) {
			return uintptr(gapLo), true
		}
	}
	return 0, false
}

// placeStub writes the stub restoring regs into the target, keeping the
// bytes it replaces for Detach.
func (s *Session) placeStub(regs *unix.PtraceRegs) error {
	at, where, err := s.stubSite(stubLen, func(at uintptr) bool { return s.reachable(at, regs) })
	if errors.Is(err, ErrNoStubSite) {
		return s.placeFar(regs, err)
	}
	if err != nil {
		return err
	}
	return s.writeStub(at, where, s.encodeStub(at, regs))
}

// writeStub writes code, the stub, at at in the mapping where, keeping the
// bytes it replaces for Detach.
func (s *Session) writeStub(at uintptr, where string, code []byte) error {
	orig, err := s.keep(at, len(code), where)
	if err != nil {
		return err
	}
	if err := s.forceWrite(at, code); err != nil {
		return err
	}
	s.stub, s.stubOrig, s.stubWhere = at, orig, where
	return nil
}

// keep reads the n bytes at at, in the mapping where, that a write
// replaces.
func (s *Session) keep(at uintptr, n int, where string) ([]byte, error) {
	orig := make([]byte, n)
	if err := s.readMemory(at, orig); err != nil {
		return nil, s.memErr("place stub", err, fmt.Sprintf("cannot read %d bytes at %#x in %s", n, at, where))
	}
	return orig, nil
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
	err := s.forceWrite(s.stub, s.stubOrig)
	s.stub, s.stubOrig = 0, nil
	return errors.Join(err, s.removeExtra())
}

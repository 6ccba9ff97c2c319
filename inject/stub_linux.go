//go:build linux && (amd64 || arm64)

package inject

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"

	"github.com/semundo/semundo/internal/procfs"
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
	elfShdrLen   = 64
	elfMaxShdrs  = 4096
	shtNull      = 0
	shtNobits    = 8
)

// stubSite finds size bytes, at an address accept takes, at the end of an
// executable segment's last page, past everything the ELF image uses: the
// segment's own bytes and, where they are mapped (the vDSO), the section
// headers. It also returns where the free bytes there end (limit).
//
// The vDSO comes first, found without reading the target's /proc maps
// (which alone took about 60 us a session on x86-64, a third of its stop
// time): the kernel maps the same vDSO into every process of an ABI, so
// this process's own copy tells where the stub fits in it, and the
// target's is found through its auxiliary vector and checked against
// ours. A vDSO moved or removed since exec (CRIU restores move it), or
// out of accept's reach, sends the search to the maps: file-backed
// mappings first, the vDSO last.
func (s *Session) stubSite(size int, accept func(at uintptr) bool) (at, limit uintptr, where string, err error) {
	if at, limit, ok := s.vdsoSite(size); ok && accept(at) {
		return at, limit, "[vdso]", nil
	}
	maps, err := readMaps(fmt.Sprintf("/proc/%d/task/%d/maps", s.pid, s.tid))
	if err != nil {
		return 0, 0, "", s.memErr("place stub", err, "cannot read /proc maps")
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
			if at, limit, found := padding(s.readMemory, base, m, size); found && accept(at) {
				return at, limit, m.name, nil
			}
		}
	}
	if err := s.memErr("place stub", nil, ""); err != nil {
		return 0, 0, "", err
	}
	return 0, 0, "", s.fail("place stub", ErrNoStubSite, nil, fmt.Sprintf("no executable segment of the target ends %d bytes or more before its page end%s", size, siteNeeds))
}

// atSysinfoEhdr is AT_SYSINFO_EHDR: the auxiliary vector's vDSO address.
const atSysinfoEhdr = 33

// vdsoImage is this process's vDSO, read once: the target's is the same.
type vdsoImage struct {
	base uintptr
	data []byte // the whole mapping, from base
}

var ownVDSO = sync.OnceValues(func() (vdsoImage, bool) {
	base := auxvValue("/proc/self/auxv", atSysinfoEhdr)
	if base == 0 {
		return vdsoImage{}, false
	}
	f, err := os.Open("/proc/self/mem")
	if err != nil {
		return vdsoImage{}, false
	}
	defer f.Close()
	read := func(addr uintptr, b []byte) error {
		_, err := f.ReadAt(b, int64(addr))
		return err
	}
	// The vDSO is one mapping of whole pages holding the whole image.
	end := imageEnd(read, base)
	if end <= base {
		return vdsoImage{}, false
	}
	img := vdsoImage{base: base, data: make([]byte, (end-base+pageSize-1)&^(pageSize-1))}
	if read(base, img.data) != nil {
		return vdsoImage{}, false
	}
	return img, true
})

// vdsoSite returns the stub's place in the target's vDSO, when the target
// has the vDSO this process has, where its auxiliary vector says.
func (s *Session) vdsoSite(size int) (at, limit uintptr, ok bool) {
	own, ok := ownVDSO()
	if !ok || s.hooks.noVDSO {
		return 0, 0, false
	}
	base := auxvValue(fmt.Sprintf("/proc/%d/auxv", s.pid), atSysinfoEhdr)
	var hdr [elfHeaderLen]byte
	if base == 0 || s.readMemory(base, hdr[:]) != nil || string(hdr[:]) != string(own.data[:elfHeaderLen]) {
		return 0, 0, false
	}
	// Where it fits in ours, from the copy in memory, moved to theirs.
	read := func(addr uintptr, b []byte) error {
		off := addr - own.base
		if addr < own.base || off+uintptr(len(b)) > uintptr(len(own.data)) {
			return unix.EFAULT
		}
		copy(b, own.data[off:])
		return nil
	}
	m := mapping{start: own.base, end: own.base + uintptr(len(own.data)), name: "[vdso]"}
	at, limit, ok = padding(read, m, m, size)
	if !ok {
		return 0, 0, false
	}
	return at - own.base + base, limit - own.base + base, true
}

// auxvValue returns the value of auxiliary vector entry typ in file path
// (/proc/<pid>/auxv), 0 when it has none.
func auxvValue(path string, typ uint64) uintptr {
	b, err := procfs.ReadFile(path)
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

// imageEnd returns where an ELF image read in memory ends: past its
// segments' file bytes and its section headers. 0 when it is not a
// readable ELF image.
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
// whose header is at base.start.
func padding(read func(uintptr, []byte) error, base, m mapping, size int) (at, limit uintptr, ok bool) {
	var eh [elfHeaderLen]byte
	if read(base.start, eh[:]) != nil || string(eh[:4]) != "\x7fELF" || eh[4] != 2 || eh[5] != 1 {
		return 0, 0, false // not a 64-bit little-endian ELF image
	}
	le := binary.LittleEndian
	phoff, phentsize, phnum := le.Uint64(eh[32:]), int(le.Uint16(eh[54:])), int(le.Uint16(eh[56:]))
	shoff, shentsize, shnum := le.Uint64(eh[40:]), uint64(le.Uint16(eh[58:])), uint64(le.Uint16(eh[60:]))
	if phentsize < elfPhdrLen || phnum == 0 || phnum > elfMaxPhdrs || phoff > uint64(base.end-base.start) {
		return 0, 0, false
	}
	ph := make([]byte, phentsize*phnum)
	if read(base.start+uintptr(phoff), ph) != nil {
		return 0, 0, false
	}
	type load struct{ flags, off, vaddr, filesz, memsz uint64 }
	var loads []load
	minVaddr := ^uint64(0)
	for i := 0; i < phnum; i++ {
		p := ph[i*phentsize:]
		if le.Uint32(p) != ptLoad {
			continue
		}
		l := load{uint64(le.Uint32(p[4:])), le.Uint64(p[8:]), le.Uint64(p[16:]), le.Uint64(p[32:]), le.Uint64(p[40:])}
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
			return uintptr(lo), uintptr(pageEnd), true
		}
		// Else the gap between the segment's end and the section headers
		// (arm64's vDSO on 6.12 has 160 bytes there and its headers run
		// past the page).
		if gapLo := (end + 7) &^ 7; gapEnd >= gapLo+uint64(size) {
			return uintptr(gapLo), uintptr(gapEnd), true
		}
	}
	// Else the zeros between the headers and the first section, in an
	// executable segment that maps the file's start: Go's static
	// programs map their ELF, program and section headers with the code,
	// and leave most of that first page free. On arm64 this is the only
	// padding within a branch's reach of such a program's code when its
	// text ends too close to a page end.
	for _, l := range loads {
		if l.flags&pfX == 0 || l.off != 0 || shnum == 0 || shentsize < elfShdrLen {
			continue
		}
		vaddr := func(off uint64) uint64 { return bias + l.vaddr + off }
		segEnd := min(l.filesz, m.offset+uint64(m.end-m.start))
		if m.offset != 0 || vaddr(0) != uint64(m.start) || shoff+shnum*shentsize > segEnd || shnum > elfMaxShdrs {
			continue
		}
		sh := make([]byte, shnum*shentsize)
		if read(uintptr(vaddr(shoff)), sh) != nil {
			continue
		}
		// The bytes the headers and the sections hold, by file offset.
		type span struct{ lo, hi uint64 }
		used := []span{{0, elfHeaderLen}, {phoff, phoff + uint64(phnum*phentsize)}, {shoff, shoff + shnum*shentsize}}
		for i := uint64(0); i < shnum; i++ {
			h := sh[i*shentsize:]
			typ, off, n := le.Uint32(h[4:]), le.Uint64(h[24:]), le.Uint64(h[32:])
			if typ != shtNull && typ != shtNobits && n > 0 {
				used = append(used, span{off, off + n})
			}
		}
		slices.SortFunc(used, func(a, b span) int { return cmp.Compare(a.lo, b.lo) })
		lo, hi := uint64(0), segEnd
		for _, u := range used {
			if u.lo > lo {
				hi = min(hi, u.lo)
				break
			}
			lo = max(lo, u.hi)
		}
		lo = (lo + 7) &^ 7
		hi = min(hi, lo+pageSize) // ample for a stub and its call's data
		if hi < lo+uint64(size) {
			continue
		}
		// Only zeros: nothing the file says is there.
		free := make([]byte, hi-lo)
		if read(uintptr(vaddr(lo)), free) != nil {
			continue
		}
		if i := slices.IndexFunc(free, func(c byte) bool { return c != 0 }); i >= 0 {
			hi = lo + uint64(i)
		}
		if hi >= lo+uint64(size) {
			return uintptr(vaddr(lo)), uintptr(vaddr(hi)), true
		}
	}
	return 0, 0, false
}

// earlySite is the stub's place in the vDSO and the bytes there, read
// before the thread stopped.
type earlySite struct {
	at, limit uintptr
	orig      []byte
}

// findSiteEarly looks for the stub's place in the vDSO between the attach
// and the stop, where the time it takes (an auxv read and two small reads
// of the target's memory) is not stop time. Only where a site does not
// depend on the registers (siteNeedsRegs); the vDSO's padding is not
// written by the target, so what is read now is what the stop would read.
// Nothing found leaves the search to placeStub.
func (s *Session) findSiteEarly() {
	if siteNeedsRegs || s.hooks.pokeOnly {
		return
	}
	at, limit, ok := s.vdsoSite(stubLen)
	if !ok {
		return
	}
	orig := make([]byte, stubLen)
	if s.readMemory(at, orig) != nil {
		return
	}
	s.early = earlySite{at, limit, orig}
}

// placeStub writes the stub restoring regs into the target, keeping the
// bytes it replaces for Detach.
func (s *Session) placeStub(regs *unix.PtraceRegs) error {
	if e := s.early; e.at != 0 {
		s.early = earlySite{}
		if err := s.forceWrite(e.at, s.encodeStub(e.at, regs)); err != nil {
			return err
		}
		s.stub, s.stubOrig, s.stubWhere, s.stubLimit = e.at, e.orig, "[vdso]", e.limit
		return nil
	}
	at, limit, where, err := s.stubSite(stubLen, func(at uintptr) bool { return s.reachable(at, regs) })
	if errors.Is(err, ErrNoStubSite) {
		return s.placeFar(regs, err)
	}
	if err != nil {
		return err
	}
	if err := s.writeStub(at, where, s.encodeStub(at, regs)); err != nil {
		return err
	}
	s.stubLimit = limit
	return nil
}

// ensureStub places the stub, restoring the registers the thread resumes
// with, unless the session has placed it already.
func (s *Session) ensureStub() error {
	if s.stub != 0 {
		return nil
	}
	s.resumed = s.resumeRegs()
	return s.placeStub(&s.resumed)
}

// ReadOnly puts data where the target can read it but never runs or writes
// it: after the stub, in the padding that holds it, 8-byte aligned. It
// suits the arguments a call only reads, such as semop's operations, and
// saves mapping a scratch page (two injected calls, and a page left in the
// target if the caller dies). Detach puts the padding's bytes back. When
// data does not fit (the padding has about 0.2 to 4 KiB), it returns an
// error wrapping ErrNoRoom, and the caller maps a page instead.
func (s *Session) ReadOnly(data []byte) (uintptr, error) {
	if err := s.usable("read-only data"); err != nil {
		return 0, err
	}
	if err := s.ensureStub(); err != nil {
		return 0, err
	}
	if s.dataAt == 0 {
		// After the stub when there is room (no search, no maps read),
		// else padding of its own elsewhere. Its size is set by the
		// first call; the calls of one write are alike.
		at, limit, where := (s.stub+uintptr(len(s.stubOrig))+7)&^7, s.stubLimit, s.stubWhere
		if limit == 0 || at+uintptr(len(data)) > limit || s.hooks.dataApart {
			var err error
			at, limit, where, err = s.stubSite(len(data), func(a uintptr) bool { return !s.occupied(a, len(data)) })
			if errors.Is(err, ErrNoStubSite) {
				return 0, s.fail("read-only data", ErrNoRoom, nil, fmt.Sprintf("no padding holds %d bytes besides the stub: map a page", len(data)))
			}
			if err != nil {
				return 0, err
			}
		}
		orig, err := s.keep(at, int(limit-at), where)
		if err != nil {
			return 0, err
		}
		s.dataAt, s.dataOrig = at, orig
	}
	if len(data) > len(s.dataOrig) {
		return 0, s.fail("read-only data", ErrNoRoom, nil, fmt.Sprintf("%d bytes do not fit in the %d bytes of padding this session uses for data: map a page", len(data), len(s.dataOrig)))
	}
	if err := s.forceWrite(s.dataAt, data); err != nil {
		return 0, err
	}
	s.dataUsed = max(s.dataUsed, len(data))
	return s.dataAt, nil
}

// occupied reports whether n bytes at at overlap what the session has
// written into the target's text (the stub, an arm64 trampoline).
func (s *Session) occupied(at uintptr, n int) bool {
	over := func(lo uintptr, len int) bool { return lo != 0 && at < lo+uintptr(len) && lo < at+uintptr(n) }
	return over(s.stub, len(s.stubOrig)) || s.overlapsExtra(over)
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
	if !s.hooks.pokeOnly && !s.memTried {
		// Opened once a session: each open checks ptrace access and
		// takes a reference on the target's mm, which costs more than
		// the write, and a session writes at least twice (stub, then
		// the bytes it replaced).
		s.memTried = true
		fd, err := unix.Open(fmt.Sprintf("/proc/%d/task/%d/mem", s.pid, s.tid), unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err == nil {
			s.mem, s.memOpen = fd, true
		}
	}
	if s.memOpen {
		if n, err := unix.Pwrite(s.mem, data, int64(addr)); err == nil && n == len(data) {
			return nil
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
	if s.dataUsed > 0 {
		err = errors.Join(err, s.forceWrite(s.dataAt, s.dataOrig[:s.dataUsed]))
	}
	s.stub, s.stubOrig, s.stubLimit, s.dataAt, s.dataOrig, s.dataUsed = 0, nil, 0, 0, nil, 0
	return errors.Join(err, s.removeExtra())
}

package inject

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// The arm64 targets are tiny static ELF programs the tests write out from
// hand-assembled instructions, so they need no compiler (the kernel-matrix
// guests have none). Each has a read-execute code segment at armCode (whose
// last page has room for the stub, and which holds every pc the target
// stops at) and a read-write data segment at armData.
const (
	armCode = 0x400000
	armData = 0x410000
	armBSS  = 4096 // zeroed bytes after the data, for buffers and counters
)

// a64 assembles a program: instructions appended in order, with labels for
// branches that are resolved by link.
type a64 struct {
	ins    []uint32
	labels map[string]int
	fixups []fixup
}

type fixup struct {
	at    int
	label string
	enc   func(words int) uint32
}

func (a *a64) emit(w ...uint32) { a.ins = append(a.ins, w...) }

func (a *a64) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.ins)
}

// mov loads a 64-bit constant into xd with movz and three movk (always
// four instructions).
func (a *a64) mov(rd int, v uint64) {
	a.emit(0xd2800000 | uint32(v&0xffff)<<5 | uint32(rd))
	for hw := 1; hw < 4; hw++ {
		a.emit(0xf2800000 | uint32(hw)<<21 | uint32(v>>(16*hw)&0xffff)<<5 | uint32(rd))
	}
}

// sys issues system call nr with the given arguments.
func (a *a64) sys(nr uint64, args ...uint64) {
	for i, v := range args {
		a.mov(i, v)
	}
	a.mov(8, nr)
	a.emit(insnSVC)
}

func (a *a64) jump(label string, enc func(words int) uint32) {
	a.fixups = append(a.fixups, fixup{len(a.ins), label, enc})
	a.emit(0)
}

func (a *a64) b(label string) { a.jump(label, func(w int) uint32 { return branch(int64(w)) }) }

// cbnz jumps when x0 is not zero.
func (a *a64) cbnz(label string) {
	a.jump(label, func(w int) uint32 { return 0xb5000000 | uint32(w)&0x7ffff<<5 })
}

// cbz jumps when x0 is zero.
func (a *a64) cbz(label string) {
	a.jump(label, func(w int) uint32 { return 0xb4000000 | uint32(w)&0x7ffff<<5 })
}

// bne jumps when the flags say not equal.
func (a *a64) bne(label string) {
	a.jump(label, func(w int) uint32 { return 0x54000001 | uint32(w)&0x7ffff<<5 })
}

func (a *a64) link() []byte {
	for _, f := range a.fixups {
		a.ins[f.at] = f.enc(a.labels[f.label] - f.at)
	}
	b := make([]byte, 0, 4*len(a.ins))
	for _, w := range a.ins {
		b = binary.LittleEndian.AppendUint32(b, w)
	}
	return b
}

// arm64 system call numbers the programs use.
const (
	a64Write  = 64
	a64Read   = 63
	a64Ppoll  = 73
	a64Semop  = 193
	a64Nanosl = 101
	a64Clock  = 115
	// rt_sigaction
	a64Sigaction = 134
	a64Clone     = 220
)

// forever ends a program: it waits in ppoll with no descriptors and no
// timeout until killed.
func (a *a64) forever() {
	a.label("forever")
	a.sys(a64Ppoll, 0, 0, 0, 0)
	a.b("forever")
}

// say writes the string at data offset off (length n) to stdout.
func (a *a64) say(off, n int) { a.sys(a64Write, 1, armData+uint64(off), uint64(n)) }

// armHeaders is the size of the ELF header and the two program headers
// that precede the code.
const armHeaders = 64 + 2*56

// armProgram writes an ELF file of code and data and returns its path.
func armProgram(tb testing.TB, name string, code, data []byte) string {
	tb.Helper()
	return armImage(tb, name, code, data, armHeaders, false)
}

// armImage is armProgram with the code at codeOff in its page and, with
// sections, a null section header and .text's after the program headers.
func armImage(tb testing.TB, name string, code, data []byte, codeOff int, sections bool) string {
	tb.Helper()
	var b bytes.Buffer
	ident := [elf.EI_NIDENT]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)}
	eh := elf.Header64{
		Ident: ident, Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_AARCH64), Version: uint32(elf.EV_CURRENT),
		Entry: armCode + uint64(codeOff), Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: 2, Shentsize: 64,
	}
	if sections {
		eh.Shoff, eh.Shnum = armHeaders, 2
	}
	binary.Write(&b, binary.LittleEndian, eh)
	codeEnd := uint64(codeOff + len(code))
	if codeEnd > pageSize {
		tb.Fatalf("program %s: %d bytes of code do not fit its page", name, len(code))
	}
	binary.Write(&b, binary.LittleEndian, elf.Prog64{
		Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Vaddr: armCode, Paddr: armCode,
		Filesz: codeEnd, Memsz: codeEnd, Align: pageSize,
	})
	binary.Write(&b, binary.LittleEndian, elf.Prog64{
		Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_W), Off: pageSize, Vaddr: armData, Paddr: armData,
		Filesz: uint64(len(data)), Memsz: uint64(len(data) + armBSS), Align: pageSize,
	})
	if sections {
		binary.Write(&b, binary.LittleEndian, elf.Section64{})
		binary.Write(&b, binary.LittleEndian, elf.Section64{
			Type: uint32(elf.SHT_PROGBITS), Flags: uint64(elf.SHF_ALLOC | elf.SHF_EXECINSTR),
			Addr: armCode + uint64(codeOff), Off: uint64(codeOff), Size: uint64(len(code)), Addralign: 4,
		})
	}
	if b.Len() > codeOff {
		tb.Fatalf("program %s: headers of %d bytes run into the code at %d", name, b.Len(), codeOff)
	}
	b.Write(make([]byte, codeOff-b.Len()))
	b.Write(code)
	b.Write(make([]byte, pageSize-b.Len()))
	b.Write(data)
	path := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(path, b.Bytes(), 0o755); err != nil {
		tb.Fatal(err)
	}
	return path
}

// The strings every program's data starts with.
const (
	armReady = "ready\n"
	armOK    = "ok\n"
	armErr   = "err\n"
	armStrs  = armReady + armOK + armErr
)

// armCounter is where the spinner's counter is: the first bss word after
// the strings (the sleep loop's is 16 bytes on, after its timespec).
var armCounter = uintptr(armData + len(align8([]byte(armStrs))))

// align8 pads b to a multiple of 8 bytes, so what follows is aligned.
func align8(b []byte) []byte { return append(b, make([]byte, -len(b)&7)...) }

func armStart(a *a64) { a.say(0, len(armReady)) }

// armResult prints "ok" when x0 is 0, else "err", then waits forever.
func armResult(a *a64) {
	a.cbnz("fail")
	a.say(len(armReady), len(armOK))
	a.b("forever")
	a.label("fail")
	a.say(len(armReady+armOK), len(armErr))
	a.forever()
}

// armSleeper sleeps ms once with nanosleep (or clock_nanosleep on
// CLOCK_MONOTONIC), prints "ok" or "err", and waits.
func armSleeper(tb testing.TB, ms int64, clock bool) string {
	data := align8([]byte(armStrs))
	req := uint64(armData + len(data))
	data = binary.LittleEndian.AppendUint64(data, uint64(ms/1000))
	data = binary.LittleEndian.AppendUint64(data, uint64(ms%1000*1e6))
	var a a64
	armStart(&a)
	if clock {
		a.sys(a64Clock, uint64(1), 0, req, 0) // CLOCK_MONOTONIC, relative
	} else {
		a.sys(a64Nanosl, req, 0)
	}
	armResult(&a)
	return armProgram(tb, "sleeper", a.link(), data)
}

// armReader reads up to 64 bytes from stdin once and writes what it read
// to stdout, then waits.
func armReader(tb testing.TB) string {
	data := []byte(armStrs)
	buf := uint64(armData + len(data))
	var a a64
	armStart(&a)
	a.sys(a64Read, 0, buf, 64)
	a.emit(0xaa0003e2) // mov x2, x0: the count read
	a.mov(0, 1)
	a.mov(1, buf)
	a.mov(8, a64Write)
	a.emit(insnSVC)
	a.forever()
	return armProgram(tb, "reader", a.link(), data)
}

// armSemwaiter runs semop(id, {0, -1, SEM_UNDO}, 1) once, which blocks
// until the test raises the semaphore, prints "ok" or "err", and waits.
func armSemwaiter(tb testing.TB, id int) string {
	data := align8([]byte(armStrs))
	sops := uint64(armData + len(data))
	data = append(data, sembuf(0, -1, semUndo)...)
	var a a64
	armStart(&a)
	a.sys(a64Semop, uint64(id), sops, 1)
	armResult(&a)
	return armProgram(tb, "semwaiter", a.link(), data)
}

// armSpinner counts in a loop in user space, at the start of its bss,
// checking on each round that x20 and x21 still hold the same constant
// (and that the flags of that comparison survive to the branch); it prints
// "err" and waits when they do not.
func armSpinner(tb testing.TB) string {
	data := align8([]byte(armStrs))
	counter := uint64(armData + len(data))
	var a a64
	armStart(&a)
	a.mov(19, counter)
	a.mov(20, 0x5eed5eed12345678)
	a.mov(21, 0x5eed5eed12345678)
	a.label("loop")
	a.emit(0xf9400261) // ldr x1, [x19]
	a.emit(0x91000421) // add x1, x1, #1
	a.emit(0xf9000261) // str x1, [x19]
	a.emit(0xeb15029f) // cmp x20, x21
	a.bne("bad")
	a.b("loop")
	a.label("bad")
	a.say(len(armReady+armOK), len(armErr))
	a.forever()
	return armProgram(tb, "spinner", a.link(), data)
}

// armFail ends a program: "fail" prints "err" and waits forever.
func armFail(a *a64) {
	a.label("fail")
	a.say(len(armReady+armOK), len(armErr))
	a.forever()
}

// armSleepLoop sleeps 2 ms again and again, counting each sleep at the
// start of its bss, and checks x20 == x21 on each round: a sleep that
// fails (EINTR) or a register or flag lost prints "err".
func armSleepLoop(tb testing.TB) string {
	data := align8([]byte(armStrs))
	req := uint64(armData + len(data))
	data = binary.LittleEndian.AppendUint64(data, 0)
	data = binary.LittleEndian.AppendUint64(data, 2e6)
	counter := uint64(armData + len(data))
	var a a64
	armStart(&a)
	a.mov(19, counter)
	a.mov(20, 0x5eed5eed12345678)
	a.mov(21, 0x5eed5eed12345678)
	a.label("loop")
	a.sys(a64Nanosl, req, 0)
	a.cbnz("fail")
	a.emit(0xf9400261) // ldr x1, [x19]
	a.emit(0x91000421) // add x1, x1, #1
	a.emit(0xf9000261) // str x1, [x19]
	a.emit(0xeb15029f) // cmp x20, x21
	a.bne("fail")
	a.b("loop")
	armFail(&a)
	return armProgram(tb, "sleeploop", a.link(), data)
}

// armSemopLoop runs semop(id, {0, -1, 0}, 1) again and again, printing "ok"
// after each, or "err" (and stopping) when one fails.
func armSemopLoop(tb testing.TB, id int) string {
	data := align8([]byte(armStrs))
	sops := uint64(armData + len(data))
	data = append(data, sembuf(0, -1, 0)...)
	var a a64
	armStart(&a)
	a.label("loop")
	a.sys(a64Semop, uint64(id), sops, 1)
	a.cbnz("fail")
	a.say(len(armReady), len(armOK))
	a.b("loop")
	armFail(&a)
	return armProgram(tb, "semoploop", a.link(), data)
}

// armSVESpinner makes the SVE state live (ptrue p0.b, after its last
// system call) and then counts in user space, as armSpinner.
func armSVESpinner(tb testing.TB) string {
	var a a64
	armStart(&a)
	a.emit(0x2518e3e0) // ptrue p0.b
	a.mov(19, uint64(armCounter))
	a.label("spin")
	a.emit(0xf9400261) // ldr x1, [x19]
	a.emit(0x91000421) // add x1, x1, #1
	a.emit(0xf9000261) // str x1, [x19]
	a.b("spin")
	return armProgram(tb, "svespinner", a.link(), align8([]byte(armStrs)))
}

// armFullPage is armSleeper (nanosleep) with its code padded with nops
// (never run: they follow the final branch) to room bytes before its
// page's end (room a multiple of 8), so that its own text has no room for
// the stub.
func armFullPage(tb testing.TB, ms int64, room int) string {
	code, data := armNapper(ms, armHeaders, room)
	return armProgram(tb, "fullpage", code, data)
}

// armNapper returns armSleeper's code and data, the code padded with nops
// so that, placed at codeOff, it ends room bytes before its page's end.
func armNapper(ms int64, codeOff, room int) (code, data []byte) {
	data = align8([]byte(armStrs))
	req := uint64(armData + len(data))
	data = binary.LittleEndian.AppendUint64(data, uint64(ms/1000))
	data = binary.LittleEndian.AppendUint64(data, uint64(ms%1000*1e6))
	var a a64
	armStart(&a)
	a.sys(a64Nanosl, req, 0)
	armResult(&a)
	for codeOff+4*len(a.ins) < pageSize-room {
		a.emit(0xd503201f) // nop
	}
	return a.link(), data
}

// armGapCode is where armGapProgram's code starts in its page.
const armGapCode = 0x800

// armGapProgram is armFullPage with 16 bytes of room, laid out as Go lays
// out its static programs: the section headers (a null one and .text)
// follow the program headers in the executable segment, then zeros, then
// the code at armGapCode filling the page. Those zeros are the only
// padding within a branch's reach of the code.
func armGapProgram(tb testing.TB, ms int64) string {
	code, data := armNapper(ms, armGapCode, 16)
	return armImage(tb, "gap", code, data, armGapCode, true)
}

// armWaker catches SIGUSR1 with a handler that counts at armCounter (no
// SA_RESTART), then waits in ppoll again and again, printing "ok" each
// time a signal ended the wait with EINTR ("err" for any other result).
func armWaker(tb testing.TB) string {
	data := align8([]byte(armStrs))
	counter := uint64(armData + len(data))
	data = append(data, make([]byte, 8)...)
	act := uint64(armData + len(data))
	handler := uint64(armCode + armHeaders + 4) // after the first branch
	data = binary.LittleEndian.AppendUint64(data, handler)
	data = append(data, make([]byte, 24)...) // flags, restorer, mask: 0
	var a a64
	a.b("main")
	a.mov(9, counter)  // the handler
	a.emit(0xf940012a) // ldr x10, [x9]
	a.emit(0x9100054a) // add x10, x10, #1
	a.emit(0xf900012a) // str x10, [x9]
	a.emit(0xd65f03c0) // ret
	a.label("main")
	a.sys(a64Sigaction, uint64(unix.SIGUSR1), act, 0, 8)
	a.cbnz("fail")
	armStart(&a)
	a.label("wait")
	a.sys(a64Ppoll, 0, 0, 0, 0)
	a.emit(0xb100101f) // cmn x0, #4: x0 == -EINTR
	a.bne("fail")
	a.say(len(armReady), len(armOK))
	a.b("wait")
	armFail(&a)
	return armProgram(tb, "waker", a.link(), data)
}

// armThreads starts two more threads (clone with CLONE_THREAD), each
// counting in user space at armCounter and armCounter+8, and then waits in
// ppoll in the leader.
func armThreads(tb testing.TB) string {
	const flags = 0x100 | 0x200 | 0x400 | 0x800 | 0x10000 | 0x40000 // VM FS FILES SIGHAND THREAD SYSVSEM
	var a a64
	armStart(&a)
	for i := uint64(0); i < 2; i++ {
		a.mov(19, uint64(armCounter)+8*i)
		a.sys(a64Clone, flags, uint64(armCounter)+1024*(i+1), 0, 0, 0) // a stack of its own (never used)
		a.cbz("child")
	}
	a.forever()
	a.label("child")
	a.emit(0xf9400261) // ldr x1, [x19]
	a.emit(0x91000421) // add x1, x1, #1
	a.emit(0xf9000261) // str x1, [x19]
	a.b("child")
	return armProgram(tb, "threads", a.link(), align8([]byte(armStrs)))
}

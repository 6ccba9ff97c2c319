package inject

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"

	"github.com/semundo/semundo/internal/testenv"
)

// The 32-bit target and the int $0x80 target are written out as tiny static
// ELF files by the test itself, from a few hand-assembled instructions:
// they need no compiler, no 32-bit libc and no multilib, so they run the
// same on the host and in the kernel-matrix guests, which have no gcc. Both
// load at elfBase, below 4 GiB, where a 32-bit register can address them.
const elfBase = 0x400000

// elfProgram is a program of one loadable segment: code (which starts at
// the entry point) followed by data. code is built by a function of the
// data's address, since the instructions name it.
type elfProgram struct {
	class elf.Class
	code  func(data uint32) []byte
	data  []byte
}

// headerSize is what precedes the code in the file and in memory: the ELF
// header and one program header.
func (p elfProgram) headerSize() uint32 {
	if p.class == elf.ELFCLASS32 {
		return 52 + 32
	}
	return 64 + 56
}

// image returns the file's bytes.
func (p elfProgram) image() []byte {
	entry := elfBase + p.headerSize()
	// The code's length does not depend on the address it is given.
	codeLen := uint32(len(p.code(0)))
	code := p.code(entry + codeLen)
	size := p.headerSize() + codeLen + uint32(len(p.data))
	ident := [elf.EI_NIDENT]byte{0x7f, 'E', 'L', 'F', byte(p.class), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)}
	var b bytes.Buffer
	if p.class == elf.ELFCLASS32 {
		binary.Write(&b, binary.LittleEndian, elf.Header32{
			Ident: ident, Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_386), Version: uint32(elf.EV_CURRENT),
			Entry: entry, Phoff: 52, Ehsize: 52, Phentsize: 32, Phnum: 1, Shentsize: 40,
		})
		binary.Write(&b, binary.LittleEndian, elf.Prog32{
			Type: uint32(elf.PT_LOAD), Vaddr: elfBase, Paddr: elfBase, Filesz: size, Memsz: size,
			Flags: uint32(elf.PF_R | elf.PF_X), Align: 0x1000,
		})
	} else {
		binary.Write(&b, binary.LittleEndian, elf.Header64{
			Ident: ident, Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
			Entry: uint64(entry), Phoff: 64, Ehsize: 64, Phentsize: 56, Phnum: 1, Shentsize: 64,
		})
		binary.Write(&b, binary.LittleEndian, elf.Prog64{
			Type: uint32(elf.PT_LOAD), Flags: uint32(elf.PF_R | elf.PF_X), Vaddr: elfBase, Paddr: elfBase,
			Filesz: uint64(size), Memsz: uint64(size), Align: 0x1000,
		})
	}
	b.Write(code)
	b.Write(p.data)
	return b.Bytes()
}

// write puts the program into a file of its own in a temporary directory
// and returns its path.
func (p elfProgram) write(tb testing.TB, name string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(path, p.image(), 0o755); err != nil {
		tb.Fatal(err)
	}
	return path
}

// Instructions, x86 machine code. The same encodings mean the same in
// 32-bit and 64-bit mode for the 32-bit registers used here.
func movEAX(v uint32) []byte { return le32(0xb8, v) }
func movEBX(v uint32) []byte { return le32(0xbb, v) }
func movEDX(v uint32) []byte { return le32(0xba, v) }
func movESI(v uint32) []byte { return le32(0xbe, v) }
func movEDI(v uint32) []byte { return le32(0xbf, v) }

var (
	xorECX     = []byte{0x31, 0xc9}
	xorEDI     = []byte{0x31, 0xff}
	movEDIEAX  = []byte{0x89, 0xc7}
	negEDI     = []byte{0xf7, 0xdf}
	int80      = []byte{0xcd, 0x80}
	syscallIns = []byte{0x0f, 0x05}
)

func le32(op byte, v uint32) []byte { return binary.LittleEndian.AppendUint32([]byte{op}, v) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// ia32 system call numbers (arch/x86/entry/syscalls/syscall_32.tbl), and
// the x86-64 ones the 64-bit programs use.
const (
	ia32Exit      = 1
	ia32Nanosleep = 162
	x64Write      = 1
	x64Nanosleep  = 35
	x64Exit       = 60
)

// write64 is write(1, addr, n) through the 64-bit syscall instruction.
func write64(addr, n uint32) []byte {
	return cat(movEAX(x64Write), movEDI(1), movESI(addr), movEDX(n), syscallIns)
}

// sleeper32 is a 32-bit program that sleeps in nanosleep (int $0x80), a
// second at a time, forever: struct timespec of two 32-bit longs.
var sleeper32 = elfProgram{
	class: elf.ELFCLASS32,
	code: func(req uint32) []byte {
		body := cat(movEAX(ia32Nanosleep), movEBX(req), xorECX, int80)
		// jmp back to the start: rel8 counted from the jmp's end.
		return cat(body, []byte{0xeb, byte(-(len(body) + 2))})
	},
	data: []byte{1, 0, 0, 0, 0, 0, 0, 0},
}

// probe32 is a 32-bit program that exits with status 7.
var probe32 = elfProgram{
	class: elf.ELFCLASS32,
	code:  func(uint32) []byte { return cat(movEAX(ia32Exit), movEBX(7), int80) },
}

const (
	int80Ready = "ready\n"
	int80Done  = "nanosleep returned\n"
)

// int80Sleeper is a 64-bit program that prints "ready", then sleeps 100,000 s
// in the ia32 nanosleep through int $0x80 (32-bit struct timespec), prints
// "nanosleep returned" if it ever returns, and exits.
var int80Sleeper = elfProgram{
	class: elf.ELFCLASS64,
	code: func(data uint32) []byte {
		req, ready, done := data, data+8, data+8+uint32(len(int80Ready))
		return cat(
			write64(ready, uint32(len(int80Ready))),
			movEAX(ia32Nanosleep), movEBX(req), xorECX, int80,
			write64(done, uint32(len(int80Done))),
			movEAX(x64Exit), xorEDI, syscallIns)
	},
	data: cat(binary.LittleEndian.AppendUint32(nil, 100000), []byte{0, 0, 0, 0}, []byte(int80Ready), []byte(int80Done)),
}

// probeInt80 is a 64-bit program that sleeps 1 ns in the ia32 nanosleep
// through int $0x80 and exits with the call's errno (0 when it worked).
var probeInt80 = elfProgram{
	class: elf.ELFCLASS64,
	code: func(req uint32) []byte {
		return cat(movEAX(ia32Nanosleep), movEBX(req), xorECX, int80,
			movEDIEAX, negEDI, movEAX(x64Exit), syscallIns)
	},
	data: []byte{0, 0, 0, 0, 1, 0, 0, 0},
}

var (
	probeOnce           sync.Once
	no32BitELF, noInt80 string
)

// probeIA32 runs the two probes once per test binary and says, for each,
// what is missing ("" when the feature works). Kernels built with
// CONFIG_IA32_EMULATION can still lack both: booted with ia32_emulation=0
// (or CONFIG_IA32_EMULATION_DEFAULT_DISABLED), or on some virtual machines.
func probeIA32(tb testing.TB) (elf32, int80 string) {
	tb.Helper()
	probeOnce.Do(func() {
		no32BitELF = runProbe(tb, probe32.write(tb, "probe32"), 7)
		noInt80 = runProbe(tb, probeInt80.write(tb, "probeint80"), 0)
	})
	return no32BitELF, noInt80
}

// runProbe runs the program at path and says how it failed to exit with
// status want ("" when it did not fail).
func runProbe(tb testing.TB, path string, want int) string {
	tb.Helper()
	err := testenv.Run(tb, exec.Command(path), "the probe "+path)
	var ee *exec.ExitError
	switch {
	case errors.Is(err, syscall.ENOEXEC):
		return "exec: " + err.Error()
	case errors.As(err, &ee) && ee.ExitCode() >= 0:
		return exitMismatch(ee.ExitCode(), want)
	case err != nil:
		return err.Error()
	}
	return exitMismatch(0, want)
}

// exitMismatch says what exit status code means when want was expected, or
// "" when they are the same. The int $0x80 probe exits with an errno.
func exitMismatch(code, want int) string {
	if code == want {
		return ""
	}
	return fmt.Sprintf("it exited with status %d (as an errno: %v)", code, syscall.Errno(code))
}

// require32BitELF skips the test when the kernel runs no 32-bit program.
// Only the tests need one (semundo refuses such targets): so it skips even
// under CI, whose kernel matrix runs these tests on kernels that have it.
func require32BitELF(tb testing.TB) {
	tb.Helper()
	if why, _ := probeIA32(tb); why != "" {
		testenv.SkipTestOnly(tb, "support for 32-bit executables (IA32 emulation)", "a static 32-bit ELF that exits 7 did not: "+why)
	}
}

// requireInt80 skips the test when a 64-bit process cannot make a 32-bit
// system call with int $0x80; like require32BitELF, even under CI.
func requireInt80(tb testing.TB) {
	tb.Helper()
	if _, why := probeIA32(tb); why != "" {
		testenv.SkipTestOnly(tb, "32-bit system calls (int $0x80) from 64-bit processes (IA32 emulation)", "nanosleep through int $0x80 did not return 0: "+why)
	}
}

// TestIA32Probes: the probes tell a failure from success, so that a missing
// feature is named rather than taken for present: a file that is no program,
// and a 64-bit program whose int $0x80 call fails (a system call number the
// ia32 table lacks), are both reported.
func TestIA32Probes(t *testing.T) {
	notELF := filepath.Join(t.TempDir(), "notelf")
	if err := os.WriteFile(notELF, []byte("\x7fELF, but no more"), 0o755); err != nil {
		t.Fatal(err)
	}
	badCall := elfProgram{
		class: elf.ELFCLASS64,
		code: func(uint32) []byte {
			return cat(movEAX(0x7fff), int80, movEDIEAX, negEDI, movEAX(x64Exit), syscallIns)
		},
	}
	for _, path := range []string{notELF, badCall.write(t, "badcall")} {
		why := runProbe(t, path, 0)
		if why == "" {
			t.Errorf("probe %s passed", filepath.Base(path))
		}
		t.Logf("%s: %s", filepath.Base(path), why)
	}
	elf32, int80 := probeIA32(t)
	t.Logf("on this machine: 32-bit executables: %q; int $0x80: %q (empty: works)", elf32, int80)
}

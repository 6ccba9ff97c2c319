package reader

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// verifierFailure is what cilium/ebpf returns when the verifier rejects a
// program: n log lines, the reason last.
func verifierFailure(n int) error {
	log := make([]string, 0, n+1)
	for i := range n {
		log = append(log, fmt.Sprintf("%d: insn %d", i, i))
	}
	log = append(log, "")
	ve := &ebpf.VerifierError{Cause: unix.EINVAL, Log: log}
	return fmt.Errorf("program semundo_tasks: %w", ve)
}

func TestLoadErrorCarriesVerifierTail(t *testing.T) {
	err := loadError(verifierFailure(100))
	msg := err.Error()
	if !strings.Contains(msg, "\t(80 earlier lines omitted)\n\t80: insn 80\n") || !strings.HasSuffix(msg, "\t99: insn 99") {
		t.Errorf("error does not end with the log's last 20 lines and the omitted count:\n%s", msg)
	}
	if strings.Contains(msg, "79: insn 79") {
		t.Errorf("error carries more than the last 20 lines:\n%s", msg)
	}
	if lines := strings.Count(msg, "\n"); lines != verifierTailLines+1 {
		t.Errorf("error has %d line breaks, want %d:\n%s", lines, verifierTailLines+1, msg)
	}
	var ve *ebpf.VerifierError
	if !errors.As(err, &ve) || len(ve.Log) != 101 || errors.Is(err, ErrNotSupported) || errors.Is(err, ErrPermission) {
		t.Errorf("error no longer carries the verifier's error with its log, or reads as a missing feature or privilege: %v", err)
	}
}

// TestLoadErrorVerifierEACCES: the verifier refuses some programs with
// EACCES; with its log that is a rejection, not a missing privilege (nor a
// missing feature, which tests would skip for). The
// same errno without a log (an unprivileged load) stays a permission error.
func TestLoadErrorVerifierEACCES(t *testing.T) {
	rejected := fmt.Errorf("program semundo_tasks: %w", &ebpf.VerifierError{Cause: unix.EACCES, Log: []string{"0: insn 0", "R1 invalid mem access 'scalar'"}})
	err := loadError(rejected)
	if errors.Is(err, ErrPermission) || errors.Is(err, ErrNotSupported) || strings.Contains(err.Error(), "needs root") || !strings.Contains(err.Error(), "verifier rejected it") || !strings.HasSuffix(err.Error(), "R1 invalid mem access 'scalar'") {
		t.Errorf("a verifier rejection with EACCES: %v; want the rejection and its reason, not a permission error", err)
	}
	unprivileged := fmt.Errorf("program semundo_tasks: %w", &ebpf.VerifierError{Cause: unix.EPERM})
	if err := loadError(unprivileged); !errors.Is(err, ErrPermission) {
		t.Errorf("an unprivileged load: %v; want ErrPermission", err)
	}
}

func TestLoadErrorShortVerifierLog(t *testing.T) {
	msg := loadError(verifierFailure(3)).Error()
	if strings.Contains(msg, "earlier lines omitted") || !strings.HasSuffix(msg, "lines:\n\t0: insn 0\n\t1: insn 1\n\t2: insn 2") {
		t.Errorf("a short log should come whole, without an omitted count:\n%s", msg)
	}
}

func TestLoadErrorWithoutVerifierLog(t *testing.T) {
	msg := loadError(errors.New("map records: no space")).Error()
	if msg != "load BPF iterator: map records: no space" {
		t.Errorf("got %q", msg)
	}
}

func TestWriteVerifierLogWritesWholeLog(t *testing.T) {
	var buf bytes.Buffer
	writeVerifierLog(&buf, verifierFailure(100))
	for _, want := range []string{"0: insn 0\n", "50: insn 50\n", "99: insn 99\n"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("the written log lacks %q:\n%s", want, buf.String())
		}
	}
	buf.Reset()
	writeVerifierLog(&buf, errors.New("not a verifier error"))
	if buf.Len() != 0 {
		t.Errorf("wrote %q for an error that carries no log", buf.String())
	}
}

// TestWaiterLoadsChained checks the compiled waiter check of both objects
// (waiters.h, zero_of) for its ordering chain: each AND with 0 must take a
// register the program loaded, not a constant the compiler knew. Six
// links: on_rq to on_cpu to the switch count before the reads, the count to
// the first stack read, and the fold of the stack's values to on_rq to
// on_cpu to the count after them. A compiler that sees the value (a test of
// it first, as a first version had) loads 0 into the register just before,
// and the chain silently ends.
func TestWaiterLoadsChained(t *testing.T) {
	for _, c := range []struct {
		object, prog string
		load         func() (*ebpf.CollectionSpec, error)
	}{
		{"iter_bpfel.o", "semundo_tasks", loadIter},
		{"openiter_bpfel.o", "semundo_scan", loadOpeniter},
	} {
		spec, err := c.load()
		if err != nil {
			t.Fatal(err)
		}
		prog := spec.Programs[c.prog]
		if prog == nil {
			t.Fatalf("no program %s in %s", c.prog, c.object)
		}
		insns := prog.Instructions
		chained, constant := 0, 0
		for i, ins := range insns {
			if ins.OpCode.Class() != asm.ALU64Class || ins.OpCode.ALUOp() != asm.And || ins.OpCode.Source() != asm.ImmSource || ins.Constant != 0 {
				continue
			}
			if i == 0 {
				t.Fatalf("%s starts with an AND with 0", c.prog)
			}
			prev := insns[i-1]
			if prev.OpCode.Class() == asm.ALU64Class && prev.OpCode.ALUOp() == asm.Mov && prev.OpCode.Source() == asm.ImmSource && prev.Dst == ins.Dst {
				constant++
				continue
			}
			chained++
		}
		// One constant is expected: the first check depends on nothing.
		if chained != 6 || constant > 1 {
			t.Errorf("the waiter check of %s has %d ANDs with 0 of a loaded value and %d of a constant; want 6 and at most 1 (llvm-objdump -d reader/%s shows them)", c.object, chained, constant, c.object)
		}
	}
}

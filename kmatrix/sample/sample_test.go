package sample_test

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/semundo/semundo/internal/testenv"
)

// System V constants that golang.org/x/sys/unix lacks (linux/sem.h).
const (
	semUndo = 0x1000
	getPID  = 11
	getVal  = 12
)

type sembuf struct {
	num uint16
	op  int16
	flg int16
}

func TestMain(m *testing.M) {
	testenv.RunHelper(testenv.Helpers{"hold-undo": holdUndo})
	os.Exit(m.Run())
}

// holdUndo adds 1 with SEM_UNDO to semaphore 0 of the set in args[0], says
// "ready", and exits when its stdin closes, so the kernel's exit_sem takes
// the 1 back.
func holdUndo(args []string) int {
	id, err := strconv.Atoi(args[0])
	if err != nil {
		fmt.Fprintln(os.Stderr, "hold-undo: want a semaphore set id:", err)
		return 2
	}
	if err := semop(id, sembuf{num: 0, op: 1, flg: semUndo | unix.IPC_NOWAIT}); err != nil {
		fmt.Fprintln(os.Stderr, "hold-undo:", err)
		return 1
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	return 0
}

func semop(id int, ops ...sembuf) error {
	_, _, errno := unix.Syscall(unix.SYS_SEMOP, uintptr(id), uintptr(unsafe.Pointer(&ops[0])), uintptr(len(ops)))
	if errno != 0 {
		return fmt.Errorf("semop on set %d: %w", id, errno)
	}
	return nil
}

func semctl(t *testing.T, id, num, cmd int) int {
	t.Helper()
	r, _, errno := unix.Syscall6(unix.SYS_SEMCTL, uintptr(id), uintptr(num), uintptr(cmd), 0, 0, 0)
	if errno != 0 {
		t.Fatalf("semctl(%d, %d, %d): %v", id, num, cmd, errno)
	}
	return int(r)
}

// TestSemUndoInHelper has a re-executed copy of this binary take 1 with
// SEM_UNDO, then checks that the kernel gives it back when the helper exits.
func TestSemUndoInHelper(t *testing.T) {
	r, _, errno := unix.Syscall(unix.SYS_SEMGET, unix.IPC_PRIVATE, 1, unix.IPC_CREAT|0o600)
	if errno != 0 {
		testenv.Missing(t, "System V semaphores", fmt.Sprintf("semget: %v (CONFIG_SYSVIPC)", errno))
	}
	id := int(r)
	t.Cleanup(func() { _, _, _ = unix.Syscall(unix.SYS_SEMCTL, uintptr(id), 0, unix.IPC_RMID) })

	cmd := testenv.HelperCommand(t, "hold-undo", strconv.Itoa(id))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("helper said %q, %v; want ready", line, err)
	}
	if v := semctl(t, id, 0, getVal); v != 1 {
		t.Errorf("value with the helper holding it = %d, want 1", v)
	}
	if pid := semctl(t, id, 0, getPID); pid != cmd.Process.Pid {
		t.Errorf("sempid = %d, want the helper's pid %d", pid, cmd.Process.Pid)
	}
	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	if v := semctl(t, id, 0, getVal); v != 0 {
		t.Errorf("value after the helper exited = %d, want 0 (SEM_UNDO not applied)", v)
	}
}

// TestKernelRelease logs the release the tests run on and checks it is one
// semundo supports (>= 5.8).
func TestKernelRelease(t *testing.T) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		t.Fatal(err)
	}
	rel := unix.ByteSliceToString(u.Release[:])
	t.Logf("kernel release %s (in VM: %v)", rel, testenv.InVM())
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(b)); got != rel {
		t.Errorf("/proc/sys/kernel/osrelease = %q, uname = %q", got, rel)
	}
	if !testenv.KernelAtLeast(t, 5, 8) {
		t.Errorf("kernel %s is older than 5.8, which semundo needs", rel)
	}
}

// TestKernelBTF checks /sys/kernel/btf/vmlinux and that it describes the
// undo structures semundo's BPF reader walks, and logs semadj's shape.
func TestKernelBTF(t *testing.T) {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		testenv.Missing(t, "kernel BTF", err.Error()+" (CONFIG_DEBUG_INFO_BTF)")
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatal(err)
	}
	var undo *btf.Struct
	if err := spec.TypeByName("sem_undo", &undo); err != nil {
		t.Fatalf("struct sem_undo: %v", err)
	}
	var list *btf.Struct
	if err := spec.TypeByName("sem_undo_list", &list); err != nil {
		t.Fatalf("struct sem_undo_list: %v", err)
	}
	for _, m := range undo.Members {
		if m.Name != "semadj" {
			continue
		}
		switch ty := btf.UnderlyingType(m.Type).(type) {
		case *btf.Array:
			t.Logf("sem_undo.semadj is a flexible array (%d elements declared) at byte %d", ty.Nelems, m.Offset.Bytes())
		case *btf.Pointer:
			t.Logf("sem_undo.semadj is a pointer at byte %d", m.Offset.Bytes())
		default:
			t.Errorf("sem_undo.semadj has unexpected type %v", ty)
		}
		return
	}
	t.Errorf("struct sem_undo has no semadj member: %v", undo.Members)
}

// TestBPFMap creates an array map and reads back what it stored: the bpf
// syscall works.
func TestBPFMap(t *testing.T) {
	testenv.RequireRoot(t)
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 8, MaxEntries: 1})
	if errors.Is(err, ebpf.ErrNotSupported) {
		testenv.Missing(t, "bpf array maps", err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	want := uint64(os.Getpid())<<16 | 0xbeef
	if err := m.Put(uint32(0), want); err != nil {
		t.Fatal(err)
	}
	var got uint64
	if err := m.Lookup(uint32(0), &got); err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Errorf("map value = %#x, want %#x", got, want)
	}
}

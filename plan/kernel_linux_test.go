//go:build linux && (amd64 || arm64)

package plan

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/sysvsem"
)

// The plan package is pure, but its model of semop must match the kernel:
// these tests run the same calls on real sets (IPC_PRIVATE, owned by the
// test, no root needed) and compare.

const (
	ipcPrivate = 0
	ipcCreat   = 0o1000
	ipcRMID    = 0
	getAll     = 13
	setAll     = 17
)

// newSet creates a private set of n semaphores, removed when the test ends.
func newSet(t *testing.T, n int) int {
	t.Helper()
	id, _, errno := syscall.Syscall(syscall.SYS_SEMGET, ipcPrivate, uintptr(n), ipcCreat|0o600)
	if errno != 0 {
		t.Fatalf("semget(IPC_PRIVATE, %d): %v", n, errno)
	}
	t.Cleanup(func() {
		if _, _, errno := syscall.Syscall(syscall.SYS_SEMCTL, id, 0, ipcRMID); errno != 0 {
			t.Errorf("semctl(%d, IPC_RMID): %v", id, errno)
		}
	})
	return int(id)
}

func semop(id int, ops []Op) error {
	var p unsafe.Pointer
	if len(ops) > 0 {
		p = unsafe.Pointer(&ops[0])
	}
	_, _, errno := syscall.Syscall(syscall.SYS_SEMOP, uintptr(id), uintptr(p), uintptr(len(ops)))
	if errno != 0 {
		return errno
	}
	return nil
}

// setAllValues sets every value; like SETALL always, it also zeroes every
// process's adjustments for the set.
func setAllValues(id int, values []int) error {
	v := make([]uint16, len(values))
	for i, x := range values {
		v[i] = uint16(x)
	}
	_, _, errno := syscall.Syscall6(syscall.SYS_SEMCTL, uintptr(id), 0, setAll, uintptr(unsafe.Pointer(&v[0])), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func getAllValues(id, n int) ([]int, error) {
	v := make([]uint16, n)
	_, _, errno := syscall.Syscall6(syscall.SYS_SEMCTL, uintptr(id), 0, getAll, uintptr(unsafe.Pointer(&v[0])), 0, 0)
	if errno != 0 {
		return nil, errno
	}
	out := make([]int, n)
	for i, x := range v {
		out[i] = int(x)
	}
	return out, nil
}

// kernelSemopm reads SEMOPM, the third field of /proc/sys/kernel/sem.
func kernelSemopm(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/sem")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) != 4 {
		t.Fatalf("/proc/sys/kernel/sem: %q", b)
	}
	n, err := strconv.Atoi(f[2])
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// runCalls runs planned calls with semop, checking each against Apply.
func runCalls(id int, values []int, adj []int16, calls [][]Op, semopm int) error {
	for c, call := range calls {
		if err := Apply(values, adj, call, semopm); err != nil {
			return fmt.Errorf("call %d in the model: %w", c, err)
		}
		if err := semop(id, call); err != nil {
			return fmt.Errorf("call %d (%d ops) in the kernel: %w", c, len(call), err)
		}
	}
	return nil
}

// TestApplyMatchesKernel runs applyCases on real sets: same errno, same values.
func TestApplyMatchesKernel(t *testing.T) {
	t.Parallel()
	semopm := kernelSemopm(t)
	for _, c := range applyCases() {
		id := newSet(t, len(c.values))
		if err := setAllValues(id, c.values); err != nil {
			t.Fatalf("%s: SETALL: %v", c.name, err)
		}
		// Bring this process's adjustments to the case's starting point
		// (SETALL just zeroed them), using the planner itself.
		calls, err := Adjust(c.values, make([]int16, len(c.adj)), c.adj, semopm)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if err := runCalls(id, slices.Clone(c.values), make([]int16, len(c.adj)), calls, semopm); err != nil {
			t.Fatalf("%s: setting up adjustments %v: %v", c.name, c.adj, err)
		}
		kerr := semop(id, c.call)
		merr := Apply(slices.Clone(c.values), slices.Clone(c.adj), c.call, semopm)
		var ke syscall.Errno
		if kerr != nil && !errors.As(kerr, &ke) {
			t.Fatalf("%s: %v", c.name, kerr)
		}
		if ke != c.errno || (c.errno == 0) != (merr == nil) || (c.errno != 0 && !errors.Is(merr, c.errno)) {
			t.Errorf("%s: kernel: %v, Apply: %v, table: %v", c.name, kerr, merr, c.errno)
		}
		got, err := getAllValues(id, len(c.values))
		if err != nil {
			t.Fatal(err)
		}
		want := c.values
		if c.errno == 0 {
			want = c.after
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: kernel values %v, want %v", c.name, got, want)
		}
	}
	// E2BIG comes from the kernel's limit, before anything else.
	id := newSet(t, 1)
	call := make([]Op, semopm+1)
	for i := range call {
		call[i] = Op{Num: 0, Op: 1, Flg: nw}
	}
	if kerr, merr := semop(id, call), Apply([]int{0}, []int16{0}, call, semopm); !errors.Is(kerr, syscall.E2BIG) || !errors.Is(merr, syscall.E2BIG) {
		t.Errorf("%d ops: kernel %v, Apply %v; want E2BIG", len(call), kerr, merr)
	}
}

// planHelper names the testenv helper that runs a helperJob, given as
// JSON in its only argument.
const planHelper = "plan-job"

// helperJob is what the child process of TestPlanOnKernel does: plan and
// run 0 -> Cur, then Cur -> Want, on set Semid, then exit.
type helperJob struct {
	Semid, Semopm int
	Values        []int
	Cur, Want     []int16
}

func TestMain(m *testing.M) {
	testenv.RunHelper(testenv.Helpers{planHelper: func(args []string) int {
		if len(args) != 1 {
			fmt.Fprintln(os.Stderr, "helper: want one argument, the job")
			return 2
		}
		if err := runHelper(args[0]); err != nil {
			fmt.Fprintln(os.Stderr, "helper:", err)
			return 1
		}
		return 0
	}})
	os.Exit(m.Run())
}

// runHelper runs in the child: its undo list is its own (a new process),
// and the kernel applies it to the set when the child exits.
func runHelper(spec string) error {
	var j helperJob
	if err := json.Unmarshal([]byte(spec), &j); err != nil {
		return err
	}
	n := len(j.Values)
	adj := make([]int16, n)
	for phase, to := range [][]int16{j.Cur, j.Want} {
		calls, err := Adjust(j.Values, adj, to, j.Semopm)
		if err != nil {
			return err
		}
		if err := runCalls(j.Semid, slices.Clone(j.Values), slices.Clone(adj), calls, j.Semopm); err != nil {
			return fmt.Errorf("phase %d: %w", phase, err)
		}
		got, err := getAllValues(j.Semid, n)
		if err != nil {
			return err
		}
		if !slices.Equal(got, j.Values) {
			return fmt.Errorf("phase %d (%d calls): values changed", phase, len(calls))
		}
		copy(adj, to)
	}
	return nil
}

// TestPlanOnKernel checks planned adjustments end to end: a child process
// plans and runs 0 -> cur -> want with semop and exits; the kernel then
// adds each adjustment to its semaphore (clamped to [0, SEMVMX]), which the
// parent reads back. No other interface shows semadj without BPF.
func TestPlanOnKernel(t *testing.T) {
	t.Parallel()
	var j helperJob
	for _, v := range []int{0, 1, 16383, 16384, 32766, 32767} {
		for _, cur := range extremes {
			for _, want := range extremes {
				j.Values = append(j.Values, v)
				j.Cur = append(j.Cur, int16(cur))
				j.Want = append(j.Want, int16(want))
			}
		}
	}
	for _, semopm := range []int{kernelSemopm(t), 3} {
		t.Run(fmt.Sprintf("semopm%d", semopm), func(t *testing.T) {
			t.Parallel()
			j := j
			j.Semopm = semopm
			j.Semid = newSet(t, len(j.Values))
			if err := setAllValues(j.Semid, j.Values); err != nil {
				t.Fatal(err)
			}
			spec, err := json.Marshal(j)
			if err != nil {
				t.Fatal(err)
			}
			cmd := testenv.HelperCommand(t, planHelper, string(spec))
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := testenv.Run(t, cmd, "the plan helper"); err != nil {
				t.Fatalf("helper: %v: %s", err, out.Bytes())
			}
			got, err := getAllValues(j.Semid, len(j.Values))
			if err != nil {
				t.Fatal(err)
			}
			exact := 0
			for i, v := range j.Values {
				sum := v + int(j.Want[i])
				want := min(max(sum, 0), sysvsem.SemVMX)
				if got[i] != want {
					t.Errorf("semaphore %d: value %d, adjustment %d -> %d: after exit %d, want %d",
						i, v, j.Cur[i], j.Want[i], got[i], want)
				}
				if sum == want {
					exact++
				}
			}
			t.Logf("%d semaphores; %d show the exact adjustment at exit, the rest clamp", len(j.Values), exact)
		})
	}
}

package plan

import (
	"errors"
	"slices"
	"syscall"
	"testing"

	"github.com/semundo/semundo/sysvsem"
)

// applyCase is one semop call on a model state and the kernel's answer;
// the same table runs against the real kernel in kernel_linux_test.go.
type applyCase struct {
	name   string
	values []int
	adj    []int16
	call   []Op
	errno  syscall.Errno // 0: success
	after  []int         // values after success
}

const nw = sysvsem.NoWait
const un = sysvsem.Undo | sysvsem.NoWait

// applyCases need a set of 70 semaphores at most and adjustments the
// kernel can be brought to with a plan.
func applyCases() []applyCase {
	return []applyCase{
		{"pair raising first", []int{5}, []int16{0}, []Op{{Num: 0, Op: 3, Flg: nw}, {Num: 0, Op: -3, Flg: un}}, 0, []int{5}},
		{"pair lowering first", []int{5}, []int16{0}, []Op{{Num: 0, Op: -3, Flg: un}, {Num: 0, Op: 3, Flg: nw}}, 0, []int{5}},
		{"raising first past SEMVMX", []int{32767}, []int16{0}, []Op{{Num: 0, Op: 1, Flg: nw}, {Num: 0, Op: -1, Flg: un}}, syscall.ERANGE, nil},
		{"lowering first below 0", []int{0}, []int16{0}, []Op{{Num: 0, Op: -1, Flg: un}, {Num: 0, Op: 1, Flg: nw}}, syscall.EAGAIN, nil},
		{"adjustment past 32767", []int{100}, []int16{32767}, []Op{{Num: 0, Op: 1, Flg: nw}, {Num: 0, Op: -1, Flg: un}}, syscall.ERANGE, nil},
		{"adjustment past -32768", []int{100}, []int16{-32768}, []Op{{Num: 0, Op: -1, Flg: nw}, {Num: 0, Op: 1, Flg: un}}, syscall.ERANGE, nil},
		{"adjustment reaches 32767", []int{0}, []int16{32766}, []Op{{Num: 0, Op: 1, Flg: nw}, {Num: 0, Op: -1, Flg: un}}, 0, []int{0}},
		{"adjustment reaches -32768", []int{1}, []int16{-32767}, []Op{{Num: 0, Op: -1, Flg: nw}, {Num: 0, Op: 1, Flg: un}}, 0, []int{1}},
		{"largest single pair", []int{0}, []int16{-32768}, []Op{{Num: 0, Op: 32767, Flg: nw}, {Num: 0, Op: -32767, Flg: un}}, 0, []int{0}},
		{"wait for zero, not zero", []int{3}, []int16{0}, []Op{{Num: 0, Op: 0, Flg: nw}}, syscall.EAGAIN, nil},
		{"wait for zero, zero", []int{0}, []int16{0}, []Op{{Num: 0, Op: 0, Flg: nw}}, 0, []int{0}},
		{"running value", []int{10}, []int16{0}, []Op{{Num: 0, Op: 10, Flg: nw}, {Num: 0, Op: -20, Flg: nw}, {Num: 0, Op: 10, Flg: nw}}, 0, []int{10}},
		{"running value fails mid-way", []int{10}, []int16{0}, []Op{{Num: 0, Op: -10, Flg: nw}, {Num: 0, Op: -1, Flg: nw}, {Num: 0, Op: 11, Flg: nw}}, syscall.EAGAIN, nil},
		{"no duplicates: second op fails, first rolled back", []int{0, 0, 5}, []int16{0, 0, 0}, []Op{{Num: 2, Op: 1, Flg: nw}, {Num: 1, Op: -1, Flg: nw}}, syscall.EAGAIN, nil},
		{"no duplicates: both apply", []int{0, 4, 5}, []int16{0, 0, 0}, []Op{{Num: 2, Op: 1, Flg: nw}, {Num: 1, Op: -4, Flg: un}}, 0, []int{0, 0, 6}},
		{"0 and 64 look alike to dupsop", slices.Repeat([]int{1}, 70), make([]int16, 70), []Op{{Num: 0, Op: 1, Flg: nw}, {Num: 64, Op: -2, Flg: nw}}, syscall.EAGAIN, nil},
		{"value past SEMVMX after undo ops", []int{32000, 7}, []int16{0, 0}, []Op{{Num: 1, Op: -7, Flg: un}, {Num: 0, Op: 767, Flg: nw}, {Num: 0, Op: 1, Flg: nw}}, syscall.ERANGE, nil},
		{"sem_num past the set", []int{1, 1}, []int16{0, 0}, []Op{{Num: 0, Op: 1, Flg: nw}, {Num: 2, Op: 1, Flg: nw}}, syscall.EFBIG, nil},
		{"no ops", []int{1}, []int16{0}, nil, syscall.EINVAL, nil},
	}
}

func TestApply(t *testing.T) {
	t.Parallel()
	for _, c := range applyCases() {
		values, adj := slices.Clone(c.values), slices.Clone(c.adj)
		err := Apply(values, adj, c.call, 500)
		if c.errno == 0 {
			if err != nil || !slices.Equal(values, c.after) {
				t.Errorf("%s: Apply = %v, values %v; want success, values %v", c.name, err, values, c.after)
			}
			continue
		}
		var oe *OpError
		if !errors.Is(err, c.errno) || !errors.As(err, &oe) {
			t.Errorf("%s: Apply = %v; want %v", c.name, err, c.errno)
		}
		if !slices.Equal(values, c.values) || !slices.Equal(adj, c.adj) {
			t.Errorf("%s: failed call changed the state to %v, %v", c.name, values, adj)
		}
	}
}

func TestApplyAdjustments(t *testing.T) {
	t.Parallel()
	values, adj := []int{5, 5}, []int16{0, 10}
	call := []Op{{Num: 0, Op: -3, Flg: un}, {Num: 0, Op: 3, Flg: nw}, {Num: 1, Op: 2, Flg: un}, {Num: 1, Op: -2, Flg: nw}}
	if err := Apply(values, adj, call, 0); err != nil {
		t.Fatal(err)
	}
	// A SEM_UNDO op of x moves semadj by -x.
	if !slices.Equal(values, []int{5, 5}) || !slices.Equal(adj, []int16{3, 8}) {
		t.Fatalf("after %v: values %v, adjustments %v; want [5 5], [3 8]", call, values, adj)
	}
}

func TestApplyLimits(t *testing.T) {
	t.Parallel()
	call := []Op{{Num: 0, Op: 1, Flg: nw}, {Num: 0, Op: -1, Flg: un}, {Num: 0, Op: 1, Flg: nw}}
	if err := Apply([]int{0}, []int16{0}, call, 2); !errors.Is(err, syscall.E2BIG) {
		t.Errorf("3 ops with semopm 2: %v, want E2BIG", err)
	}
	if err := Apply([]int{0}, []int16{0}, call, 3); err != nil {
		t.Errorf("3 ops with semopm 3: %v", err)
	}
	// Without IPC_NOWAIT the kernel would sleep.
	if err := Apply([]int{0}, []int16{0}, []Op{{Num: 0, Op: -1, Flg: 0}}, 0); !errors.Is(err, ErrWouldBlock) {
		t.Errorf("blocking decrement: %v, want ErrWouldBlock", err)
	}
	if err := Apply([]int{1}, []int16{0}, []Op{{Num: 0, Op: 0, Flg: sysvsem.Undo}}, 0); !errors.Is(err, ErrWouldBlock) {
		t.Errorf("blocking wait-for-zero: %v, want ErrWouldBlock", err)
	}
	if err := Apply([]int{1}, []int16{0, 0}, []Op{{Num: 0, Op: 1, Flg: 0}}, 0); !errors.Is(err, ErrSize) {
		t.Errorf("mismatched model: %v, want ErrSize", err)
	}
}

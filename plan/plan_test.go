package plan

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/semundo/semundo/sysvsem"
)

// extremes are the adjustments where off-by-one and sign mistakes live.
var extremes = []int{-32768, -32767, -16384, -16383, -1, 0, 1, 16383, 16384, 32767}

// checkSemaphore plans one change at one value and proves it in Apply:
// the call succeeds, the value ends unchanged, the adjustment ends at want,
// and the plan has the fewest pairs a pair plan can have.
func checkSemaphore(t *testing.T, num uint16, value, cur, want int) {
	t.Helper()
	ops, err := Semaphore(num, value, cur, want)
	if err != nil {
		t.Fatalf("Semaphore(%d, value %d, %d -> %d): %v", num, value, cur, want, err)
	}
	d := want - cur
	if d < 0 {
		d = -d
	}
	m := max(value, sysvsem.SemVMX-value)
	if wantOps := 2 * ((d + m - 1) / m); len(ops) != wantOps {
		t.Fatalf("value %d, %d -> %d: %d ops, want %d: %v", value, cur, want, len(ops), wantOps, ops)
	}
	for k := 0; k < len(ops); k += 2 {
		a, b := ops[k], ops[k+1]
		for _, o := range []Op{a, b} {
			if o.Op == 0 || o.Num != num || o.Flg&sysvsem.NoWait == 0 || o.Flg&^(sysvsem.NoWait|sysvsem.Undo) != 0 {
				t.Fatalf("value %d, %d -> %d: bad op %+v in %v", value, cur, want, o, ops)
			}
		}
		if a.Op != -b.Op || (a.Flg&sysvsem.Undo != 0) == (b.Flg&sysvsem.Undo != 0) {
			t.Fatalf("value %d, %d -> %d: ops %d, %d are not a pair: %v", value, cur, want, k, k+1, ops)
		}
	}
	if len(ops) == 0 {
		return // no change, no call
	}
	values := make([]int, int(num)+1)
	adj := make([]int16, int(num)+1)
	values[num], adj[num] = value, int16(cur)
	if err := Apply(values, adj, ops, 0); err != nil {
		t.Fatalf("value %d, %d -> %d: plan %v fails: %v", value, cur, want, ops, err)
	}
	if values[num] != value || int(adj[num]) != want {
		t.Fatalf("value %d, %d -> %d: plan %v ends at value %d, adjustment %d", value, cur, want, ops, values[num], adj[num])
	}
}

// TestSemaphoreExhaustive runs every value 0..32767 against the extreme
// adjustments, the step boundaries of that value and random pairs.
func TestSemaphoreExhaustive(t *testing.T) {
	t.Parallel()
	const chunk = 4096
	for lo := 0; lo <= sysvsem.SemVMX; lo += chunk {
		t.Run(fmt.Sprintf("values%d-%d", lo, lo+chunk-1), func(t *testing.T) {
			t.Parallel()
			cases := 0
			for v := lo; v < lo+chunk; v++ {
				r := rand.New(rand.NewPCG(uint64(v), 0x5e3))
				for _, cur := range extremes {
					for _, want := range extremes {
						checkSemaphore(t, 0, v, cur, want)
						cases++
					}
				}
				// Around each multiple of this value's largest step, from
				// both ends of the range.
				m := max(v, sysvsem.SemVMX-v)
				for k := 1; k <= 4; k++ {
					for _, d := range []int{k*m - 1, k * m, k*m + 1} {
						if d > 0 && d <= MaxAdj-MinAdj {
							checkSemaphore(t, 0, v, MinAdj, MinAdj+d)
							checkSemaphore(t, 0, v, MaxAdj, MaxAdj-d)
							cases += 2
						}
					}
				}
				for range 16 {
					checkSemaphore(t, 0, v, r.IntN(65536)+MinAdj, r.IntN(65536)+MinAdj)
					cases++
				}
				// A pair one bigger than the planner's step fails in both
				// orders, so no pair plan can use fewer pairs.
				if m < sysvsem.SemVMX {
					s := int16(m + 1)
					for _, call := range [][]Op{
						{{Num: 0, Op: s, Flg: sysvsem.NoWait}, {Num: 0, Op: -s, Flg: sysvsem.Undo | sysvsem.NoWait}},
						{{Num: 0, Op: -s, Flg: sysvsem.Undo | sysvsem.NoWait}, {Num: 0, Op: s, Flg: sysvsem.NoWait}},
						{{Num: 0, Op: -s, Flg: sysvsem.NoWait}, {Num: 0, Op: s, Flg: sysvsem.Undo | sysvsem.NoWait}},
						{{Num: 0, Op: s, Flg: sysvsem.Undo | sysvsem.NoWait}, {Num: 0, Op: -s, Flg: sysvsem.NoWait}},
					} {
						if err := Apply([]int{v}, []int16{0}, call, 0); err == nil {
							t.Fatalf("value %d: pair %v of size maxStep+1 works", v, call)
						}
					}
				}
			}
			t.Logf("%d (value, current, wanted) cases planned and simulated", cases)
		})
	}
}

func TestSemaphoreNum(t *testing.T) {
	t.Parallel()
	for _, num := range []uint16{0, 1, 255, 31999} {
		checkSemaphore(t, num, 5, -32768, 32767)
		checkSemaphore(t, num, 32767, 100, -100)
	}
}

func TestSemaphoreNoChange(t *testing.T) {
	t.Parallel()
	for _, v := range []int{0, 1, 16383, 16384, 32767} {
		for _, a := range extremes {
			if ops, err := Semaphore(3, v, a, a); ops != nil || err != nil {
				t.Fatalf("Semaphore(value %d, %d -> %d) = %v, %v; want no ops", v, a, a, ops, err)
			}
		}
	}
}

// TestPlanNeverHoldsZeroOp checks Set's output as well (Semaphore's is
// checked in the exhaustive test): a zero op would wait for zero.
func TestPlanNeverHoldsZeroOp(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		values, cur, want := randomSet(r, 64)
		for _, semopm := range []int{2, 3, 8, 500} {
			calls, err := Adjust(values, cur, want, semopm)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range calls {
				for _, o := range c {
					if o.Op == 0 {
						t.Fatalf("zero op %+v in %v", o, c)
					}
				}
			}
		}
	}
}

func TestSemaphoreErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		value, cur, want int
		what             string
	}{
		{-1, 0, 1, "value"},
		{32768, 0, 1, "value"},
		{0, -32769, 0, "current adjustment"},
		{0, 32768, 0, "current adjustment"},
		{0, 0, -32769, "wanted adjustment"},
		{0, 0, 32768, "wanted adjustment"},
		{-5, 7, 7, "value"}, // checked even when nothing changes
	}
	for _, tt := range tests {
		ops, err := Semaphore(9, tt.value, tt.cur, tt.want)
		var re *RangeError
		if ops != nil || !errors.Is(err, ErrRange) || !errors.As(err, &re) || re.What != tt.what || re.Num != 9 {
			t.Errorf("Semaphore(9, %d, %d, %d) = %v, %v; want a %s RangeError", tt.value, tt.cur, tt.want, ops, err, tt.what)
			continue
		}
		if msg := err.Error(); strings.Contains(msg, "\n") || !strings.Contains(msg, "semaphore 9") {
			t.Errorf("message %q: want one line naming semaphore 9", msg)
		}
	}
}

// randomSet makes a set where a third of the semaphores keep their
// adjustment, a third change a little and a third change anywhere, with
// values that include both ends of the range.
func randomSet(r *rand.Rand, n int) (values []int, cur, want []int16) {
	values = make([]int, n)
	cur = make([]int16, n)
	want = make([]int16, n)
	for i := range n {
		switch r.IntN(4) {
		case 0:
			values[i] = 0
		case 1:
			values[i] = sysvsem.SemVMX
		default:
			values[i] = r.IntN(sysvsem.SemVMX + 1)
		}
		cur[i] = int16(r.IntN(65536) + MinAdj)
		switch r.IntN(3) {
		case 0:
			want[i] = cur[i]
		case 1:
			want[i] = int16(max(MinAdj, min(MaxAdj, int(cur[i])+r.IntN(21)-10)))
		default:
			want[i] = int16(r.IntN(65536) + MinAdj)
		}
	}
	return values, cur, want
}

// checkSet plans a set and checks the chunking rules and the result.
func checkSet(t *testing.T, values []int, cur, want []int16, semopm int) {
	t.Helper()
	calls, err := Adjust(values, cur, want, semopm)
	var flat []Op
	units := make([]int, len(values)) // ops per semaphore
	for i := range values {
		ops, err := Semaphore(uint16(i), values[i], int(cur[i]), int(want[i]))
		if err != nil {
			t.Fatal(err)
		}
		units[i] = len(ops)
		flat = append(flat, ops...)
	}
	if len(flat) == 0 {
		if calls != nil || err != nil {
			t.Fatalf("semopm %d, nothing changes: Set = %v, %v; want nothing", semopm, calls, err)
		}
		return
	}
	if semopm < 2 {
		if !errors.Is(err, ErrSemopm) {
			t.Fatalf("semopm %d: Set = %d calls, %v; want ErrSemopm", semopm, len(calls), err)
		}
		return
	}
	if err != nil {
		t.Fatalf("semopm %d: Set: %v", semopm, err)
	}
	// The calls are the semaphores' own plans, in order, cut into pieces.
	if got := slices.Concat(calls...); !slices.Equal(got, flat) {
		t.Fatalf("semopm %d: calls hold other ops than the semaphores' plans", semopm)
	}
	if len(flat) <= semopm && len(calls) != 1 {
		t.Fatalf("semopm %d: %d ops fit one call but Set made %d", semopm, len(flat), len(calls))
	}
	callOf := map[uint16]int{} // semaphore -> the call holding its first op
	for c, call := range calls {
		if len(call) == 0 || len(call) > semopm || len(call)%2 != 0 || cap(call) != len(call) {
			t.Fatalf("semopm %d: call %d has %d ops (cap %d)", semopm, c, len(call), cap(call))
		}
		// Greedy: a call is cut only when the next unit (at most 8 ops)
		// does not fit.
		if c < len(calls)-1 && len(call) < semopm-7 {
			t.Fatalf("semopm %d: call %d holds only %d ops", semopm, c, len(call))
		}
		for k := 0; k < len(call); k += 2 {
			if call[k].Num != call[k+1].Num || call[k].Op != -call[k+1].Op {
				t.Fatalf("semopm %d: call %d cuts a pair at op %d", semopm, c, k)
			}
			n := call[k].Num
			if first, seen := callOf[n]; !seen {
				callOf[n] = c
			} else if first != c && units[n] <= semopm {
				t.Fatalf("semopm %d: semaphore %d's %d ops are spread over calls %d and %d", semopm, n, units[n], first, c)
			}
		}
	}
	for i := range values {
		if _, has := callOf[uint16(i)]; has != (cur[i] != want[i]) {
			t.Fatalf("semaphore %d (adjustment %d -> %d) has ops: %v", i, cur[i], want[i], has)
		}
	}
	// Run the calls in order: each succeeds and leaves every value as it was.
	vals, adj := slices.Clone(values), slices.Clone(cur)
	for c, call := range calls {
		if err := Apply(vals, adj, call, semopm); err != nil {
			t.Fatalf("semopm %d: call %d fails: %v", semopm, c, err)
		}
		for _, o := range call {
			if vals[o.Num] != values[o.Num] {
				t.Fatalf("semopm %d: call %d changed the value of semaphore %d", semopm, c, o.Num)
			}
		}
	}
	if !slices.Equal(vals, values) || !slices.Equal(adj, want) {
		t.Fatalf("semopm %d: calls end at values %v, adjustments %v; want %v, %v", semopm, vals, adj, values, want)
	}
}

func TestSetChunking(t *testing.T) {
	t.Parallel()
	semopms := []int{1, 2, 3, 4, 5, 7, 8, 9, 32, 500, 1 << 20}
	for _, n := range []int{1, 2, 250, 32000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			r := rand.New(rand.NewPCG(uint64(n), 1))
			values, cur, want := randomSet(r, n)
			for _, semopm := range semopms {
				checkSet(t, values, cur, want, semopm)
			}
		})
	}
	t.Run("unchanged", func(t *testing.T) {
		t.Parallel()
		v := []int{0, 5, sysvsem.SemVMX}
		a := []int16{-1, 0, 32767}
		for _, semopm := range semopms {
			checkSet(t, v, a, a, semopm)
		}
	})
	t.Run("one semaphore too big for a call", func(t *testing.T) {
		t.Parallel()
		// 4 pairs at value 16383 (step 16384), then small ones around it.
		v := []int{7, 16383, 7, 16384}
		cur := []int16{0, -32768, 0, 1}
		want := []int16{1, 32767, -1, -1}
		for _, semopm := range semopms {
			checkSet(t, v, cur, want, semopm)
		}
		calls, err := Adjust(v, cur, want, 5)
		if err != nil {
			t.Fatal(err)
		}
		// [s0 pair, s1 pair] [s1 pair, s1 pair] [s1 pair, s2 pair] [s3 pair]
		if len(calls) != 4 {
			t.Fatalf("semopm 5: %d calls, want 4: %v", len(calls), calls)
		}
	})
	t.Run("everything in one call", func(t *testing.T) {
		t.Parallel()
		r := rand.New(rand.NewPCG(9, 9))
		values, cur, want := randomSet(r, 250)
		calls, err := Adjust(values, cur, want, 1<<20)
		if err != nil || len(calls) != 1 {
			t.Fatalf("Set = %d calls, %v; want one call", len(calls), err)
		}
	})
}

func TestSetErrors(t *testing.T) {
	t.Parallel()
	ok := []int{1, 2}
	a := []int16{0, 0}
	b := []int16{1, 1}
	tests := []struct {
		name        string
		values      []int
		cur, want   []int16
		semopm      int
		kind        error
		mentionsNum string
	}{
		{"short cur", ok, a[:1], b, 500, ErrSize, ""},
		{"long want", ok, a, []int16{1, 1, 1}, 500, ErrSize, ""},
		{"too many semaphores", make([]int, MaxSems+1), make([]int16, MaxSems+1), make([]int16, MaxSems+1), 500, ErrSize, ""},
		{"semopm zero", ok, a, b, 0, ErrSemopm, ""},
		{"semopm negative", ok, a, a, -3, ErrSemopm, ""},
		{"semopm one", ok, a, b, 1, ErrSemopm, ""},
		{"bad value", []int{1, 40000}, a, b, 500, ErrRange, "semaphore 1"},
		{"bad value, nothing changes", []int{-1, 0}, a, a, 500, ErrRange, "semaphore 0"},
	}
	for _, tt := range tests {
		calls, err := Adjust(tt.values, tt.cur, tt.want, tt.semopm)
		if calls != nil || !errors.Is(err, tt.kind) || !strings.Contains(err.Error(), tt.mentionsNum) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: Set = %v, %v; want %v", tt.name, calls, err, tt.kind)
		}
	}
	// Exactly MaxSems semaphores is fine.
	n := MaxSems
	if _, err := Adjust(make([]int, n), make([]int16, n), slices.Repeat([]int16{1}, n), 500); err != nil {
		t.Errorf("Set of %d semaphores: %v", n, err)
	}
}

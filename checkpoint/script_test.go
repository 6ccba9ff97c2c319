package checkpoint_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// A script is the seeded workload of one round-trip trial: S sets of
// various sizes (some with keys, some IPC_PRIVATE, with initial values), P
// worker processes, and a sequence of semops, with and without SEM_UNDO,
// among them ops that block until a later op of another worker satisfies
// them. genScript also runs the script on a model of the kernel, so the
// trial knows what the sets and lists must hold at the checkpoint and what
// the values must be once every worker has exited.
type script struct {
	Seed    uint64
	Sets    []setSpec
	Workers int
	Steps   []step

	// Model results. Vals[s][n] are the values at the quiescent point
	// (the checkpoint), Adj[w][s] worker w's adjustments for set s (nil:
	// no entry; an entry exists once the worker made a SEM_UNDO op on the
	// set, even when it sums to zeros), Final[s][n] the values after every
	// worker has exited.
	Vals  [][]int
	Adj   [][][]int
	Final [][]int
}

// setSpec is one set of a script.
type setSpec struct {
	Nsems int
	Key   int32 // 0: IPC_PRIVATE
	Mode  uint32
	Init  []int
}

// sop is one semop of one worker on one semaphore.
type sop struct {
	W, Set, Num, Val int
	Undo             bool
}

func (o sop) String() string {
	u := ""
	if o.Undo {
		u = " SEM_UNDO"
	}
	return fmt.Sprintf("w%d set%d[%d] %+d%s", o.W, o.Set, o.Num, o.Val, u)
}

// step is one op, or (Release set) an op that blocks, then Release by
// another worker which lets it complete.
type step struct {
	Op      sop
	Release *sop
}

func (s step) String() string {
	if s.Release == nil {
		return s.Op.String()
	}
	return fmt.Sprintf("%v blocks; %v releases it", s.Op, *s.Release)
}

// String prints the script, for a failure message.
func (sc *script) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "seed %d: %d workers, sets", sc.Seed, sc.Workers)
	for i, s := range sc.Sets {
		fmt.Fprintf(&b, " set%d(nsems %d key %#x init %v)", i, s.Nsems, uint32(s.Key), s.Init)
	}
	for i, st := range sc.Steps {
		fmt.Fprintf(&b, "\n  %2d: %v", i, st)
	}
	return b.String()
}

// model is the kernel's state as the generator sees it.
type model struct {
	vals [][]int
	adj  [][][]int // [worker][set] -> adjustments, nil: no entry
}

func (m *model) apply(o sop, nsems int) {
	m.vals[o.Set][o.Num] += o.Val
	if o.Undo {
		if m.adj[o.W][o.Set] == nil {
			m.adj[o.W][o.Set] = make([]int, nsems)
		}
		m.adj[o.W][o.Set][o.Num] -= o.Val
	}
}

// ok says whether no exit order can clamp a value: the kernel clamps
// value+adjustment at 0 when a process exits, which would make the final
// values depend on the order the workers die in. With every value at
// least the sum of the negative adjustments on it, no order reaches below
// 0 (and values stay far below SEMVMX).
func (m *model) ok() bool {
	for s := range m.vals {
		for n, v := range m.vals[s] {
			for w := range m.adj {
				if a := m.adj[w][s]; a != nil && a[n] < 0 {
					v += a[n]
				}
			}
			if v < 0 {
				return false
			}
		}
	}
	return true
}

func (m *model) clone() *model {
	c := &model{vals: make([][]int, len(m.vals)), adj: make([][][]int, len(m.adj))}
	for s := range m.vals {
		c.vals[s] = slices.Clone(m.vals[s])
	}
	for w := range m.adj {
		c.adj[w] = make([][]int, len(m.adj[w]))
		for s, a := range m.adj[w] {
			c.adj[w][s] = slices.Clone(a)
		}
	}
	return c
}

// genScript builds the script of a seed; the same seed always gives the
// same script.
func genScript(seed uint64) *script {
	rng := rand.New(rand.NewPCG(seed, 0x5e3a0d0))
	sc := &script{Seed: seed, Workers: 2 + rng.IntN(4)}
	nsets := 1 + rng.IntN(4)
	keys := map[int32]bool{}
	m := &model{}
	for range nsets {
		s := setSpec{Nsems: 1 + rng.IntN(8), Mode: []uint32{0o600, 0o640, 0o666}[rng.IntN(3)]}
		if rng.IntN(2) == 0 {
			for s.Key == 0 || keys[s.Key] {
				s.Key = int32(rng.Uint32())
			}
			keys[s.Key] = true
		}
		for range s.Nsems {
			s.Init = append(s.Init, rng.IntN(3))
		}
		sc.Sets = append(sc.Sets, s)
		m.vals = append(m.vals, slices.Clone(s.Init))
	}
	m.adj = make([][][]int, sc.Workers)
	for w := range m.adj {
		m.adj[w] = make([][]int, nsets)
	}
	val := func() int { // -3..3, never 0
		v := 1 + rng.IntN(3)
		if rng.IntN(2) == 0 {
			v = -v
		}
		return v
	}
	nops := 15 + rng.IntN(16)
	for range nops {
		block := rng.IntN(4) == 0
		var st step
		found := false
		for try := 0; try < 50 && !found; try++ {
			o := sop{W: rng.IntN(sc.Workers), Set: rng.IntN(nsets), Undo: rng.IntN(2) == 0}
			o.Num = rng.IntN(sc.Sets[o.Set].Nsems)
			cur := m.vals[o.Set][o.Num]
			nsems := sc.Sets[o.Set].Nsems
			c := m.clone()
			if block {
				// An op that must wait: take more than the value holds.
				if cur > 2 {
					continue
				}
				o.Val = -(cur + 1 + rng.IntN(3-cur))
				// Another worker adds enough for it to go through.
				r := sop{W: (o.W + 1 + rng.IntN(sc.Workers-1)) % sc.Workers, Set: o.Set, Num: o.Num, Undo: rng.IntN(2) == 0}
				need := -(cur + o.Val)
				r.Val = need + rng.IntN(3-need+1)
				c.apply(r, nsems)
				c.apply(o, nsems)
				if c.ok() {
					st, found = step{Op: o, Release: &r}, true
				}
				continue
			}
			o.Val = val()
			if cur+o.Val < 0 {
				continue
			}
			c.apply(o, nsems)
			if c.ok() {
				st, found = step{Op: o}, true
			}
		}
		if !found {
			// An increment without SEM_UNDO keeps every rule.
			o := sop{W: rng.IntN(sc.Workers), Set: rng.IntN(nsets), Val: 1 + rng.IntN(3)}
			o.Num = rng.IntN(sc.Sets[o.Set].Nsems)
			st = step{Op: o}
		}
		if st.Release != nil {
			m.apply(*st.Release, sc.Sets[st.Op.Set].Nsems)
		}
		m.apply(st.Op, sc.Sets[st.Op.Set].Nsems)
		sc.Steps = append(sc.Steps, st)
	}
	sc.Vals, sc.Adj = m.vals, m.adj
	sc.Final = make([][]int, nsets)
	for s := range m.vals {
		sc.Final[s] = slices.Clone(m.vals[s])
		for w := range m.adj {
			if a := m.adj[w][s]; a != nil {
				for n := range a {
					sc.Final[s][n] += a[n]
				}
			}
		}
	}
	return sc
}

// TestScript checks the generator itself: deterministic per seed, every
// rule kept (values never negative, no exit order clamps, adjustments and
// values far inside their ranges), and a fair share of blocking ops and
// SEM_UNDO entries across seeds.
func TestScript(t *testing.T) {
	blocking, entries, zeroEntries := 0, 0, 0
	for seed := range uint64(2000) {
		sc := genScript(seed)
		if again := genScript(seed); again.String() != sc.String() {
			t.Fatalf("seed %d: two scripts differ:\n%v\n%v", seed, sc, again)
		}
		// Replay on a fresh model, checking the value before each op.
		m := &model{adj: make([][][]int, sc.Workers)}
		for _, s := range sc.Sets {
			m.vals = append(m.vals, slices.Clone(s.Init))
		}
		for w := range m.adj {
			m.adj[w] = make([][]int, len(sc.Sets))
		}
		for i, st := range sc.Steps {
			o, n := st.Op, sc.Sets[st.Op.Set].Nsems
			if o.Val == 0 || o.Val < -3 || o.Val > 3 {
				t.Fatalf("seed %d step %d: value %d outside -3..3 or 0", seed, i, o.Val)
			}
			blocks := m.vals[o.Set][o.Num]+o.Val < 0
			if blocks != (st.Release != nil) {
				t.Fatalf("seed %d step %d (%v): blocks=%v but release=%v", seed, i, st, blocks, st.Release != nil)
			}
			if st.Release != nil {
				r := *st.Release
				if r.W == o.W || r.Set != o.Set || r.Num != o.Num || r.Val <= 0 || m.vals[o.Set][o.Num]+r.Val+o.Val < 0 {
					t.Fatalf("seed %d step %d: bad release %v", seed, i, st)
				}
				m.apply(r, n)
				blocking++
			}
			m.apply(o, n)
			if !m.ok() {
				t.Fatalf("seed %d step %d (%v): an exit order could clamp a value", seed, i, st)
			}
		}
		for s := range m.vals {
			if !slices.Equal(m.vals[s], sc.Vals[s]) {
				t.Fatalf("seed %d: replayed values %v, script says %v", seed, m.vals[s], sc.Vals[s])
			}
			for n := range sc.Final[s] {
				if sc.Final[s][n] < 0 || sc.Final[s][n] > 1000 || sc.Vals[s][n] > 1000 {
					t.Fatalf("seed %d: value out of the expected range: %v %v", seed, sc.Vals, sc.Final)
				}
			}
		}
		for w := range sc.Adj {
			for _, a := range sc.Adj[w] {
				if a == nil {
					continue
				}
				entries++
				if !slices.ContainsFunc(a, func(x int) bool { return x != 0 }) {
					zeroEntries++
				}
			}
		}
	}
	t.Logf("2000 scripts: %d blocking ops, %d undo entries (%d all zero)", blocking, entries, zeroEntries)
	if blocking < 1000 || entries < 2000 || zeroEntries == 0 {
		t.Errorf("the scripts exercise too little: %d blocking ops, %d entries, %d all-zero entries", blocking, entries, zeroEntries)
	}
}

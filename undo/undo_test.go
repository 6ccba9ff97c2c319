package undo

import (
	"slices"
	"testing"
)

func TestSorted(t *testing.T) {
	t.Parallel()
	l := List{{9, []int16{1}}, {2, []int16{2, 3}}, {5, nil}, {2, []int16{4}}}
	s := l.Sorted()
	want := []int32{2, 2, 5, 9}
	for i, e := range s {
		if e.Semid != want[i] {
			t.Fatalf("Sorted semids = %v, want %v", s, want)
		}
	}
	// Stable for equal semids, and a deep copy.
	if s[0].Adj[0] != 2 || s[1].Adj[0] != 4 {
		t.Fatalf("Sorted is not stable: %v", s)
	}
	s[0].Adj[0] = 100
	if l[1].Adj[0] != 2 || l[0].Semid != 9 {
		t.Fatal("Sorted shares memory with or reorders its input")
	}
	if List(nil).Sorted() != nil {
		t.Fatal("Sorted(nil) is not nil")
	}
}

func TestLookup(t *testing.T) {
	t.Parallel()
	l := List{{9, []int16{1}}, {2, []int16{2, 3}}}
	if e, ok := l.Lookup(2); !ok || e.Semid != 2 || !slices.Equal(e.Adj, []int16{2, 3}) {
		t.Fatalf("Lookup(2) = %v, %v", e, ok)
	}
	if e, ok := l.Lookup(3); ok {
		t.Fatalf("Lookup(3) = %v, found", e)
	}
	if _, ok := List(nil).Lookup(0); ok {
		t.Fatal("Lookup in nil list found something")
	}
}

func TestEqual(t *testing.T) {
	t.Parallel()
	a := List{{1, []int16{1, 2}}, {2, []int16{0}}}
	tests := []struct {
		name string
		a, b List
		want bool
	}{
		{"same", a, List{{1, []int16{1, 2}}, {2, []int16{0}}}, true},
		{"other order", a, List{{2, []int16{0}}, {1, []int16{1, 2}}}, true},
		{"nil and empty", nil, List{}, true},
		{"nil and empty Adj", List{{1, nil}}, List{{1, []int16{}}}, true},
		{"different value", a, List{{1, []int16{1, 3}}, {2, []int16{0}}}, false},
		{"different size", a, List{{1, []int16{1, 2, 0}}, {2, []int16{0}}}, false},
		{"different semid", a, List{{1, []int16{1, 2}}, {3, []int16{0}}}, false},
		{"missing entry", a, a[:1], false},
		{"duplicates", List{{1, []int16{1}}, {1, []int16{2}}}, List{{1, []int16{2}}, {1, []int16{1}}}, true},
		{"duplicates differ", List{{1, []int16{1}}, {1, []int16{1}}}, List{{1, []int16{1}}, {1, []int16{2}}}, false},
	}
	for _, tt := range tests {
		if got := tt.a.Equal(tt.b); got != tt.want {
			t.Errorf("%s: Equal = %v, want %v", tt.name, got, tt.want)
		}
		if got := tt.b.Equal(tt.a); got != tt.want {
			t.Errorf("%s: Equal (swapped) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestParseAdjCapped(t *testing.T) {
	t.Parallel()
	l, err := Parse([]byte("1 1 2\n2 3 4\n"))
	if err != nil {
		t.Fatal(err)
	}
	// The entries share a backing array; growing one must not touch the next.
	_ = append(l[0].Adj, 99)
	if !slices.Equal(l[1].Adj, []int16{3, 4}) {
		t.Fatalf("appending to entry 0 changed entry 1 to %v", l[1].Adj)
	}
}

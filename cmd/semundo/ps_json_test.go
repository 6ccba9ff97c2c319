package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/semundo/semundo/reader"
)

// TestPsJSONEncoder: ps --json's hand-written encoder prints, byte for
// byte, what encoding/json printed before it (the README's schema,
// indented by two spaces): empty and nil arrays, extreme values, and
// command names that need escaping.
func TestPsJSONEncoder(t *testing.T) {
	comms := []string{"sleep", "", `a"b\c`, "<x>&y", "tab\there\n", "\x01\x1f", "caf\xc3\xa9", "bad\xff\xfe", "\u2028\u2029", "日本語"}
	rnd := rand.New(rand.NewPCG(1, 2))
	var cases [][]reader.List
	cases = append(cases, nil, []reader.List{}, []reader.List{{}})
	for range 50 {
		var lists []reader.List
		for range rnd.IntN(4) {
			l := reader.List{IPCNS: rnd.Uint32()}
			for range rnd.IntN(3) {
				p := reader.Process{PID: rnd.IntN(1 << 22), Comm: comms[rnd.IntN(len(comms))]}
				if rnd.IntN(4) > 0 {
					p.TIDs = []int{}
					for range rnd.IntN(3) {
						p.TIDs = append(p.TIDs, rnd.IntN(1<<22))
					}
				}
				l.Processes = append(l.Processes, p)
			}
			for range rnd.IntN(3) {
				e := reader.Entry{Semid: rnd.Int32() - 1<<30, Key: rnd.Int32() - 1<<30}
				if rnd.IntN(5) > 0 {
					e.Adj = []int16{}
					for range rnd.IntN(4) {
						e.Adj = append(e.Adj, int16(rnd.IntN(1<<16)-1<<15))
					}
					if rnd.IntN(4) == 0 {
						e.Adj = append(e.Adj, -32768, 32767)
					}
				}
				l.Entries = append(l.Entries, e)
			}
			lists = append(lists, l)
		}
		cases = append(cases, lists)
	}
	// Several blocks of output: the encoder writes out every 64 KiB.
	var big []reader.List
	for i := range 3000 {
		big = append(big, reader.List{IPCNS: 4026531839, Processes: []reader.Process{{PID: 1000 + i, Comm: comms[i%len(comms)], TIDs: []int{1000 + i}}},
			Entries: []reader.Entry{{Semid: int32(i), Key: int32(-i), Adj: make([]int16, 8)}}})
	}
	cases = append(cases, big)
	for i, lists := range cases {
		var got, want bytes.Buffer
		if err := writeJSON(&got, lists); err != nil {
			t.Fatal(err)
		}
		if err := encodeJSON(&want, referenceJSON(lists)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("case %d: hand-written JSON differs from encoding/json's\ngot:\n%s\nwant:\n%s", i, got.Bytes(), want.Bytes())
		}
	}
}

// referenceJSON is how ps --json built its output for encoding/json before
// it wrote it by hand.
func referenceJSON(lists []reader.List) []jsonList {
	out := make([]jsonList, 0, len(lists))
	for _, l := range lists {
		jl := jsonList{IPCNS: l.IPCNS, PIDs: []int{}, Processes: []jsonProcess{}, Entries: []jsonEntry{}}
		for _, p := range l.Processes {
			jl.PIDs = append(jl.PIDs, p.PID)
			jl.Processes = append(jl.Processes, jsonProcess{PID: p.PID, Comm: p.Comm, TIDs: p.TIDs})
		}
		for _, e := range l.Entries {
			jl.Entries = append(jl.Entries, jsonEntry{Semid: e.Semid, Key: e.Key, Nsems: len(e.Adj), Adj: e.Adj})
		}
		out = append(out, jl)
	}
	return out
}

// TestHexKey: the key column is fmt's "0x%08x".
func TestHexKey(t *testing.T) {
	for _, k := range []uint32{0, 1, 0xf, 0x10, 0xdeadbeef, 0xffffffff, 0x80000000, 0x0012ab00} {
		if got, want := hexKey(k), fmt.Sprintf("0x%08x", k); got != want {
			t.Errorf("hexKey(%#x) = %q, want %q", k, got, want)
		}
	}
}

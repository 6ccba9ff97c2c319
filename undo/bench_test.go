package undo

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// benchInputs are the two shapes the benchmarks measure: one 32,000-value
// line (a set of SEMMSL semaphores) and 10,000 lists of two 8-semaphore
// sets (a host full of small users).
func benchInputs() map[string][]List {
	r := rand.New(rand.NewPCG(1, 2))
	wide := Entry{Semid: 123456, Adj: make([]int16, 32000)}
	for i := range wide.Adj {
		wide.Adj[i] = int16(r.IntN(65536) - 32768)
	}
	small := make([]List, 10000)
	for i := range small {
		for range 2 {
			e := Entry{Semid: int32(r.IntN(1 << 20)), Adj: make([]int16, 8)}
			for k := range e.Adj {
				e.Adj[k] = int16(r.IntN(7) - 3)
			}
			small[i] = append(small[i], e)
		}
		if small[i][0].Semid == small[i][1].Semid {
			small[i][1].Semid++
		}
	}
	return map[string][]List{"line32000": {{wide}}, "lists10000x2x8": small}
}

// baselineMarshal is the obvious implementation, kept as the figure to
// compare against: sort a copy, fmt every number.
func baselineMarshal(l List) []byte {
	var b bytes.Buffer
	for _, e := range l.Sorted() {
		fmt.Fprintf(&b, "%d", e.Semid)
		for _, v := range e.Adj {
			fmt.Fprintf(&b, " %d", v)
		}
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// baselineParse is the obvious lenient implementation: split and strconv.
func baselineParse(text []byte) (List, error) {
	var l List
	for _, line := range strings.Split(strings.TrimSuffix(string(text), "\n"), "\n") {
		f := strings.Fields(line)
		id, err := strconv.ParseInt(f[0], 10, 32)
		if err != nil {
			return nil, err
		}
		e := Entry{Semid: int32(id)}
		for _, s := range f[1:] {
			v, err := strconv.ParseInt(s, 10, 16)
			if err != nil {
				return nil, err
			}
			e.Adj = append(e.Adj, int16(v))
		}
		l = append(l, e)
	}
	return l, nil
}

func BenchmarkMarshal(b *testing.B) {
	for name, lists := range benchInputs() {
		size := 0
		for _, l := range lists {
			text, _ := Marshal(l)
			size += len(text)
		}
		b.Run(name+"/baseline-fmt", func(b *testing.B) {
			b.SetBytes(int64(size))
			for b.Loop() {
				for _, l := range lists {
					_ = baselineMarshal(l)
				}
			}
		})
		b.Run(name+"/Marshal", func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				for _, l := range lists {
					if _, err := Marshal(l); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		b.Run(name+"/AppendText", func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			var buf []byte
			for b.Loop() {
				for _, l := range lists {
					var err error
					if buf, err = l.AppendText(buf[:0]); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

func BenchmarkParse(b *testing.B) {
	for name, lists := range benchInputs() {
		texts := make([][]byte, len(lists))
		size := 0
		for i, l := range lists {
			texts[i], _ = Marshal(l)
			size += len(texts[i])
		}
		b.Run(name+"/baseline-strconv", func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				for _, t := range texts {
					if _, err := baselineParse(t); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
		b.Run(name+"/Parse", func(b *testing.B) {
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				for _, t := range texts {
					if _, err := Parse(t); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

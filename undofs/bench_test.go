package undofs

import (
	"os"
	"testing"
)

// BenchmarkOpenReadClose measures os.ReadFile of a holder's file through the
// mount, one client and four; its baseline, measured in the same run, is one
// reader scan, which every open costs.
func BenchmarkOpenReadClose(b *testing.B) {
	requireFUSE(b)
	f, err := Mount(b.TempDir(), &Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Unmount() })
	h, _, _ := startHolder(b)
	p := path(f, h.PID)
	b.Run("baseline=scan", func(b *testing.B) {
		for b.Loop() {
			if _, err := f.raw.scan.r.Scan(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("clients=1", func(b *testing.B) {
		for b.Loop() {
			if _, err := os.ReadFile(p); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("clients=4", func(b *testing.B) {
		b.SetParallelism(2) // GOMAXPROCS is 2 here: 4 goroutines
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if _, err := os.ReadFile(p); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

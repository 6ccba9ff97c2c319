package decimal

import (
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
)

func TestLen(t *testing.T) {
	vals := []int64{0, 1, -1, 9, 10, -10, 99, 100, 999, 1000, 9999, 10000, -10000, 99999, 100000,
		math.MaxInt16, math.MinInt16, math.MaxInt32, math.MinInt32, math.MaxUint32, math.MaxInt64, math.MinInt64}
	rnd := rand.New(rand.NewPCG(5, 6))
	for range 10000 {
		vals = append(vals, rnd.Int64()>>rnd.IntN(64), -(rnd.Int64() >> rnd.IntN(64)))
	}
	for _, v := range vals {
		if got, want := Len(v), len(strconv.FormatInt(v, 10)); got != want {
			t.Fatalf("Len(%d) = %d, want %d", v, got, want)
		}
	}
}

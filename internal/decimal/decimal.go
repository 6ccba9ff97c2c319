// Package decimal measures integers written in decimal, for writers that
// size a buffer or align columns before they format anything.
package decimal

// Len is the length of v in decimal, sign included:
// len(strconv.FormatInt(v, 10)), without formatting it.
func Len(v int64) int {
	n := 1
	u := uint64(v)
	if v < 0 {
		n++
		u = -u // two's complement: right for math.MinInt64 too
	}
	switch {
	case u < 10:
	case u < 100:
		n++
	case u < 1000:
		n += 2
	case u < 10000:
		n += 3
	default:
		for u >= 10000 {
			u /= 10
			n++
		}
		n += 3
	}
	return n
}

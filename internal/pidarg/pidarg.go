// Package pidarg parses a process id given on the command line by the
// rules the file interface uses for its directory names: canonical decimal
// only, so that "+1" and "01" never alias "1", and within the kernel's
// PID_MAX_LIMIT, so that a number no pid can take is called what it is.
package pidarg

import (
	"errors"
	"fmt"
	"strconv"
)

// Max is the kernel's PID_MAX_LIMIT on 64-bit (4M): no pid is larger,
// whatever kernel.pid_max says.
const Max = 1 << 22

// ErrNotPID: the text is not a pid.
var ErrNotPID = errors.New("not a pid")

// Parse returns the pid s names. It refuses signs, leading zeros, spaces,
// zero and numbers above Max, with a one-line error saying which rule the
// text breaks.
func Parse(s string) (int, error) {
	if s == "" {
		return 0, fmt.Errorf("empty argument is %w", ErrNotPID)
	}
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("%q is %w (a pid is a positive decimal number, without sign)", shorten(s), ErrNotPID)
		}
	}
	if s[0] == '0' {
		return 0, fmt.Errorf("%q is %w (a pid is a positive decimal number, without leading zeros)", shorten(s), ErrNotPID)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > Max {
		return 0, fmt.Errorf("%q is %w (out of range: pids are at most %d)", shorten(s), ErrNotPID, Max)
	}
	return n, nil
}

// shorten keeps an error line short when the argument is long.
func shorten(s string) string {
	if len(s) > 24 {
		return s[:20] + "..."
	}
	return s
}

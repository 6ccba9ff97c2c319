package pidarg

import (
	"errors"
	"strings"
	"testing"
)

// TestParse: canonical decimal pids up to PID_MAX_LIMIT are accepted, as
// the mount accepts its directory names; everything else is refused, naming
// the rule.
func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
	}{{"1", 1}, {"10511", 10511}, {"4194304", Max}} {
		got, err := Parse(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ in, msg string }{
		{"", "empty"},
		{"+10511", "without sign"},
		{"-1", "without sign"},
		{" 1", "without sign"},
		{"0x10", "without sign"},
		{"010511", "leading zeros"},
		{"0", "leading zeros"},
		{"4194305", "out of range"},
		{"2147483648", "out of range"},
		{"99999999999999999999999999999", "out of range"},
		{"abc", "without sign"},
	} {
		_, err := Parse(tc.in)
		if !errors.Is(err, ErrNotPID) || !strings.Contains(err.Error(), tc.msg) || len(err.Error()) > 120 {
			t.Errorf("Parse(%q) = %v; want a short error with %q", tc.in, err, tc.msg)
		}
	}
}

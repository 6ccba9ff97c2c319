package undofs

import (
	"bytes"
	"strconv"
	"strings"
)

// mountAt looks in mountinfo (the text of /proc/self/mountinfo) for the
// topmost mount whose mount point is dir, and returns its file system type
// and source.
func mountAt(mountinfo []byte, dir string) (fstype, source string, ok bool) {
	for line := range bytes.SplitSeq(mountinfo, []byte("\n")) {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		f := strings.Fields(string(line))
		if len(f) < 10 || unescapeMountinfo(f[4]) != dir {
			continue
		}
		for i := 6; i+2 < len(f); i++ {
			if f[i] == "-" {
				// Later lines are mounts stacked on earlier ones.
				fstype, source, ok = f[i+1], unescapeMountinfo(f[i+2]), true
				break
			}
		}
	}
	return fstype, source, ok
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in a mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

package testenv

import (
	"bufio"
	"os"
	"strings"
	"testing"
)

// Cgroup2Root returns where the cgroup v2 hierarchy is mounted, or stops
// the test (Missing) when there is none.
func Cgroup2Root(tb testing.TB) string {
	tb.Helper()
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 2 && fs[2] == "cgroup2" {
			return fs[1]
		}
	}
	Missing(tb, "a cgroup v2 mount", "mount -t cgroup2 none /sys/fs/cgroup/unified")
	return ""
}

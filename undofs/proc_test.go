package undofs

import (
	"testing"
)

func TestMountAt(t *testing.T) {
	mi := []byte(`22 27 0:21 / /proc rw,relatime - proc proc rw
42 27 0:39 / /tmp/a\040b rw,nosuid,nodev,relatime - fuse.semundo semundo rw,user_id=0,group_id=0
43 27 0:40 / /tmp/x rw,relatime shared:5 master:1 - tmpfs tmpfs rw
44 43 0:41 / /tmp/x rw,relatime - fuse.sshfs host:/srv rw
`)
	tests := []struct {
		dir, fstype, source string
		ok                  bool
	}{
		{"/tmp/a b", "fuse.semundo", "semundo", true},
		// The later of two stacked mounts is the visible one.
		{"/tmp/x", "fuse.sshfs", "host:/srv", true},
		{"/proc", "proc", "proc", true},
		{"/tmp", "", "", false},
		{`/tmp/a\040b`, "", "", false},
	}
	for _, tt := range tests {
		fstype, source, ok := mountAt(mi, tt.dir)
		if fstype != tt.fstype || source != tt.source || ok != tt.ok {
			t.Errorf("mountAt(%q) = %q, %q, %v; want %q, %q, %v", tt.dir, fstype, source, ok, tt.fstype, tt.source, tt.ok)
		}
	}
}

func TestNodeIDs(t *testing.T) {
	for _, pid := range []int{1, 2, 12345, maxPID} {
		if k, p := node(dirID(pid)); k != kindDir || p != pid {
			t.Errorf("node(dirID(%d)) = %d, %d", pid, k, p)
		}
		if k, p := node(fileID(pid)); k != kindFile || p != pid {
			t.Errorf("node(fileID(%d)) = %d, %d", pid, k, p)
		}
	}
	if k, _ := node(1); k != kindRoot {
		t.Errorf("node(1) = %d, want the root", k)
	}
	for _, id := range []uint64{0, 2, 3, ^uint64(0), uint64(maxPID+1)<<2 | kindDir} {
		if k, _ := node(id); k != 0 {
			t.Errorf("node(%#x) = kind %d, want none", id, k)
		}
	}
	for name, want := range map[string]int{"1": 1, "4194304": maxPID, "01": 0, "+1": 0, "0": 0, "-1": 0, "": 0, "4194305": 0, "1a": 0, " 1": 0} {
		if got := parsePID(name); got != want {
			t.Errorf("parsePID(%q) = %d, want %d", name, got, want)
		}
	}
}

package checkpoint

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/semundo/semundo/internal/procfs"
	"golang.org/x/sys/unix"
)

// refuseSelf refuses a checkpoint whose freeze would hold semundo itself
// (it would never let go) or one of its ancestors (the shell or program
// that waits for it, left stopped if semundo is killed meanwhile): among
// the processes, or, with a cgroup, inside it or a cgroup below it.
func refuseSelf(pids []int, opts CaptureOptions) error {
	chain := selfAndAncestors()
	how := "among the processes to checkpoint"
	if opts.Tree {
		how = "in the tree to checkpoint (--tree takes every descendant)"
	}
	for i, p := range chain {
		if slices.Contains(pids, p) {
			return fmt.Errorf("%s is %s: %s; run semundo from outside the processes it checkpoints: %w", who(i, p), how, consequence(i, "stopped"), ErrSelf)
		}
	}
	if opts.Cgroup == "" {
		return nil
	}
	var cg unix.Stat_t
	if err := unix.Stat(opts.Cgroup, &cg); err != nil {
		return nil // the freeze names the bad directory
	}
	mnt := cgroup2Mount()
	if mnt == "" {
		return nil
	}
	for i, p := range chain {
		rel, err := cgroupOf(p)
		if err != nil {
			continue // exited, or not in cgroup v2
		}
		if under(filepath.Join(mnt, rel), mnt, cg) {
			return fmt.Errorf("%s is in cgroup %s, inside --cgroup %s: %s; run semundo from outside that cgroup: %w", who(i, p), filepath.Join(mnt, rel), opts.Cgroup, consequence(i, "frozen"), ErrSelf)
		}
	}
	return nil
}

// who names chain[i]: semundo, its parent or another ancestor.
func who(i, pid int) string {
	if i == 0 {
		return fmt.Sprintf("semundo itself (pid %d)", pid)
	}
	comm := "?"
	if st, err := procfs.NewDefaultFS().Stat(pid); err == nil {
		comm = st.Comm
	}
	if i == 1 {
		return fmt.Sprintf("pid %d (%s), semundo's parent,", pid, comm)
	}
	return fmt.Sprintf("pid %d (%s), an ancestor of semundo,", pid, comm)
}

// consequence says what a freeze of chain[i] would do.
func consequence(i int, how string) string {
	if i == 0 {
		return "semundo would be " + how + " for good"
	}
	return "it would be " + how + " while it waits for semundo (for good if semundo is killed)"
}

// selfAndAncestors returns semundo's pid, its parent's, and so on up to
// the first process of its PID namespace.
func selfAndAncestors() []int {
	p := procfs.NewDefaultFS()
	chain := []int{os.Getpid()}
	for len(chain) < 4096 {
		st, err := p.Stat(chain[len(chain)-1])
		if err != nil || st.PPID <= 0 || slices.Contains(chain, st.PPID) {
			break
		}
		chain = append(chain, st.PPID)
	}
	return chain
}

// cgroupOf returns pid's cgroup v2 path (the "0::" line of
// /proc/PID/cgroup).
func cgroupOf(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
			return rest, nil
		}
	}
	return "", errors.New("no cgroup v2 line")
}

// cgroup2Mount returns where the cgroup v2 hierarchy is mounted, or "".
func cgroup2Mount() string {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) > 2 && fs[2] == "cgroup2" {
			return fs[1]
		}
	}
	return ""
}

// under says whether directory dir is cg or below it, walking up to the
// mount point mnt and comparing device and inode (cg may be named by
// another path).
func under(dir, mnt string, cg unix.Stat_t) bool {
	for {
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err == nil && st.Dev == cg.Dev && st.Ino == cg.Ino {
			return true
		}
		if dir == mnt || len(dir) <= len(mnt) {
			return false
		}
		dir = filepath.Dir(dir)
	}
}

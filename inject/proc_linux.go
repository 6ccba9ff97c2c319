//go:build linux && (amd64 || arm64)

package inject

import (
	"bufio"
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/semundo/semundo/internal/procfs"
	"golang.org/x/sys/unix"
)

// Task flags from include/linux/sched.h, as shown in field 9 of
// /proc/pid/stat.
const (
	pfIOWorker   = 0x00000010 // PF_IO_WORKER: an io_uring worker, not traceable
	pfUserWorker = 0x00004000 // PF_USER_WORKER: a kernel-made thread of a user process
)

// liveThreads lists those of threads, the threads of process tgid, that
// have not exited and can be traced (not io_uring or other kernel-made
// workers), the thread-group leader first when it is alive.
func liveThreads(threads []procfs.Thread, tgid int) []int {
	var tids []int
	for _, th := range threads {
		if th.Stat.Dead() || th.Stat.Flags&(pfIOWorker|pfUserWorker) != 0 {
			continue
		}
		tids = append(tids, th.TID)
	}
	sort.Slice(tids, func(i, j int) bool {
		if (tids[i] == tgid) != (tids[j] == tgid) {
			return tids[i] == tgid
		}
		return tids[i] < tids[j]
	})
	return tids
}

// mapping is one line of /proc/<pid>/maps.
type mapping struct {
	start, end uintptr
	perms      string
	offset     uint64 // file offset of start
	dev, inode string // the file's identity; inode "0" when anonymous
	name       string
}

func readMaps(path string) ([]mapping, error) {
	b, err := procfs.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ms []mapping
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 5 {
			continue
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil {
			continue
		}
		off, _ := strconv.ParseUint(f[2], 16, 64)
		m := mapping{start: uintptr(start), end: uintptr(end), perms: f[1], offset: off, dev: f[3], inode: f[4]}
		if len(f) >= 6 {
			m.name = strings.Join(f[5:], " ")
		}
		ms = append(ms, m)
	}
	return ms, sc.Err()
}

// exeIs32Bit reports whether the program the process runs is a 32-bit ELF
// file (ia32, or x32 which is ELFCLASS32 with machine x86-64). ok is false
// when the executable cannot be read (no permission, kernel thread).
func exeIs32Bit(pid int) (is32, ok bool) {
	fd, err := unix.Open(fmt.Sprintf("/proc/%d/exe", pid), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, false
	}
	defer unix.Close(fd)
	var hdr [5]byte
	if n, err := unix.Pread(fd, hdr[:], 0); err != nil || n != len(hdr) || string(hdr[:4]) != "\x7fELF" {
		return false, false
	}
	const elfClass32 = 1
	return hdr[4] == elfClass32, true
}

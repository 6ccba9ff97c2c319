package inject

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Task flags from include/linux/sched.h, as shown in field 9 of
// /proc/pid/stat.
const (
	pfKthread    = 0x00200000 // PF_KTHREAD: a kernel thread
	pfIOWorker   = 0x00000010 // PF_IO_WORKER: an io_uring worker, not traceable
	pfUserWorker = 0x00004000 // PF_USER_WORKER: a kernel-made thread of a user process
)

// procStatus holds the fields of /proc/<pid>/status this package needs.
type procStatus struct {
	state     byte
	tgid      int
	ppid      int
	tracerPid int
	seccomp   int
	sigPnd    uint64 // thread-directed pending signals
	shdPnd    uint64 // process-directed pending signals
	sigBlk    uint64
	sigIgn    uint64
	sigCgt    uint64
}

func readStatus(path string) (procStatus, error) {
	var st procStatus
	b, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "State":
			if val != "" {
				st.state = val[0]
			}
		case "Tgid":
			st.tgid, _ = strconv.Atoi(val)
		case "PPid":
			st.ppid, _ = strconv.Atoi(val)
		case "TracerPid":
			st.tracerPid, _ = strconv.Atoi(val)
		case "Seccomp":
			st.seccomp, _ = strconv.Atoi(val)
		case "SigPnd":
			st.sigPnd, _ = strconv.ParseUint(val, 16, 64)
		case "ShdPnd":
			st.shdPnd, _ = strconv.ParseUint(val, 16, 64)
		case "SigBlk":
			st.sigBlk, _ = strconv.ParseUint(val, 16, 64)
		case "SigIgn":
			st.sigIgn, _ = strconv.ParseUint(val, 16, 64)
		case "SigCgt":
			st.sigCgt, _ = strconv.ParseUint(val, 16, 64)
		}
	}
	if st.tgid == 0 {
		return st, fmt.Errorf("%s: no Tgid line", path)
	}
	return st, nil
}

// procStat holds the fields of /proc/<pid>/stat this package needs.
type procStat struct {
	comm  string
	state byte
	flags uint64
}

func readStat(path string) (procStat, error) {
	var st procStat
	b, err := os.ReadFile(path)
	if err != nil {
		return st, err
	}
	// comm may hold spaces and parentheses: it ends at the last ')'.
	open := bytes.IndexByte(b, '(')
	end := bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return st, fmt.Errorf("%s: malformed", path)
	}
	st.comm = string(b[open+1 : end])
	f := strings.Fields(string(b[end+1:]))
	// f[0] is field 3 (state); field 9 (flags) is f[6].
	if len(f) < 7 {
		return st, fmt.Errorf("%s: too few fields", path)
	}
	st.state = f[0][0]
	st.flags, err = strconv.ParseUint(f[6], 10, 64)
	if err != nil {
		return st, fmt.Errorf("%s: flags: %w", path, err)
	}
	return st, nil
}

func dead(state byte) bool { return state == 'Z' || state == 'X' || state == 'x' }

// liveThreads lists the threads of process tgid that have not exited and
// can be traced (not io_uring or other kernel-made workers), the
// thread-group leader first when it is alive.
func liveThreads(tgid int) ([]int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", tgid))
	if err != nil {
		return nil, err
	}
	var tids []int
	for _, e := range ents {
		tid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(fmt.Sprintf("/proc/%d/task/%d/stat", tgid, tid))
		if err != nil || dead(st.state) || st.flags&(pfIOWorker|pfUserWorker) != 0 {
			continue
		}
		tids = append(tids, tid)
	}
	sort.Slice(tids, func(i, j int) bool {
		if (tids[i] == tgid) != (tids[j] == tgid) {
			return tids[i] == tgid
		}
		return tids[i] < tids[j]
	})
	return tids, nil
}

// mapping is one line of /proc/<pid>/maps.
type mapping struct {
	start, end uintptr
	perms      string
	name       string
}

func readMaps(path string) ([]mapping, error) {
	b, err := os.ReadFile(path)
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
		m := mapping{start: uintptr(start), end: uintptr(end), perms: f[1]}
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
	f, err := os.Open(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return false, false
	}
	defer f.Close()
	var hdr [5]byte
	if _, err := f.ReadAt(hdr[:], 0); err != nil || string(hdr[:4]) != "\x7fELF" {
		return false, false
	}
	const elfClass32 = 1
	return hdr[4] == elfClass32, true
}

package procfs

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
)

var fixtures = NewFS("testdata/proc")

func TestStatFixtures(t *testing.T) {
	st, err := fixtures.Stat(100)
	if err != nil {
		t.Fatal(err)
	}
	want := Stat{Comm: "cat", State: 'R', PPID: 15265, Flags: 4194304, NumThreads: 2, StartTime: 811484}
	if st != want {
		t.Errorf("Stat(100) = %+v, want %+v", st, want)
	}
	// A command name holding ") " and "(" must not shift the fields.
	st, err = fixtures.TaskStat(100, 101)
	if err != nil {
		t.Fatal(err)
	}
	want = Stat{Comm: "a) b (c", State: 'T', PPID: 15265, Flags: 4194368, NumThreads: 2, StartTime: 811490}
	if st != want {
		t.Errorf("TaskStat(100, 101) = %+v, want %+v", st, want)
	}
	st, err = fixtures.Stat(102)
	if err != nil {
		t.Fatal(err)
	}
	if st.Comm != "kworker/0:1" || st.State != 'I' || st.PPID != 2 || st.Flags&0x00200000 == 0 {
		t.Errorf("Stat(102) = %+v, want a kernel thread of kthreadd", st)
	}
	if _, err := fixtures.Stat(103); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "103/stat") {
		t.Errorf("Stat(103), a truncated file: %v, want ErrMalformed naming the file", err)
	}
	for _, pid := range []int{0, -1, 101, 104} {
		if _, err := fixtures.Stat(pid); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("Stat(%d) = %v, want ESRCH", pid, err)
		}
	}
	if _, err := fixtures.TaskStat(100, 102); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("TaskStat(100, 102) = %v, want ESRCH", err)
	}
}

func TestParseStatBad(t *testing.T) {
	good := "1 (x) S 0 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0 0"
	if _, err := ParseStat([]byte(good)); err != nil {
		t.Fatalf("ParseStat(%q): %v", good, err)
	}
	for _, in := range []string{
		"",
		"1 x S 0",
		"1 (x S 0 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0 0",
		"1 (x) SS 0 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0 0",
		"1 (x) S z 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0 0",
		"1 (x) S 0 1 1 0 -1 -4 0 0 0 0 0 0 0 0 20 0 1 0 5 0 0 0",
		"1 (x) S 0 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 y 0 5 0 0 0",
		"1 (x) S 0 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 -5 0 0 0",
		"1 (x) S 0 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0",
	} {
		if st, err := ParseStat([]byte(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseStat(%q) = %+v, %v; want ErrMalformed", in, st, err)
		}
	}
}

func TestStatusFixtures(t *testing.T) {
	tests := []struct {
		pid    int
		tgid   int
		uid    [4]uint32
		gid    [4]uint32
		groups []uint32
		capEff uint64
	}{
		{100, 100, [4]uint32{}, [4]uint32{}, []uint32{}, 0x000001fffeffffff},
		// A thread (tid 101 of process 100) of a set-uid program.
		{101, 100, [4]uint32{1000, 0, 0, 0}, [4]uint32{1000, 1000, 1000, 1000}, []uint32{4, 24, 27, 1000}, 1 << 19},
		{102, 102, [4]uint32{65534, 65534, 65534, 65534}, [4]uint32{65534, 65534, 65534, 65534}, []uint32{}, 0},
	}
	for _, tt := range tests {
		st, err := fixtures.Status(tt.pid)
		if err != nil {
			t.Fatalf("Status(%d): %v", tt.pid, err)
		}
		if st.Tgid != tt.tgid || st.UID != tt.uid || st.GID != tt.gid || !slices.Equal(st.Groups, tt.groups) || st.CapEff != tt.capEff {
			t.Errorf("Status(%d) = %+v, want tgid %d uid %v gid %v groups %v capeff %#x",
				tt.pid, st, tt.tgid, tt.uid, tt.gid, tt.groups, tt.capEff)
		}
	}
	st, err := fixtures.TaskStatus(100, 100)
	if err != nil {
		t.Fatal(err)
	}
	if st.State != 'R' || st.PPID != 15265 || st.TracerPid != 0 || st.Threads != 2 || !slices.Equal(st.NSpid, []int{15268}) {
		t.Errorf("TaskStatus(100, 100) = %+v", st)
	}
	// A status without CapEff cannot be judged from.
	if _, err := fixtures.Status(103); !errors.Is(err, ErrMalformed) {
		t.Errorf("Status(103) without a CapEff line: %v, want ErrMalformed", err)
	}
	for _, pid := range []int{0, -1, 104} {
		if _, err := fixtures.Status(pid); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("Status(%d) = %v, want ESRCH", pid, err)
		}
	}
}

func TestParseStatus(t *testing.T) {
	const base = "Tgid:\t7\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t9 10\nCapEff:\t0000000000008000\n"
	in := "Name:\tx y\nState:\tt (tracing stop)\nPPid:\t1\nTracerPid:\t99\nSeccomp:\t2\nNSpid:\t700\t7\n" +
		base + "SigPnd:\t0000000000000100\nShdPnd:\t0000000000040000\nSigBlk:\t1\nSigIgn:\t2\nSigCgt:\t3\nKthread:\t1\n"
	st, err := ParseStatus([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	want := Status{Name: "x y", Kthread: true, KthreadKnown: true, State: 't', Tgid: 7, PPID: 1, TracerPid: 99, Seccomp: 2, NSpid: []int{700, 7},
		UID: [4]uint32{1, 2, 3, 4}, GID: [4]uint32{5, 6, 7, 8}, Groups: []uint32{9, 10},
		SigPnd: 0x100, ShdPnd: 0x40000, SigBlk: 1, SigIgn: 2, SigCgt: 3, CapEff: 0x8000}
	if fmt.Sprint(st) != fmt.Sprint(want) {
		t.Errorf("ParseStatus = %+v\nwant %+v", st, want)
	}
	// Kernels before the Kthread line: not known, not a kernel thread.
	if st, err := ParseStatus([]byte(base)); err != nil || st.Kthread || st.KthreadKnown {
		t.Errorf("ParseStatus without Kthread = %+v, %v; want it unknown", st, err)
	}
	if st.UID[Effective] != 2 || st.GID[Filesystem] != 8 {
		t.Errorf("index constants: euid %d fsgid %d", st.UID[Effective], st.GID[Filesystem])
	}
	for _, in := range []string{
		"",
		"Tgid:\t1\nUid:\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\nCapEff:\t0\n",    // three uids
		"Tgid:\tx\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\nCapEff:\t0\n", // bad tgid
		"Tgid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t-1\nCapEff:\t0\n",
		"Tgid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\nCapEff:\tzz\n",
		"Tgid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nCapEff:\t0\n", // no Groups
		base + "State:\t\n",
		base + "State:\tRS (x)\n",
		base + "NSpid:\t\n",
		base + "NSpid:\t5\t0\n",
		base + "TracerPid:\t1 2\n",
		base + "SigPnd:\tg\n",
		base + "Kthread:\tyes\n",
	} {
		if st, err := ParseStatus([]byte(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseStatus(%q) = %+v, %v; want ErrMalformed", in, st, err)
		}
	}
}

func TestListsFixtures(t *testing.T) {
	tids, err := fixtures.Tasks(100)
	if err != nil || !slices.Equal(tids, []int{100, 101}) {
		t.Errorf("Tasks(100) = %v, %v; want [100 101]", tids, err)
	}
	if _, err := fixtures.Tasks(102); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("Tasks(102) without a task directory: %v, want ESRCH", err)
	}
	pids, err := fixtures.PIDs()
	if err != nil || !slices.Equal(pids, []int{100, 101, 102, 103}) {
		t.Errorf("PIDs() = %v, %v", pids, err)
	}
	// 103's stat is truncated: a walk that met it cannot be trusted.
	if _, err := fixtures.Children(); !errors.Is(err, ErrMalformed) {
		t.Errorf("Children() over a malformed stat: %v, want ErrMalformed", err)
	}
}

// The live /proc: this process, its threads and its parent.
func TestLive(t *testing.T) {
	p := NewDefaultFS()
	self := os.Getpid()
	st, err := p.Stat(self)
	if err != nil {
		t.Fatal(err)
	}
	if st.PPID != os.Getppid() || st.NumThreads < 1 || st.Dead() {
		t.Errorf("Stat(self) = %+v, ppid want %d", st, os.Getppid())
	}
	ss, err := p.Status(self)
	if err != nil {
		t.Fatal(err)
	}
	if ss.Tgid != self || ss.UID[Effective] != uint32(os.Geteuid()) || len(ss.NSpid) == 0 || ss.NSpid[0] != self {
		t.Errorf("Status(self) = %+v", ss)
	}
	tids, err := p.Tasks(self)
	if err != nil || !slices.Contains(tids, self) {
		t.Fatalf("Tasks(self) = %v, %v", tids, err)
	}
	for _, tid := range tids {
		if ts, err := p.TaskStatus(self, tid); err == nil && ts.Tgid != self {
			t.Errorf("TaskStatus(self, %d).Tgid = %d", tid, ts.Tgid)
		}
	}
	children, err := p.Children()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(children[os.Getppid()], self) {
		t.Errorf("Children()[%d] = %v, lacks %d (%d parents)", os.Getppid(), children[os.Getppid()], self, len(slices.Collect(maps.Keys(children))))
	}
}

// The parsers read files of processes that may be anyone's: no input may
// panic them, and what they accept must hold its invariants.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"100/stat", "100/status", "100/task/101/stat", "101/status", "103/stat"} {
		b, err := os.ReadFile("testdata/proc/" + name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if st, err := ParseStat(b); err == nil && st.State == 0 {
			t.Errorf("ParseStat(%q) accepted no state", b)
		}
		if st, err := ParseStatus(b); err == nil && st.Groups == nil {
			t.Errorf("ParseStatus(%q) accepted no Groups line", b)
		}
	})
}

func TestThreadsFixtures(t *testing.T) {
	threads, err := fixtures.Threads(100)
	if err != nil {
		t.Fatal(err)
	}
	if len(threads) != 2 || threads[0].TID != 100 || threads[0].Stat.Comm != "cat" ||
		threads[1].TID != 101 || threads[1].Stat.Comm != "a) b (c" || threads[1].Stat.State != 'T' {
		t.Errorf("Threads(100) = %+v, want 100 (cat) and 101 (a) b (c, stopped)", threads)
	}
	if _, err := fixtures.Threads(102); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("Threads(102) without a task directory: %v, want ESRCH", err)
	}
	if st, _ := fixtures.Stat(102); !st.KernelThread() {
		t.Errorf("Stat(102), kworker, is not a kernel thread: %+v", st)
	}
	if st, _ := fixtures.Stat(100); st.KernelThread() {
		t.Errorf("Stat(100), cat, is a kernel thread: %+v", st)
	}
}

// TestReadFile checks the plain-syscall reader against os.ReadFile: files
// smaller and larger than its first buffer, a /proc file whose size stat
// does not know, and the errors callers test with errors.Is.
func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{0, 1, 2047, 2048, 2049, 70000} {
		path := fmt.Sprintf("%s/f%d", dir, n)
		want := []byte(strings.Repeat("x", n))
		if err := os.WriteFile(path, want, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := ReadFile(path)
		if err != nil || string(got) != string(want) {
			t.Errorf("ReadFile of %d bytes: %d bytes, %v", n, len(got), err)
		}
	}
	want, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile("/proc/self/maps")
	if err != nil || len(got) == 0 || !strings.HasPrefix(string(want), strings.SplitN(string(got), "\n", 2)[0]) {
		t.Errorf("ReadFile(/proc/self/maps) = %d bytes, %v; os.ReadFile %d bytes", len(got), err, len(want))
	}
	_, err = ReadFile(dir + "/missing")
	var pe *fs.PathError
	if !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &pe) || pe.Path != dir+"/missing" {
		t.Errorf("ReadFile of a missing file: %v, want a *fs.PathError that Is fs.ErrNotExist", err)
	}
	if _, err := ReadFile(dir); !errors.Is(err, syscall.EISDIR) {
		t.Errorf("ReadFile of a directory: %v, want EISDIR", err)
	}
}

package criu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/semundo/semundo/internal/procfs"
	"github.com/semundo/semundo/internal/testenv"
)

// pstreeImage builds a CRIU pstree image of entries with these pids, the
// first the root and the others its children, each with the other fields
// CRIU writes (pgid, sid, threads).
func pstreeImage(pids ...int) []byte {
	es := make([]pstreeEntry, len(pids))
	for i, pid := range pids {
		es[i] = pstreeEntry{pid: pid}
		if i > 0 {
			es[i].ppid = pids[0]
		}
	}
	return pstreeImageOf(es...)
}

// pstreeImageOf builds a CRIU pstree image of these entries.
func pstreeImageOf(es ...pstreeEntry) []byte {
	b := binary.NativeEndian.AppendUint32(nil, imgCommonMagic)
	b = binary.NativeEndian.AppendUint32(b, pstreeMagic)
	for _, e := range es {
		pid, ppid := e.pid, e.ppid
		var msg []byte
		msg = append(msg, 1<<3|0)
		msg = binary.AppendUvarint(msg, uint64(pid))
		msg = append(msg, 2<<3|0)
		msg = binary.AppendUvarint(msg, uint64(ppid))
		msg = append(msg, 3<<3|0, 1, 4<<3|0, 1)
		msg = append(msg, 5<<3|0)
		msg = binary.AppendUvarint(msg, uint64(pid))
		b = binary.NativeEndian.AppendUint32(b, uint32(len(msg)))
		b = append(b, msg...)
	}
	return b
}

func TestParsePstree(t *testing.T) {
	want := []pstreeEntry{{100, 0}, {101, 100}, {70000, 101}, {102, 100}}
	img := pstreeImageOf(want...)
	got, err := parsePstree(img)
	if err != nil || !slices.Equal(got, want) {
		t.Fatalf("got %v, %v", got, err)
	}
	// A cut between entries is a shorter tree; any other, an error.
	between := map[int]bool{}
	for i := 8; i < len(img); i += 4 + int(binary.NativeEndian.Uint32(img[i:])) {
		between[i] = true
	}
	for i := 9; i < len(img); i++ {
		pids, err := parsePstree(img[:i])
		if between[i] != (err == nil) || len(pids) >= 4 {
			t.Errorf("cut at %d of %d (between entries: %v): %v, %v", i, len(img), between[i], pids, err)
		}
	}
	for _, bad := range [][]byte{
		nil,
		img[:8], // no entry
		pstreeImage(100, 100),
		pstreeImage(0),
		pstreeImage(100, 1<<23),
		pstreeImageOf(pstreeEntry{100, 0}, pstreeEntry{101, 102}, pstreeEntry{102, 100}), // parent after child
		pstreeImageOf(pstreeEntry{100, 0}, pstreeEntry{101, 0}),                          // two roots
		pstreeImageOf(pstreeEntry{100, 1}),                                               // a root with a parent
		append(slices.Clone(img), 1, 2),
		coreImage(3), // another image's magic
	} {
		if _, err := parsePstree(bad); err == nil {
			t.Errorf("% x: accepted", bad)
		}
	}
}

func FuzzParsePstree(f *testing.F) {
	f.Add(pstreeImage(1, 2, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		parsePstree(b) // must not panic
	})
}

// TestDumpedTree checks when post-dump takes the tree from pstree.img:
// only for a root of this PID namespace that the image names first.
func TestDumpedTree(t *testing.T) {
	p := procfs.NewDefaultFS()
	me, parent := os.Getpid(), os.Getppid()
	dir := t.TempDir()
	if _, _, ok := dumpedTree(p, me, dir); ok {
		t.Error("used an images directory without pstree.img")
	}
	write := func(b []byte) {
		if err := os.WriteFile(filepath.Join(dir, pstreeFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(pstreeImage(me, parent))
	procs, raw, ok := dumpedTree(p, me, dir)
	if !ok || !slices.Equal(procs, []proc{{me, me}, {parent, parent}}) || !bytes.Equal(raw, pstreeImage(me, parent)) {
		t.Errorf("got %v, %v, pstree.img read as %x", procs, ok, raw)
	}
	write(pstreeImage(parent, me))
	if _, _, ok := dumpedTree(p, me, dir); ok {
		t.Error("used a pstree.img whose root is another process")
	}
	write(pstreeImage(me)[:10])
	if _, _, ok := dumpedTree(p, me, dir); ok {
		t.Error("used a truncated pstree.img")
	}
	if _, _, ok := dumpedTree(p, 1<<22+1, dir); ok {
		t.Error("used a root that does not exist")
	}
}

// TestPrepareRestoreParents: pre-restore hands post-resume the parents
// from pstree.img only when that is the tree file's tree.
func TestPrepareRestoreParents(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	img := `{"format":"semundo/1","created":"2026-01-01T00:00:00Z","kernel_release":"6.18","hostname":"h","semundo_version":"t","ipcns":1,` +
		`"limits":{"semmsl":1,"semmns":1,"semopm":1,"semmni":1},"sets":[{"id":0,"key":0,"uid":0,"gid":0,"cuid":0,"cgid":0,"mode":384,"nsems":1,"otime":0,"ctime":0,"values":[1],"sempids":[]}],` +
		`"lists":[{"processes":[{"pid":20,"comm":"c","stopped":false,"tids":[20]}],"entries":[{"semid":0,"adj":[-1]}]}]}`
	tree := `{"format":"semundo-criu-tree/1","root":10,"tasks":[{"pid":10,"vpid":10,"stopped":false},{"pid":20,"vpid":20,"stopped":true},{"pid":30,"vpid":30,"stopped":false}]}`
	for name, s := range map[string]string{ImageFile: img, TreeFile: tree} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for i, c := range []struct {
		pstree []byte
		want   string // the parents file, "" for none
	}{
		{nil, ""},
		{pstreeImageOf(pstreeEntry{10, 0}, pstreeEntry{20, 10}, pstreeEntry{30, 20}), "10 0\n20 10\n30 20\n"},
		{pstreeImage(10, 20), ""},          // a process short
		{pstreeImage(20, 10, 30), ""},      // another root
		{pstreeImage(10, 20, 30)[:20], ""}, // cut
	} {
		os.Remove(filepath.Join(dir, pstreeFile))
		if c.pstree != nil {
			if err := os.WriteFile(filepath.Join(dir, pstreeFile), c.pstree, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		handoff := filepath.Join(state, "criu-2147483646-"+strconv.Itoa(i))
		if ok, err := PrepareRestore(dir, handoff); !ok || err != nil {
			t.Fatalf("case %d: %v, %v", i, ok, err)
		}
		b, err := os.ReadFile(filepath.Join(handoff, parentsFile))
		if c.want == "" && err == nil || c.want != "" && string(b) != c.want {
			t.Errorf("case %d: parents file %q (%v), want %q", i, b, err, c.want)
		}
	}
}

// TestRestoredInPlace: post-resume takes a tree restored in this PID
// namespace from the parents file, and refuses a task whose parent is not
// the one the file names.
func TestRestoredInPlace(t *testing.T) {
	p := procfs.NewDefaultFS()
	me := os.Getpid()
	var kids []int
	for range 2 {
		c := exec.Command("sleep", "60")
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		kids = append(kids, c.Process.Pid)
	}
	tr := &tree{Format: treeFormat, Root: me, Tasks: []task{{PID: me, VPID: me}, {PID: kids[0], VPID: kids[0]}, {PID: kids[1], VPID: kids[1]}}}
	handoff := t.TempDir()
	write := func(s string) {
		if err := os.WriteFile(filepath.Join(handoff, parentsFile), []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, ok := restoredInPlace(p, me, parentsIn(handoff), tr); ok {
		t.Error("in place without a parents file")
	}
	write(fmt.Sprintf("%d 0\n%d %d\n", me, kids[0], me))
	if _, _, ok := restoredInPlace(p, me, parentsIn(handoff), tr); ok {
		t.Error("in place with a parents file a process short")
	}
	write(fmt.Sprintf("%d 0\n%d %d\n%d %d\n", me, kids[0], me, kids[1], me))
	if _, _, ok := restoredInPlace(p, kids[0], parentsIn(handoff), tr); ok {
		t.Error("in place for another root")
	}
	newPID, parentOf, ok := restoredInPlace(p, me, parentsIn(handoff), tr)
	if !ok || newPID[kids[1]] != kids[1] || parentOf[kids[1]] != me || len(parentOf) != 2 {
		t.Fatalf("got %v, %v, %v", newPID, parentOf, ok)
	}
	if _, err := waitStops(p, tr, newPID, parentOf); err != nil {
		t.Errorf("waitStops with the true parents: %v", err)
	}
	// A pid taken by another process: its parent gives it away.
	write(fmt.Sprintf("%d 0\n%d %d\n%d %d\n", me, kids[0], me, kids[1], kids[0]))
	newPID, parentOf, ok = restoredInPlace(p, me, parentsIn(handoff), tr)
	if !ok {
		t.Fatal("parents file refused")
	}
	if _, err := waitStops(p, tr, newPID, parentOf); !errors.Is(err, ErrNoTask) || !strings.Contains(err.Error(), strconv.Itoa(kids[1])) {
		t.Errorf("waitStops with a wrong parent: %v, want ErrNoTask naming pid %d", err, kids[1])
	}
}

// TestPIDTranslator: a tree in a PID namespace of its own is taken from
// pstree.img's pids (and from the parents file at restore) where the
// kernel translates them (Linux 6.11), and walked before that.
func TestPIDTranslator(t *testing.T) {
	testenv.RequireRoot(t)
	p := procfs.NewDefaultFS()
	sh := exec.Command("sh", "-c", "sleep 60 & sleep 60 & wait")
	sh.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	root := sh.Process.Pid
	t.Cleanup(func() {
		if kids, err := p.ThreadChildren(root); err == nil {
			for _, k := range kids {
				syscall.Kill(k, syscall.SIGKILL)
			}
		}
		sh.Process.Kill()
		sh.Wait()
	})
	var kids []int
	testenv.Eventually(t, "the namespace's two sleeps", func() bool {
		kids, _ = p.ThreadChildren(root)
		return len(kids) == 2
	})
	vpid := map[int]int{} // pid here -> pid in the namespace
	for _, pid := range append([]int{root}, kids...) {
		ns, err := p.NSpid(pid)
		if err != nil || len(ns) < 2 {
			t.Fatalf("pid %d: NSpid %v, %v", pid, ns, err)
		}
		vpid[pid] = ns[len(ns)-1]
	}
	if vpid[root] != 1 {
		t.Fatalf("the namespace's first process is pid %d there", vpid[root])
	}
	dir := t.TempDir()
	es := []pstreeEntry{{1, 0}, {vpid[kids[0]], 1}, {vpid[kids[1]], 1}}
	if err := os.WriteFile(filepath.Join(dir, pstreeFile), pstreeImageOf(es...), 0o600); err != nil {
		t.Fatal(err)
	}
	handoff := t.TempDir()
	if err := os.WriteFile(filepath.Join(handoff, parentsFile), fmt.Appendf(nil, "1 0\n%d 1\n%d 1\n", es[1].pid, es[2].pid), 0o600); err != nil {
		t.Fatal(err)
	}
	// Dumped pids (the host's at dump) are arbitrary here: the restore maps
	// them by vpid.
	tr := &tree{Format: treeFormat, Root: 5000, Tasks: []task{{PID: 5000, VPID: 1}, {PID: 5001, VPID: es[1].pid}, {PID: 5002, VPID: es[2].pid}}}
	procs, _, okDump := dumpedTree(p, root, dir)
	newPID, parentOf, okRestore := restoredInPlace(p, root, parentsIn(handoff), tr)
	if !testenv.KernelAtLeast(t, 6, 11) {
		if okDump || okRestore {
			t.Errorf("a kernel before 6.11 translated pids: dump %v, restore %v", okDump, okRestore)
		}
		return
	}
	want := []proc{{root, 1}, {kids[0], es[1].pid}, {kids[1], es[2].pid}}
	if !okDump || !slices.Equal(procs, want) {
		t.Errorf("dumpedTree: %v, %v; want %v", procs, okDump, want)
	}
	if !okRestore || newPID[5000] != root || newPID[5001] != kids[0] || newPID[5002] != kids[1] ||
		parentOf[kids[0]] != root || parentOf[kids[1]] != root || len(parentOf) != 2 {
		t.Fatalf("restoredInPlace: %v, %v, %v", newPID, parentOf, okRestore)
	}
	if _, err := waitStops(p, tr, newPID, parentOf); err != nil {
		t.Errorf("waitStops with the true parents: %v", err)
	}
	// A vpid the namespace does not have: walk instead.
	es[2].pid = 999
	if err := os.WriteFile(filepath.Join(dir, pstreeFile), pstreeImageOf(es...), 0o600); err != nil {
		t.Fatal(err)
	}
	if procs, _, ok := dumpedTree(p, root, dir); ok {
		t.Errorf("dumpedTree with a vpid that is not there: %v", procs)
	}
}

// parentsIn returns the parents file in handoff, nil when there is none.
func parentsIn(handoff string) []byte {
	b, err := os.ReadFile(filepath.Join(handoff, parentsFile))
	if err != nil {
		return nil
	}
	return b
}

// pstreePIDs returns the pids CRIU's pstree.img in dir lists, root first:
// each process of the dumped tree, as a pid of the root's PID namespace.
func pstreePIDs(dir string) ([]int, error) {
	es, err := readPstree(dir)
	if err != nil {
		return nil, err
	}
	pids := make([]int, len(es))
	for i, e := range es {
		pids[i] = e.pid
	}
	return pids, nil
}

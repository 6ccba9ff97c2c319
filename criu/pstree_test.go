package criu

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/semundo/semundo/internal/procfs"
)

// pstreeImage builds a CRIU pstree image of entries with these pids, each
// with the other fields CRIU writes (ppid, pgid, sid, threads).
func pstreeImage(pids ...int) []byte {
	b := binary.NativeEndian.AppendUint32(nil, imgCommonMagic)
	b = binary.NativeEndian.AppendUint32(b, pstreeMagic)
	for i, pid := range pids {
		var msg []byte
		msg = append(msg, 1<<3|0)
		msg = binary.AppendUvarint(msg, uint64(pid))
		ppid := 0
		if i > 0 {
			ppid = pids[0]
		}
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
	img := pstreeImage(100, 101, 70000, 102)
	got, err := parsePstree(img)
	if err != nil || !slices.Equal(got, []int{100, 101, 70000, 102}) {
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
	if _, ok := dumpedTree(p, me, dir); ok {
		t.Error("used an images directory without pstree.img")
	}
	write := func(b []byte) {
		if err := os.WriteFile(filepath.Join(dir, pstreeFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(pstreeImage(me, parent))
	procs, ok := dumpedTree(p, me, dir)
	if !ok || !slices.Equal(procs, []proc{{me, me}, {parent, parent}}) {
		t.Errorf("got %v, %v", procs, ok)
	}
	write(pstreeImage(parent, me))
	if _, ok := dumpedTree(p, me, dir); ok {
		t.Error("used a pstree.img whose root is another process")
	}
	write(pstreeImage(me)[:10])
	if _, ok := dumpedTree(p, me, dir); ok {
		t.Error("used a truncated pstree.img")
	}
	if _, ok := dumpedTree(p, 1<<22+1, dir); ok {
		t.Error("used a root that does not exist")
	}
}

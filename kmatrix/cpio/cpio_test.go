package cpio_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/semundo/semundo/internal/testenv"
	"github.com/semundo/semundo/kmatrix/cpio"
)

// entry is one decoded newc record.
type entry struct {
	mode, size, rmaj, rmin uint64
	name                   string
	data                   []byte
}

// decode reads an archive by the format's rules, independently of the
// writer's code, and fails on any misalignment.
func decode(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	off := 0
	for {
		if off%4 != 0 {
			t.Fatalf("entry at offset %d is not 4-byte aligned", off)
		}
		if len(b) < off+110 {
			t.Fatalf("truncated header at %d", off)
		}
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		field := func(i int) uint64 {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("field %d at %d: %v", i, off, err)
			}
			return v
		}
		namesize := int(field(11))
		e := entry{mode: field(1), size: field(6), rmaj: field(9), rmin: field(10)}
		if field(2) != 0 || field(3) != 0 || field(5) != 0 {
			t.Fatalf("uid/gid/mtime not zero at %d", off)
		}
		nameEnd := off + 110 + namesize
		if b[nameEnd-1] != 0 {
			t.Fatalf("name not NUL-terminated at %d", off)
		}
		e.name = string(b[off+110 : nameEnd-1])
		dataOff := (nameEnd + 3) &^ 3
		e.data = b[dataOff : dataOff+int(e.size)]
		off = (dataOff + int(e.size) + 3) &^ 3
		if e.name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("archive is %d bytes, trailer ends at %d", len(b), off)
			}
			return out
		}
		out = append(out, e)
	}
}

func build(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := cpio.NewWriter(&buf)
	for _, err := range []error{
		w.Dir("dev", 0o755),
		w.CharDev("dev/console", 0o600, 5, 1),
		w.Dir("/bin", 0o755),
		w.Bytes("bin/a", 0o755, []byte("x")), // 1 byte: data needs 3 bytes of padding
		w.Bytes("./bin/bb", 0o644, []byte{}), // empty file
		w.File("bin/long-name-file", 0o600, 5, strings.NewReader("hello")),
		w.Symlink("init", "bin/a"),
		w.Close(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

func TestLayout(t *testing.T) {
	got := decode(t, build(t))
	want := []entry{
		{mode: 0o040755, name: "dev"},
		{mode: 0o020600, name: "dev/console", rmaj: 5, rmin: 1},
		{mode: 0o040755, name: "bin"},
		{mode: 0o100755, name: "bin/a", size: 1, data: []byte("x")},
		{mode: 0o100644, name: "bin/bb"},
		{mode: 0o100600, name: "bin/long-name-file", size: 5, data: []byte("hello")},
		{mode: 0o120777, name: "init", size: 5, data: []byte("bin/a")},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.mode != w.mode || g.name != w.name || g.size != w.size || g.rmaj != w.rmaj || g.rmin != w.rmin || !bytes.Equal(g.data, w.data) {
			t.Errorf("entry %d: got %+v, want %+v", i, g, w)
		}
	}
}

func TestErrors(t *testing.T) {
	w := cpio.NewWriter(&bytes.Buffer{})
	for _, name := range []string{"", "/", "a/../../b", "..", "a\x00b"} {
		if err := w.Dir(name, 0o755); !errors.Is(err, cpio.ErrBadName) {
			t.Errorf("Dir(%q) = %v, want ErrBadName", name, err)
		}
	}
	if err := w.File("short", 0o644, 10, strings.NewReader("abc")); !errors.Is(err, cpio.ErrShortData) {
		t.Errorf("short file: %v, want ErrShortData", err)
	}
	var ee *cpio.EntryError
	if err := w.File("long", 0o644, 1, strings.NewReader("abc")); !errors.Is(err, cpio.ErrShortData) || !errors.As(err, &ee) || ee.Name != "long" {
		t.Errorf("long file: %v, want EntryError for long wrapping ErrShortData", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Dir("late", 0o755); !errors.Is(err, cpio.ErrClosed) {
		t.Errorf("after Close: %v, want ErrClosed", err)
	}
	if err := w.Close(); !errors.Is(err, cpio.ErrClosed) {
		t.Errorf("second Close: %v, want ErrClosed", err)
	}
}

// TestGNUcpio unpacks the archive with GNU cpio, an independent reader.
func TestGNUcpio(t *testing.T) {
	testenv.RequireRoot(t) // creating dev/console needs CAP_MKNOD
	tool := testenv.RequireTool(t, "cpio")
	dir := t.TempDir()
	cmd := testenv.Command(t, "cpio -i", tool, "-i", "-d", "-m", "--no-absolute-filenames", "--quiet")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(build(t))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v\n%s", err, out)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "bin/long-name-file")); err != nil || string(b) != "hello" {
		t.Errorf("bin/long-name-file = %q, %v; want hello", b, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "bin/a")); err != nil || fi.Mode().Perm() != 0o755 || fi.Size() != 1 {
		t.Errorf("bin/a: %v %v", fi, err)
	}
	if l, err := os.Readlink(filepath.Join(dir, "init")); err != nil || l != "bin/a" {
		t.Errorf("init -> %q, %v; want bin/a", l, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "dev/console"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 5 || unix.Minor(st.Rdev) != 1 {
		t.Errorf("dev/console: mode %o rdev %d:%d, want char 5:1", st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
}

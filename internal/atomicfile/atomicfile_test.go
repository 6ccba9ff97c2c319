package atomicfile

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f")
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	for _, c := range []struct {
		data string
		perm os.FileMode
	}{{"one", 0o644}, {"two, longer", 0o600}} {
		if err := Write(path, []byte(c.data), c.perm); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		st, serr := os.Stat(path)
		if err != nil || serr != nil || string(b) != c.data || st.Mode().Perm() != c.perm {
			t.Errorf("after Write(%q, %v): %q mode %v (%v, %v)", c.data, c.perm, b, st.Mode(), err, serr)
		}
	}
	// A failed write leaves the old file and no temporary one.
	if err := Write(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); err == nil {
		t.Error("write into a missing directory succeeded")
	}
	if err := Write(dir, []byte("x"), 0o600); err == nil {
		t.Error("replacing a directory succeeded")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "f" {
		t.Errorf("directory holds %v, want f alone", ents)
	}
}
